"""What the Stable Diffusion based generators share: settings checks, dtype, tiny pipelines.

GLIGEN, MultiDiffusion, MIGC and InstanceDiffusion all run on Stable Diffusion 1.x; the tiny
profile builds one random SD pipeline from configs and loads it through each method's own
loader, so the real loading code runs in tests.
"""

from __future__ import annotations

import tempfile
from typing import Any

from eligen_bench.api.generator import Generator
from eligen_bench.errors import InputError

TINY_MODEL_ID = "tiny-random (built from configs at load time)"

def check_sd_settings(settings: dict[str, Any], name: str) -> None:
    """Steps, guidance and image size of a Stable Diffusion run; InputError naming the field."""
    where = f"generator {name!r}"
    steps = settings["steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"must be a positive integer, got {steps!r}", where=where, field="steps")
    scale = settings["guidance_scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise InputError(f"must be a number, got {scale!r}", where=where, field="guidance_scale")
    for key in ("width", "height"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 8 or value % 8:
            raise InputError(f"must be a positive multiple of 8, got {value!r}", where=where, field=key)
    if settings["dtype"] not in ("auto", "float16", "bfloat16", "float32"):
        raise InputError(
            f"must be auto, float16, bfloat16 or float32, got {settings['dtype']!r}", where=where, field="dtype"
        )


def check_fractions(settings: dict[str, Any], name: str, *keys: str) -> None:
    """Each of `keys` is a number in [0, 1] (a grounding or sampling fraction); InputError naming it."""
    for key in keys:
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise InputError(f"must be a number in [0, 1], got {value!r}", where=f"generator {name!r}", field=key)


def resolve_dtype(name: str, device: str) -> Any:
    """`auto` is float16 on CUDA (as the reference code runs) and float32 elsewhere."""
    import torch

    if name == "auto":
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    return getattr(torch, name)


def _open_gates(unet: Any) -> None:
    """GLIGEN's gates start at tanh(0) = 0 (grounding off until trained); open them so the
    tiny model's boxes and phrases do reach the image, as in a trained checkpoint."""
    import torch
    from diffusers.models.attention import GatedSelfAttentionDense

    with torch.no_grad():
        for module in unet.modules():
            if isinstance(module, GatedSelfAttentionDense):
                module.alpha_attn.fill_(1.0)
                module.alpha_dense.fill_(1.0)


def load_sd_source(generator: Generator, loader: Any, dtype: Any, *, gated: bool) -> Any:
    """`loader(source, revision, dtype)` on the configured model, or, for the tiny profile, on a
    tiny random pipeline built, saved and read back through that same loader."""
    if generator.profile != "tiny":
        return loader(generator.settings["model"], generator.settings["revision"], dtype)
    with tempfile.TemporaryDirectory(prefix=f"{generator.name}-tiny-") as tmp:
        build_tiny_sd_pipeline(tmp, gated=gated)
        return loader(tmp, None, dtype)


def build_tiny_sd_pipeline(directory: str, *, gated: bool, seed: int = 0) -> None:
    """Save a tiny random Stable Diffusion pipeline (GLIGEN's when `gated`) to `directory`.

    Same architecture families and file layout as the real checkpoints (UNet, 4-channel VAE
    with an 8x downsampling, CLIP text encoder, real CLIP tokenizer, SD 1.x PNDM scheduler
    config), so loading it exercises the real loaders. Seeded: the same weights every time.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionGLIGENPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from eligen_bench.tiny import clip_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            norm_num_groups=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            attention_type="gated" if gated else "default",
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(8, 8, 8, 8),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1,
            norm_num_groups=4,
            latent_channels=4,
            sample_size=64,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=32,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                max_position_embeddings=77,
                projection_dim=32,
                bos_token_id=49406,
                eos_token_id=49407,
                pad_token_id=49407,
            )
        )
    if gated:
        _open_gates(unet)
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )
    cls = StableDiffusionGLIGENPipeline if gated else StableDiffusionPipeline
    pipe = cls(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory)
