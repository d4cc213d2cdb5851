"""A seeded random tiny Qwen-Image pipeline (same classes as Qwen/Qwen-Image), built from configs.

The transformer keeps Qwen-Image's layout where DiffSynth hard-codes it (16 latent channels,
2x2 patches, so ``in_channels=64``) and shrinks the rest: 2 blocks, 2 heads of 16 dims
(RoPE axes 4 + 6 + 6), text width 32. The text encoder is a 2-layer Qwen2.5-VL with a tiny
vision tower; the VAE is diffusers' `AutoencoderKLQwenImage` with base width 4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_TRANSFORMER = dict(
    patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16,
    num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(4, 6, 6),
)  # fmt: skip
"""`QwenImageTransformer2DModel` config of the tiny profile."""


# Qwen-Image's VAE latent statistics (modelscope/DiffSynth-Studio@afd101f,
# diffsynth/models/qwen_image_vae.py, `QwenImageVAE.__init__`), so the tiny profile denormalises as the real one
LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
               3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]


def tiny_text_encoder(vocab_size: int) -> Any:
    """A random 2-layer Qwen2.5-VL (hidden 32) with a 1-layer vision tower."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=8192,
        rope_theta=1000000.0,
        rope_scaling={"mrope_section": [2, 3, 3], "rope_type": "default", "type": "default"},
    )  # fmt: skip
    vision = dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=32)
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, vocab_size=vocab_size, hidden_size=32)
    return Qwen2_5_VLForConditionalGeneration(config)


def build_tiny_qwen_image(directory: Path, seed: int = 0) -> Path:
    """Write a seeded random tiny `QwenImagePipeline` to `directory` (save_pretrained layout)."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    from eligen_bench.tiny import qwen_tokenizer

    tokenizer = qwen_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = QwenImageTransformer2DModel(**TINY_TRANSFORMER)
        text_encoder = tiny_text_encoder(len(tokenizer))
        vae = AutoencoderKLQwenImage(
            base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
            temperal_downsample=[False, True, True], latents_mean=LATENTS_MEAN, latents_std=LATENTS_STD,
        )  # fmt: skip
    # Qwen/Qwen-Image's scheduler config; the EliGen sampler computes its own schedule
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192, max_shift=0.9, shift=1.0,
        shift_terminal=0.02, time_shift_type="exponential", use_dynamic_shifting=True,
    )  # fmt: skip
    pipe = QwenImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                             transformer=transformer)
    pipe.save_pretrained(str(directory))
    return directory


def write_tiny_lora(transformer: Any, directory: Path, seed: int = 0) -> Path:
    """Write a seeded random EliGen-style LoRA (DiffSynth naming) for `transformer`; returns the file."""
    from safetensors.torch import save_file

    from eligen_bench.generators.qwen_image.lora import LORA_FILE, random_lora

    cfg = transformer.config
    state = random_lora(cfg.num_layers, cfg.num_attention_heads * cfg.attention_head_dim, seed=seed)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LORA_FILE
    save_file(state, str(path))
    return path
