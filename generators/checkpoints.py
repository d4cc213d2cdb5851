"""Read the tensors of a pickled checkpoint without running any code it names.

Research checkpoints often pickle a training config beside the weights (InstanceDiffusion's
`instancediffusion_sd15.pth` stores `vars(OmegaConf config)`, utils/checkpoint.py@722900e).
`torch.load(weights_only=True)` refuses such files, and `weights_only=False` would import and
call whatever the file names. This unpickler rebuilds tensors with torch's own functions and
turns every other global into an inert `Opaque` record: nothing is imported or called, and the
tensors come out exactly as saved.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

# Globals a state dict needs: torch's tensor/parameter rebuilders, OrderedDict, dtypes, sizes.
_TORCH_REBUILDERS = ("torch._utils", "torch._tensor")
_PLAIN = {("collections", "OrderedDict"), ("torch", "Size"), ("torch", "device"),
          ("torch.nn.parameter", "Parameter")}


class Opaque:
    """Stand-in for an object of a class the checkpoint names; keeps its arguments and state, runs nothing."""

    __slots__ = ("qualname", "args", "state")

    def __init__(self, qualname: str, args: tuple[Any, ...] = ()) -> None:
        self.qualname, self.args, self.state = qualname, args, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **_: Any) -> Opaque:
        # A global reached through another (e.g. `getattr(cls, name)`) is an Opaque that gets called.
        return Opaque(f"{self.qualname}()", args)

    def __repr__(self) -> str:
        return f"Opaque({self.qualname})"


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        import torch

        if module in _TORCH_REBUILDERS and name.startswith("_rebuild"):
            return super().find_class(module, name)
        if (module, name) in _PLAIN:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return _opaque_class(f"{module}.{name}")


def _opaque_class(qualname: str) -> type:
    """A fresh class per global, so NEWOBJ (`cls.__new__(cls)`) and REDUCE both give inert objects."""

    def new(cls: type, *args: Any, **_: Any) -> Opaque:
        return Opaque(qualname, args)

    return type("OpaqueGlobal", (), {"__new__": new, "qualname": qualname})


class _Module:
    """What `torch.load(pickle_module=...)` needs of a pickle module."""

    __name__ = "eligen_bench_tensor_pickle"
    Unpickler = _Unpickler
    load = staticmethod(lambda file, **kwargs: _Unpickler(file, **kwargs).load())


def load_tensors_only(path: str | Path) -> Any:
    """The checkpoint's contents with tensors rebuilt and every other object an inert `Opaque`."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_Module)


def load_checkpoint(path: str | Path, *, allow_pickle: bool) -> Any:
    """torch's safe `weights_only` load; a file it refuses (a pickled config beside the weights)
    is read by `load_tensors_only`. `allow_pickle` unpickles everything, for a file one trusts.
    A `.safetensors` file holds tensors and a JSON header only: read as such, never unpickled."""
    import torch

    if Path(path).suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if allow_pickle:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return load_tensors_only(path)
