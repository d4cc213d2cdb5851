"""A tiny random InstanceDiffusion checkpoint in the released file's format, for the tiny profile.

The tiny UNet is built from a config with our modules, given random weights (gates open, ScaleU
and null features non-zero, so every path acts), and written under the official LDM key names
(the inverse of diffusers' LDM -> diffusers UNet naming) as `{"model": state_dict}` in a .pth
file; the generator then reads it back through the same loader as the released checkpoint.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from eligen_bench.generators.instancediffusion.checkpoint import build_unet
from eligen_bench.generators.instancediffusion.unifusion import UniFusionConfig

TINY_UNET_CONFIG: dict[str, Any] = {
    # The tiny Stable Diffusion UNet of the other SD generators (stable_diffusion.common.build_tiny_sd_pipeline).
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "attention_type": "gated",
}

TINY_UNIFUSION = UniFusionConfig(in_dim=32, out_dim=32, mid_dim=16, convnext_depths=(1, 1, 1, 1),
                                 convnext_dims=(4, 4, 4, 8), seg_resize=128)
"""in_dim: the tiny CLIP's hidden size (phrase features); out_dim: the UNet's cross-attention dim;
masks resized to 128 (4 mask tokens) instead of 512 (64) to keep the tiny model fast."""

_RESNET_NAMES = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                 ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))
_TOP_NAMES = (("conv_in.", "input_blocks.0.0."), ("time_embedding.linear_1.", "time_embed.0."),
              ("time_embedding.linear_2.", "time_embed.2."), ("conv_norm_out.", "out.0."),
              ("conv_out.", "out.2."))


def ldm_key(key: str, config: dict[str, Any]) -> str:
    """The official (LDM) name of a diffusers UNet key of our model."""
    per_down = config["layers_per_block"] + 1
    per_up = config["layers_per_block"] + 1  # L + 1 resnets per up block
    if key.startswith("position_net."):
        return key
    if key.startswith("scaleu."):
        return "scaleu_" + key[len("scaleu."):]
    for new, old in _TOP_NAMES:
        if key.startswith(new):
            return old + key[len(new):]
    if m := re.match(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        b, j = int(m[2]), int(m[3])
        block = f"input_blocks.{1 + b * per_down + j}" if m[1] == "down" else f"output_blocks.{b * per_up + j}"
        return f"{block}.0.{_resnet_name(m[4])}"
    if m := re.match(r"(down|up)_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        b, j = int(m[2]), int(m[3])
        block = f"input_blocks.{1 + b * per_down + j}" if m[1] == "down" else f"output_blocks.{b * per_up + j}"
        return f"{block}.1.{m[4]}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * per_down}.0.op.{m[2]}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        b = int(m[1])
        has_attention = "CrossAttn" in config["up_block_types"][b]
        return f"output_blocks.{b * per_up + per_up - 1}.{2 if has_attention else 1}.conv.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet_name(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    raise ValueError(f"no LDM name for {key}")


def _resnet_name(rest: str) -> str:
    for new, old in _RESNET_NAMES:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    raise ValueError(f"unknown resnet parameter {rest}")


def build_tiny_model(seed: int = 0) -> Any:
    """The tiny random InstanceDiffusion UNet (diffusers names), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(TINY_UNET_CONFIG, TINY_UNIFUSION)
        with torch.no_grad():
            for name, param in unet.named_parameters():
                if name.endswith(("fuser.alpha_attn", "fuser.alpha_dense")):
                    param.fill_(1.0)  # trained gates are open; zero gates would hide the grounding
                elif name.startswith("scaleu.") or ".null_" in name or name.endswith("pos_embedding"):
                    param.normal_(0.0, 0.5)
    return unet


def write_tiny_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny checkpoint as the released file is laid out: {"model": {LDM key: tensor}}."""
    unet = build_tiny_model(seed)
    state = {ldm_key(k, TINY_UNET_CONFIG): v.detach().clone() for k, v in unet.state_dict().items()}
    path = Path(path)
    torch.save({"model": state}, path)
    return path
