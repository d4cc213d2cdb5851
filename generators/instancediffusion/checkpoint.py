"""The released InstanceDiffusion checkpoint, unchanged, as a diffusers UNet.

`instancediffusion_sd15.pth` (hub `xudongw/InstanceDiffusion`) is a torch pickle whose `model`
(and `ema`, when present) entry is the state dict of the reference `UNetModel`
(frank-xwang/InstanceDiffusion@722900e, ldm/modules/diffusionmodules/openaimodel.py, built from
configs/test_mask.yaml): LDM key names for the Stable Diffusion 1.5 UNet with a gated
self-attention `fuser` in every transformer block, `position_net.*` (UniFusion) and
`scaleu_b_{i}` / `scaleu_s_{i}`. The Stable Diffusion part (fusers included: they sit inside
the transformer blocks, whose names the conversion carries over) goes through diffusers' own
LDM -> diffusers UNet conversion; `position_net.*` keeps its names on our `UniFusion`, and
`scaleu_{b,s}_{i}` becomes `scaleu.{b,s}_{i}`. Every key of the file must land on a parameter
of the model and every parameter must be given, with equal shapes, or loading stops with one
line naming the keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from eligen_bench.errors import InputError
from eligen_bench.generators.instancediffusion.scaleu import (
    ScaleU,
    decoder_main_channels,
    install_scaleu,
)
from eligen_bench.generators.instancediffusion.unifusion import UniFusion, UniFusionConfig

SD15_UNET_CONFIG: dict[str, Any] = {
    # configs/test_mask.yaml@722900e, `model.params`: image_size 64, in/out channels 4,
    # model_channels 320, channel_mult [1, 2, 4, 4], attention_resolutions [4, 2, 1],
    # num_res_blocks 2, num_heads 8, transformer_depth 1, context_dim 768, fuser_type gatedSA.
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "attention_type": "gated",
}

POSITION_NET = "position_net."
SCALEU = "scaleu_"
LDM_PREFIX = "model.diffusion_model."


def read_checkpoint(path: str | Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """The UNet state dict of a checkpoint file: its `ema` entry when complete, else `model`
    (the reference's `load_model_ckpt` tries `ema` first, utils/checkpoint.py@722900e)."""
    from eligen_bench.generators.checkpoints import load_checkpoint

    where = f"checkpoint {str(path)!r}"
    raw = load_checkpoint(path, allow_pickle=allow_pickle)  # InputError naming the file
    if not isinstance(raw, dict):
        raise InputError("is not a dict", where=where)
    for entry in ("ema", "model"):
        state = raw.get(entry)
        if isinstance(state, dict) and any(k.startswith(POSITION_NET) for k in state):
            return state
    if any(isinstance(k, str) and k.startswith(POSITION_NET) for k in raw):
        return raw
    raise InputError("has no InstanceDiffusion UNet state dict (no 'model' entry with position_net.* keys)",
                     where=where)


def build_unet(unet_config: dict[str, Any], unifusion: UniFusionConfig) -> Any:
    """The diffusers UNet with gated fusers, our UniFusion as `position_net`, and ScaleU hooked in."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config({**unet_config, "attention_type": "gated"})
    unet.position_net = UniFusion(unifusion)
    install_scaleu(unet, ScaleU(decoder_main_channels(unet)))
    return unet


def convert_state_dict(state: dict[str, torch.Tensor], unet_config: dict[str, Any]) -> tuple[dict, list[str]]:
    """Official key -> diffusers key for every tensor; returns the converted dict and the official
    keys that no conversion rule took (unexpected)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    sd_part = {k: v for k, v in state.items() if not k.startswith((POSITION_NET, SCALEU))}
    try:
        converted = convert_ldm_unet_checkpoint({LDM_PREFIX + k: v for k, v in sd_part.items()},
                                                dict(unet_config))
    except KeyError as exc:
        raise InputError(f"is missing key {exc.args[0]!r} of the Stable Diffusion UNet",
                         where="InstanceDiffusion checkpoint") from None
    # The conversion copies tensors by reference: what it did not take is unexpected.
    taken = {id(v) for v in converted.values()}
    unexpected = [k for k, v in sd_part.items() if id(v) not in taken]
    for key, value in state.items():
        if key.startswith(POSITION_NET):
            converted[key] = value
        elif key.startswith(SCALEU):
            converted["scaleu." + key[len(SCALEU):]] = value
    return converted, unexpected


def check_keys(converted: dict[str, torch.Tensor], unexpected: list[str], model_state: dict[str, Any],
               where: str) -> None:
    """One InputError line naming missing, unexpected and wrongly shaped keys, if any."""
    missing = sorted(set(model_state) - set(converted))
    unexpected = sorted(set(unexpected) | (set(converted) - set(model_state)))
    shapes = sorted(f"{k} {tuple(converted[k].shape)} vs {tuple(model_state[k].shape)}"
                    for k in set(converted) & set(model_state)
                    if tuple(converted[k].shape) != tuple(model_state[k].shape))
    problems = [f"{len(items)} {label} ({', '.join(items[:5])}{', ...' if len(items) > 5 else ''})"
                for label, items in (("missing", missing), ("unexpected", unexpected),
                                     ("with another shape", shapes)) if items]
    if problems:
        raise InputError("does not match the InstanceDiffusion UNet: " + "; ".join(problems), where=where)


def load_unet(path: str | Path, unet_config: dict[str, Any], allow_pickle: bool) -> Any:
    """The InstanceDiffusion UNet with every weight from the checkpoint file (float32, CPU)."""
    from accelerate import init_empty_weights

    state = read_checkpoint(path, allow_pickle)
    where = f"checkpoint {str(path)!r}"
    if f"{POSITION_NET}linears_list.0.0.weight" not in state:
        raise InputError("has no position_net.linears_list.0.0.weight (not an InstanceDiffusion UNet)", where=where)
    with init_empty_weights():
        unet = build_unet(unet_config, UniFusionConfig.from_state_dict(state))
    converted, unexpected = convert_state_dict(state, unet_config)
    check_keys(converted, unexpected, unet.state_dict(), where)
    unet.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True, assign=True)
    return unet.eval()
