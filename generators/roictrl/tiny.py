"""A tiny random Stable Diffusion pipeline and ROICtrl checkpoint, for the tiny profile and tests.

The UNet has cross-attention at two resolutions, so the adapter runs at two downsampling
rates (8 and 16 at 64x64: ROI sizes 25 and 19); the checkpoint holds random adapter weights
with every gate open (the released adapter's tanh gates are trained away from 0), written as
the released file is (UNet-path keys in a .safetensors), and is read back through the same
loader as the real one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (16, 32),
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 2,
}

TINY_CHECKPOINT = "roictrl_tiny.safetensors"
GATE_VALUE = 0.5
"""tanh(0.5) = 0.46: every learned branch of the tiny adapter contributes."""


def build_tiny_pipeline(directory: str | Path, seed: int = 0) -> Path:
    """A tiny random SD pipeline at `directory` (the UNet of TINY_UNET_CONFIG) and a tiny ROICtrl
    checkpoint for it; returns the checkpoint's path."""
    import torch
    from diffusers import UNet2DConditionModel

    from eligen_bench.generators.stable_diffusion.common import build_tiny_sd_pipeline

    directory = Path(directory)
    build_tiny_sd_pipeline(str(directory), gated=False, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    unet.save_pretrained(directory / "unet")
    return write_tiny_checkpoint(unet, directory / TINY_CHECKPOINT, seed)


def write_tiny_checkpoint(unet: Any, path: str | Path, seed: int = 0) -> Path:
    """Random adapter weights for `unet` (left unchanged) in the released format at `path`."""
    import copy

    import torch
    from safetensors.torch import save_file

    from eligen_bench.generators.roictrl.adapter import adapter_keys, install_adapter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        model = copy.deepcopy(unet)
        install_adapter(model)
        state = model.state_dict()
        tensors = {}
        for key in adapter_keys(model):
            value = state[key].detach().clone().float()
            if key.rsplit(".", 1)[-1].startswith("alpha_"):
                value.fill_(GATE_VALUE)
            elif value.dim() == 1 or key.endswith("null_position_feature"):
                value.normal_(0.0 if "bias" in key or "null" in key else 1.0, 0.2)  # norms and biases off their init
            tensors[key] = value.contiguous()
    path = Path(path)
    save_file(tensors, str(path))
    return path
