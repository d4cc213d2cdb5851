"""Where diffusers' Qwen-Image transformer computes otherwise than DiffSynth-Studio's `QwenImageDiT`,
the modules that compute as DiffSynth does (the code the EliGen LoRAs were trained with).

modelscope/DiffSynth-Studio@afd101f (v1.1.9), diffsynth/models/qwen_image_dit.py:

* Feed-forward activation: `QwenFeedForward` uses `ApproximateGELU`, ``x * sigmoid(1.702 x)``;
  diffusers' `FeedForward(activation_fn="gelu-approximate")` uses the tanh approximation. The
  two differ by up to ~0.02 per activation.
* Timestep embedding: `TimestepEmbeddings(256, 3072, ..., scale=1000, align_dtype_to_timestep=True)`
  rounds the sinusoid frequencies ``exp(-ln(10000) k / 128)`` to the timestep's dtype (bfloat16
  at the model's dtype) before multiplying (diffsynth/models/svd_unet.py, `get_timestep_embedding`);
  diffusers' `Timesteps` keeps them in float32. In float32 the two are the same.

* VAE RMS norm (diffsynth/models/qwen_image_vae.py, `RMS_norm`): ``F.normalize`` in the input's
  dtype; diffusers' `QwenImageRMS_norm` normalises bfloat16 inputs in float32. In bfloat16 this
  moves decoded pixels by up to tens of levels (measured on the tiny VAE); in float32 the two agree.

Every other piece of the transformer matches: the RMS and layer norms, the modulation chunk order, the output
AdaLN (scale, shift), the joint [text; image] attention and the RoPE tables. The module
parameters keep diffusers' names (``img_mlp.net.0.proj``), so checkpoints load unchanged.

This module imports torch at import time: only the Qwen-Image EliGen plugin's `load` imports it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

GELU_SIGMOID_SCALE = 1.702
"""`ApproximateGELU.forward`: ``x * torch.sigmoid(1.702 * x)``."""


class SigmoidGELU(nn.Module):
    """DiffSynth's `ApproximateGELU`: a Linear, then ``x * sigmoid(1.702 x)``."""

    def __init__(self, proj: nn.Linear):
        super().__init__()
        self.proj = proj

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.proj(hidden_states)
        return x * torch.sigmoid(GELU_SIGMOID_SCALE * x)


def timestep_embedding(timesteps: torch.Tensor, channels: int = 256, scale: float = 1000.0) -> torch.Tensor:
    """DiffSynth's sinusoidal embedding with ``align_dtype_to_timestep=True`` (cos first).

    The frequencies are computed in float32, rounded to the timestep's dtype, then multiplied
    by the timestep in float32 and by `scale` (flip_sin_to_cos=True, downscale_freq_shift=0).
    """
    half = channels // 2
    exponent = -math.log(10000) * torch.arange(0, half, dtype=torch.float32, device=timesteps.device) / half
    freqs = torch.exp(exponent).to(timesteps.dtype)
    angles = scale * (timesteps[:, None].float() * freqs[None, :])
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class DiffSynthTimesteps(nn.Module):
    """Drop-in for diffusers' `Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0, scale=1000)`."""

    def __init__(self, channels: int = 256, scale: float = 1000.0):
        super().__init__()
        self.channels = channels
        self.scale = scale

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return timestep_embedding(timesteps, self.channels, self.scale)


def follow_diffsynth(transformer: Any) -> list[str]:
    """Swap the feed-forward activations and the timestep projection of a diffusers
    `QwenImageTransformer2DModel` for DiffSynth's (idempotent); returns what changed."""
    changed: list[str] = []
    for index, block in enumerate(transformer.transformer_blocks):
        for name in ("img_mlp", "txt_mlp"):
            net = getattr(block, name).net
            if not isinstance(net[0], SigmoidGELU):
                net[0] = SigmoidGELU(net[0].proj)
                changed.append(f"transformer_blocks.{index}.{name}.net.0")
    time_proj = transformer.time_text_embed.time_proj
    if not isinstance(time_proj, DiffSynthTimesteps):
        if int(time_proj.num_channels) != 256 or float(time_proj.scale) != 1000.0:
            raise ValueError("unexpected Qwen-Image timestep projection (expected 256 channels, scale 1000)")
        transformer.time_text_embed.time_proj = DiffSynthTimesteps(256, 1000.0)
        changed.append("time_text_embed.time_proj")
    return changed


class InputDtypeRMSNorm(nn.Module):
    """DiffSynth's VAE `RMS_norm`: ``normalize(x) * sqrt(dim) * gamma + bias`` in x's dtype.

    Holds the replaced module's parameters under the same names (``gamma``, ``bias``)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.channel_first = norm.channel_first
        self.scale = norm.scale
        self.gamma = norm.gamma
        self.bias = norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = torch.nn.functional.normalize(x, dim=1 if self.channel_first else -1)
        return normed * self.scale * self.gamma + self.bias


def follow_diffsynth_vae(vae: Any) -> list[str]:
    """Swap every `QwenImageRMS_norm` of diffusers' `AutoencoderKLQwenImage` for DiffSynth's
    (idempotent); returns the modules replaced."""
    from diffusers.models.autoencoders.autoencoder_kl_qwenimage import QwenImageRMS_norm

    replaced = []
    for name, module in list(vae.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, QwenImageRMS_norm):
                setattr(module, child_name, InputDtypeRMSNorm(child))
                replaced.append(f"{name}.{child_name}" if name else child_name)
    return replaced
