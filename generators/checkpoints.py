"""Read a pickled checkpoint without running any code it names.

Every `.pth` / `.ckpt` goes through torch's own `weights_only` unpickler, which resolves each
global by its exact `module.name` against an allow-list and never by attribute lookup, so no
dotted name (`_rebuild_tensor.__globals__`), prefix or opcode it does not know reaches code.

Research checkpoints often pickle a training config beside the weights: InstanceDiffusion's
`instancediffusion_sd15.pth` stores `vars(config)` of an OmegaConf config
(frank-xwang/InstanceDiffusion@722900e: utils/checkpoint.py). Plain `weights_only=True` refuses
that file. Here the exact OmegaConf class names (and the few plain names their state holds)
are allowed, each mapped to an inert stand-in that only stores what the file gives it: nothing
is imported from omegaconf, nothing the file names is called. Any other global refuses the file
with one line naming it; `allow_pickle=True` is the explicit opt-out for a file one trusts.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from eligen_bench.errors import InputError


class InertRecord:
    """Stand-in for an object of a class the checkpoint names: keeps its arguments and state."""

    qualname = "?"

    def __new__(cls, *args: Any, **_: Any) -> InertRecord:
        record = object.__new__(cls)
        record.args, record.state = args, None
        return record

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing runs: `__new__` already kept the arguments."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"InertRecord({self.qualname})"


def _standin(qualname: str) -> type[InertRecord]:
    return type(qualname.rsplit(".", 1)[-1], (InertRecord,), {"qualname": qualname})


class TypeName:
    """Stand-in for a type the file names as a value (OmegaConf's `ref_type=typing.Any`, `object_type=dict`)."""

    def __init__(self, qualname: str) -> None:
        self.qualname = qualname

    def __repr__(self) -> str:
        return f"TypeName({self.qualname})"


def _empty_mapping(*_: Any) -> dict[str, Any]:
    """Stand-in for `collections.defaultdict(factory)` (OmegaConf's resolver cache): a plain dict."""
    return {}


OMEGACONF_CLASSES = (
    # omegaconf 2.x class names as they appear in pickles of its containers and nodes.
    "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig",
    "omegaconf.base.Metadata", "omegaconf.base.ContainerMetadata",
    "omegaconf.nodes.AnyNode", "omegaconf.nodes.StringNode", "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode", "omegaconf.nodes.BooleanNode", "omegaconf.nodes.EnumNode",
    "omegaconf.nodes.BytesNode", "omegaconf.nodes.PathNode",
)
TYPE_NAMES = ("typing.Any", "builtins.dict", "builtins.list", "builtins.str", "builtins.int",
              "builtins.float", "builtins.bool", "builtins.object")


def allowed_standins() -> list[tuple[Any, str]]:
    """The exact (stand-in, 'module.name') pairs added to torch's own allow-list."""
    pairs: list[tuple[Any, str]] = [(_standin(name), name) for name in OMEGACONF_CLASSES]
    pairs += [(TypeName(name), name) for name in TYPE_NAMES]
    pairs.append((_empty_mapping, "collections.defaultdict"))
    return pairs


def load_checkpoint(path: str | Path, *, allow_pickle: bool) -> Any:
    """The file's contents: tensors exactly as saved, allowed config objects as inert stand-ins.

    Raises InputError (one line naming the file) for a missing or unreadable file, and for one
    that names any global outside the allow-list. `allow_pickle` unpickles everything, for a
    file one trusts. A `.safetensors` file is read by safetensors (no pickle in that format).
    """
    import torch

    where = f"checkpoint {str(path)!r}"
    if not Path(path).is_file():
        raise InputError("file not found (or not a regular file)", where=where)
    try:
        if Path(path).suffix == ".safetensors":  # tensors and a JSON header only: read as such, never unpickled
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        if allow_pickle:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(allowed_standins()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(_refusal(str(exc)), where=where) from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file fails in many ways; one line for all
        first = (str(exc).strip().splitlines() or [""])[0]
        raise InputError(f"cannot be read: {type(exc).__name__}: {first}", where=where) from None


def _refusal(message: str) -> str:
    """One line out of torch's multi-line refusal, naming the global when it names one."""
    found = re.search(r"GLOBAL (\S+) was not an allowed global", message)
    if found:
        what = f"it names {found.group(1)!r}, which a checkpoint may not (only tensors and OmegaConf configs)"
    else:  # the reason follows torch's "WeightsUnpickler error:" (on its own line or the next)
        tail = message.split("WeightsUnpickler error:", 1)[-1]
        what = next((line.strip() for line in tail.splitlines() if line.strip()), "unsafe content")
        what = f"not a safe checkpoint ({what})"
    return f"refused: {what}; pass allow_pickle=true only for a file you trust"
