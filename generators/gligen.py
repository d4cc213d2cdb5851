"""GLIGEN (Li et al., CVPR 2023): grounded text-to-image generation with gated self-attention.

Runs the diffusers `StableDiffusionGLIGENPipeline` with the text-box generation checkpoint
`masterful/gligen-1-4-generation-text-box` (Stable Diffusion 1.4 + GLIGEN gated layers).
Entity prompts are the grounding phrases and entity boxes (normalised xyxy) the grounding
boxes, exactly the pipeline's format. Masks are reduced to their boxes (GLIGEN takes boxes).

Defaults follow the GLIGEN reference inference script (`gligen_inference.py`): 50 steps,
classifier-free guidance 7.5, grounding on for the first 30% of the steps
(`alpha_type=[0.3, 0.0, 0.7]`, the pipeline's `gligen_scheduled_sampling_beta=0.3`), its
negative prompt, 512x512, at most 30 grounding tokens. The sampler is the checkpoint's own
scheduler config (PNDM, the PLMS sampler of the reference code).

Zero entities: the pipeline cannot tokenise an empty phrase list, so the layout's global
prompt is passed as a placeholder phrase over the whole canvas and grounding is switched off
from the first step (`gligen_scheduled_sampling_beta=0`): the gated layers never run, and the
image is plain Stable Diffusion 1.4 (the checkpoint's frozen base weights) through the same
pipeline, scheduler and seed handling.

The safety checker is not loaded: it would replace flagged images by black ones and bias the
scores.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from eligen_bench.errors import InputError
from eligen_bench.generators.base import (
    Capabilities,
    GenerationRequest,
    Generator,
    entity_boxes,
    entity_prompts,
    release_cuda_memory,
)

if TYPE_CHECKING:
    from PIL import Image

MAX_GROUNDING_TOKENS = 30
"""The pipeline (and the GLIGEN position net) holds at most 30 grounding tokens."""

REFERENCE_NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, "
    "cropped, worst quality, low quality"
)
"""`--negative_prompt` default of the GLIGEN reference inference script."""

TINY_MODEL_ID = "tiny-random (built from configs at load time)"


class GligenGenerator(Generator):
    """GLIGEN text-box generation through diffusers, one pipeline call per request."""

    name = "gligen"
    description = "GLIGEN (SD 1.4 + gated self-attention), diffusers text-box generation pipeline"
    capabilities = Capabilities(
        boxes=True, masks=False, inpainting=False, max_entities=MAX_GROUNDING_TOKENS, resolution=(512, 512)
    )
    defaults = {
        "model": "masterful/gligen-1-4-generation-text-box",
        "revision": None,
        "steps": 50,
        "guidance_scale": 7.5,
        "gligen_scheduled_sampling_beta": 0.3,
        "negative_prompt": REFERENCE_NEGATIVE_PROMPT,
        "width": 512,
        "height": 512,
        "dtype": "auto",
    }

    def __init__(self, profile: str = "full", device: str | None = None, **options: Any):
        super().__init__(profile, device, **options)
        check_sd_settings(self.settings, self.name)
        beta = self.settings["gligen_scheduled_sampling_beta"]
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
            raise InputError(
                f"must be a number in [0, 1], got {beta!r}",
                where=f"generator {self.name!r}",
                field="gligen_scheduled_sampling_beta",
            )
        self._pipe: Any = None

    def profile_overrides(self) -> dict[str, Any]:
        if self.profile != "tiny":
            return {}
        # int(0.3 * 2) = 0 grounded steps would leave grounding untested: 0.5 grounds step 1 of 2.
        return {"steps": 2, "width": 64, "height": 64, "gligen_scheduled_sampling_beta": 0.5}

    def model_ids(self) -> dict[str, str]:
        if self.profile == "tiny":
            return {"pipeline": TINY_MODEL_ID}
        return {"pipeline": f"{self.settings['model']}@{self.settings['revision'] or 'main'}"}

    def load(self) -> None:
        device = self.resolve_device()
        dtype = resolve_dtype(self.settings["dtype"], device)
        pipe = load_sd_source(self, _load_pipeline, dtype, gated=True)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe.to(device)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Image.Image]:
        """One pipeline call per request: grounding phrases are shared by a whole pipeline
        batch, and per-request noise keeps images independent of how requests are batched."""
        self.ensure_loaded()
        return [self._generate_one(request) for request in requests]

    def _generate_one(self, request: GenerationRequest) -> Image.Image:
        import torch

        layout = request.layout
        if len(layout.entities) > MAX_GROUNDING_TOKENS:
            raise InputError(
                f"{len(layout.entities)} entities, but {self.name} supports at most {MAX_GROUNDING_TOKENS}",
                where=f"layout {layout.id!r}",
                field="entities",
            )
        settings = self.settings
        phrases = entity_prompts(layout)
        boxes = [list(box) for box in entity_boxes(layout)]
        beta = float(settings["gligen_scheduled_sampling_beta"])
        if not phrases:
            # Placeholder grounding that never acts: beta 0 turns the gated layers off before step 1.
            phrases, boxes, beta = [layout.prompt], [[0.0, 0.0, 1.0, 1.0]], 0.0
        generator = torch.Generator("cpu").manual_seed(request.seed)
        latents = initial_latents(self._pipe, settings["height"], settings["width"], generator)
        result = self._pipe(
            prompt=layout.prompt,
            negative_prompt=settings["negative_prompt"] or None,
            gligen_phrases=phrases,
            gligen_boxes=boxes,
            gligen_scheduled_sampling_beta=beta,
            num_inference_steps=settings["steps"],
            guidance_scale=settings["guidance_scale"],
            height=settings["height"],
            width=settings["width"],
            latents=latents,
            generator=generator,
            output_type="pil",
        )
        return result.images[0]

    def close(self) -> None:
        self._pipe = None
        self._loaded = False
        release_cuda_memory()


def _load_pipeline(source: str, revision: str | None, dtype: Any) -> Any:
    """The GLIGEN pipeline from a hub id or a local directory, without the safety checker."""
    from diffusers import StableDiffusionGLIGENPipeline

    return StableDiffusionGLIGENPipeline.from_pretrained(
        source,
        revision=revision,
        torch_dtype=dtype,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def initial_latents(pipe: Any, height: int, width: int, generator: Any) -> Any:
    """Starting noise drawn on the CPU from the request's own generator (device independent)."""
    import torch

    factor = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, height // factor, width // factor)
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    return noise.to(device=pipe.unet.device, dtype=pipe.unet.dtype)


# ---- shared by the Stable Diffusion based generators ---------------------------------------


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
