"""What a worker's numbers depend on beyond its inputs: torch's CPU threads, device, dtype, flags.

CPU kernels split their sums over threads, so one model makes slightly different pixels with
one and with two threads (tiny GLIGEN on CPU: 3 of 8 images differ, by one level in a few
pixels). So every executor makes items with one thread setting, `--threads` (default
`DEFAULT_THREADS`): `stages.generate.make_images` and `stages.score.score_shard` apply it around
each item in whatever process runs them (this one, a Ray actor), and worker subprocesses
(`worker_python`) inherit it through OMP_NUM_THREADS. Each worker records what it ran with
(`record_facts`) in the run's provenance (`manifest.json` `workers`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

DEFAULT_THREADS = 1
"""torch CPU threads of every worker unless `--threads` says otherwise: a fixed number, not the
machine's core count, so a local process, a Ray actor and a Slurm task make the same images."""
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Read by torch's OpenMP and MKL when torch is imported (here later, or in a worker subprocess)."""


@contextmanager
def threads(count: int) -> Iterator[None]:
    """Run the block with `count` torch CPU threads. torch is not imported here: when the block
    imports it, it starts with `count` from the environment. The earlier environment is
    restored after, and torch's earlier thread count when torch was imported before the block."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    os.environ.update({name: str(count) for name in THREAD_VARIABLES})
    try:
        if torch is not None and before != count:
            torch.set_num_threads(count)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if torch is not None and before is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)


def torch_facts() -> dict[str, Any]:
    """torch's settings in this process that change numbers (empty when torch is not in use)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "default_dtype": _name(torch.get_default_dtype()),
    }


def plugin_facts(plugin: Any) -> dict[str, Any]:
    """The device and dtype(s) a loaded generator or metric runs with."""
    torch = sys.modules.get("torch")
    device = getattr(plugin, "device", None) or (plugin.resolve_device() if torch is not None else "default")
    dtypes = sorted({_name(d) for d in _dtypes(vars(plugin).values(), torch)}) if torch is not None else []
    return {"device": device, "dtype": ",".join(dtypes) or None}


def _dtypes(values: Any, torch: Any, depth: int = 0) -> Iterator[Any]:
    """The dtypes of the torch models and pipelines among `values` (one level into containers)."""
    for value in values:
        try:
            dtype = getattr(value, "dtype", None) if not isinstance(value, type) else None
        except Exception:  # a pipeline property that fails on a half-built object says nothing
            dtype = None
        if isinstance(dtype, torch.dtype):
            yield dtype
        elif isinstance(value, torch.nn.Module):
            yield from {p.dtype for p in value.parameters() if p.is_floating_point()}
        elif isinstance(value, (list, tuple)) and depth == 0:
            yield from _dtypes(value, torch, depth + 1)
        elif isinstance(value, dict) and depth == 0:
            yield from _dtypes(value.values(), torch, depth + 1)


def _name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def record_facts(worker: dict[str, Any], kind: str, label: str, plugin: Any) -> None:
    """Add this process's torch settings, and the device and dtype of the generator or metric
    (`kind`) labelled `label`, to a worker's record."""
    worker.update(torch_facts())
    worker.setdefault(f"{kind}s", {})[label] = plugin_facts(plugin)
