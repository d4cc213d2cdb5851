"""Reading the released ROICtrl checkpoint (`ROICtrl_sdv14_30K.safetensors`) unchanged.

The file (hub `guyuchao/ROICtrl`) holds the adapter's parameters under their UNet paths, the
reference's filter `'roifuser' in k or 'position_net' in k` over its UNet's state dict
(guyuchao/TestRepo@e26d1d5: inference_roictrl.py `setup_pipeline`): `position_net.*` and
`<block>.attentions.<i>.transformer_blocks.0.roifuser.*` for every transformer block of
the SD 1.x UNet. The reference loads it with `unet.load_state_dict(..., strict=False)`, which
would pass over a missing or misnamed key in silence; here the file must hold exactly the
adapter's parameters with their shapes, or loading stops with one line naming the missing,
unexpected and misshapen keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eligen_bench.errors import InputError

FIELD = "checkpoint"


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """The tensors of a `.safetensors` file (read through the project's checkpoint reader)."""
    from eligen_bench.generators.checkpoints import load_checkpoint

    path = Path(path)
    where = f"checkpoint {str(path)!r}"
    if not path.is_file():
        raise InputError("no such file", where=where, field=FIELD)
    if path.suffix != ".safetensors":
        raise InputError("is not a .safetensors file (the released ROICtrl checkpoint is one)", where=where,
                         field=FIELD)
    try:
        state = load_checkpoint(path, allow_pickle=False)
    except InputError as exc:  # the reader's one line, placed on this option
        raise InputError(exc.message, where=where, field=FIELD) from None
    return dict(state)


def check_keys(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, Any], where: str) -> None:
    """The file's tensors are exactly the adapter's parameters, with their shapes."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} {tuple(state[k].shape)} != {expected[k]}"
                    for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    problems = [f"{label} {_few(items)}" for label, items in
                (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes)) if items]
    if problems:
        raise InputError("; ".join(problems), where=where, field=FIELD)


def load_adapter(unet: Any, state: Mapping[str, Any], where: str) -> None:
    """Copy the file's tensors into the UNet's adapter (installed by `adapter.install_adapter`),
    converted to the UNet's dtype as `load_state_dict` does, after checking every key and shape."""
    from eligen_bench.generators.roictrl.adapter import adapter_keys

    check_keys(adapter_keys(unet), state, where)
    result = unet.load_state_dict(dict(state), strict=False)
    if result.unexpected_keys:  # cannot happen after check_keys; kept as a guard on diffusers' naming
        raise InputError(f"unexpected keys {_few(sorted(result.unexpected_keys))}", where=where, field=FIELD)


def _few(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', ... ({len(items)} in all)' if len(items) > limit else ''}]"
