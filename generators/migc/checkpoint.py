"""Reading the released MIGC checkpoint (`MIGC_SD14.ckpt`) unchanged.

The file holds `{"state_dict": {...}}` with LDM-style names, e.g.
`model.diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.migc.ea.to_q.weight`.
As the reference loader (`load_migc`, limuloo/MIGC@effd6cc `migc/migc_utils.py`) does, a key
is placed by its block kind (`input_blocks` / `middle_block` / `output_blocks`) and block
index, and its parameter name is everything from the `migc` segment on. The layers are the
ones the file holds (read from its keys, not assumed), and every layer must match the
controller's parameter names and shapes exactly: otherwise one line names the missing,
unexpected and misshapen keys.

LDM block index -> diffusers attention (per resolution level `layers_per_block` resnets,
plus a down/upsampler in the input blocks; the reference hard-codes SD's 2):
  input_blocks.k  -> down_blocks.{k // (L+1)}.attentions.{k % (L+1) - 1}
  middle_block.*  -> mid_block.attentions.0
  output_blocks.k -> up_blocks.{k // (L+1)}.attentions.{k % (L+1)}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eligen_bench.errors import InputError

FIELD = "migc_checkpoint"
BLOCK_KINDS = ("input_blocks", "middle_block", "output_blocks")


def read_state_dict(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """The tensors under the file's `state_dict` entry, read by the safe checkpoint reader unless `allow_pickle`."""
    from eligen_bench.generators.checkpoints import load_checkpoint

    data = load_checkpoint(path, allow_pickle=allow_pickle)  # InputError naming the file
    if not isinstance(data, Mapping) or not isinstance(data.get("state_dict"), Mapping):
        raise InputError(f"{path} has no 'state_dict' entry (not a MIGC checkpoint)", field=FIELD)
    return dict(data["state_dict"])


def attention_path(key: str, layers_per_block: int) -> tuple[str, str]:
    """LDM key -> (diffusers path of the transformer block's attn2, controller parameter name)."""
    parts = key.split(".")
    if "migc" not in parts:
        raise KeyError(key)
    kinds = [i for i, p in enumerate(parts) if p in BLOCK_KINDS]
    if not kinds or kinds[0] + 1 >= len(parts) or not parts[kinds[0] + 1].isdigit():
        raise KeyError(key)
    kind, index = parts[kinds[0]], int(parts[kinds[0] + 1])
    per_level = layers_per_block + 1
    if kind == "input_blocks":
        block = f"down_blocks.{index // per_level}.attentions.{index % per_level - 1}"
    elif kind == "middle_block":
        block = "mid_block.attentions.0"
    else:
        block = f"up_blocks.{index // per_level}.attentions.{index % per_level}"
    name = ".".join(parts[parts.index("migc") + 1:])
    return f"{block}.transformer_blocks.0.attn2", name


def group_layers(state_dict: Mapping[str, Any], layers_per_block: int, where: str) -> dict[str, dict[str, Any]]:
    """{diffusers attn2 path: {controller parameter: tensor}}; keys that fit no layer are named."""
    layers: dict[str, dict[str, Any]] = {}
    stray = []
    for key, value in state_dict.items():
        try:
            path, name = attention_path(key, layers_per_block)
        except KeyError:
            stray.append(key)
            continue
        layers.setdefault(path, {})[name] = value
    if stray or not layers:
        raise InputError(f"unexpected keys (not MIGC layer parameters): {_few(stray)}" if stray
                         else "no MIGC layer parameters", where=where, field=FIELD)
    return layers


def controller_dims(params: Mapping[str, Any], layer: str, where: str) -> dict[str, int]:
    """Widths of a layer's controller, read from its tensors' shapes."""
    needed = {
        "norm.bias": "channels",
        "ea.to_k.weight": "context_dim",
        "pos_net.linears_position.0.weight": "box_hidden",
        "sac.cbam2.ChannelGate.mlp.1.weight": "slots",
    }
    missing = [k for k in needed if k not in params]
    if missing:
        raise InputError(f"layer {layer}: missing keys {_few(missing)}", where=where, field=FIELD)
    return {
        "channels": int(params["norm.bias"].shape[0]),
        "context_dim": int(params["ea.to_k.weight"].shape[1]),
        "box_hidden": int(params["pos_net.linears_position.0.weight"].shape[0]),
        "fourier_dim": int(params["pos_net.linears_position.0.weight"].shape[1]),
        "slots": int(params["sac.cbam2.ChannelGate.mlp.1.weight"].shape[0]),
    }


def check_layer(expected: Mapping[str, tuple[int, ...]], params: Mapping[str, Any], layer: str, where: str) -> None:
    """The layer's tensors are exactly the controller's parameters, with their shapes."""
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    shapes = sorted(f"{k} {tuple(params[k].shape)} != {expected[k]}"
                    for k in set(expected) & set(params) if tuple(params[k].shape) != expected[k])
    problems = [f"{label} {_few(items)}" for label, items in
                (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes)) if items]
    if problems:
        raise InputError(f"layer {layer}: " + "; ".join(problems), where=where, field=FIELD)


def build_controllers(state_dict: Mapping[str, Any], unet: Any, where: str) -> dict[str, Any]:
    """{attn2 path: MIGCLayer holding the file's tensors}, checked against the UNet's layers."""
    import torch

    from eligen_bench.generators.migc.controller import MIGCLayer

    modules = dict(unet.named_modules())
    layers = group_layers(state_dict, int(unet.config.layers_per_block), where)
    controllers = {}
    for path, params in sorted(layers.items()):
        dims = controller_dims(params, path, where)
        attn = modules.get(path)
        if attn is None:
            raise InputError(f"layer {path}: the UNet has no such cross-attention", where=where, field=FIELD)
        if (attn.to_q.in_features, attn.to_k.in_features) != (dims["channels"], dims["context_dim"]):
            raise InputError(
                f"layer {path}: controller for {dims['channels']} channels / context {dims['context_dim']}, "
                f"the UNet's layer has {attn.to_q.in_features} / {attn.to_k.in_features}", where=where, field=FIELD)
        with torch.device("meta"):
            layer = MIGCLayer(**dims)
        expected = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
        check_layer(expected, params, path, where)
        layer.load_state_dict(dict(params), assign=True)
        controllers[path] = layer.eval()
    return controllers


def _few(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', ... ({len(items)} in all)' if len(items) > limit else ''}]"


def ldm_key(kind: str, index: int, name: str) -> str:
    """The released file's name of controller parameter `name` of LDM block `kind.index`."""
    # The SpatialTransformer is item 1 of an input/output block; the mid block is item 1 itself.
    place = "middle_block.1" if kind == "middle_block" else f"{kind}.{index}.1"
    return f"model.diffusion_model.{place}.transformer_blocks.0.attn2.migc.{name}"
