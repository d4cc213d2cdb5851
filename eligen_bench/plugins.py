"""Turn parsed specs into generator and metric objects (nothing is loaded yet).

Imports run one way: plugins -> worker -> registry; the worker process itself needs only the registry."""

from __future__ import annotations

from typing import Any

from eligen_bench.errors import InputError
from eligen_bench.registry import load_target, target_of
from eligen_bench.specs import PluginSpec
from eligen_bench.worker import WorkerGenerator


def make_generator(spec: PluginSpec, *, profile: str, device: str | None) -> Any:
    """A generator object; `worker_python=...` runs it in that interpreter's environment."""
    options = dict(spec.options)
    python = options.pop("worker_python", None)
    timeouts = {key: _seconds(options.pop(option), spec, option)
                for key, option in (("start_timeout", "worker_start_timeout"), ("timeout", "worker_timeout"))
                if option in options}
    if python:
        return WorkerGenerator(python=str(python), target=target_of(spec.name, kind="generator"),
                               profile=profile, device=device, **timeouts, **options)
    if timeouts:
        raise InputError("worker timeouts apply only with worker_python=...", where=f"generator {spec.label!r}")
    cls = load_target(spec.name, kind="generator")
    return cls(profile=profile, device=device, **options)


MAX_WORKER_TIMEOUT = 7 * 24 * 3600.0
"""Longest worker timeout accepted (a week), in seconds."""


def _seconds(value: Any, spec: PluginSpec, option: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_WORKER_TIMEOUT:
        raise InputError(f"must be a number of seconds in (0, {MAX_WORKER_TIMEOUT:g}], got {value!r}",
                         where=f"generator {spec.label!r}", field=option)
    return float(value)


def make_metric(spec: PluginSpec, *, profile: str, device: str | None, cache: Any, batch_size: int) -> Any:
    cls = load_target(spec.name, kind="metric")
    return cls(profile=profile, device=device, cache=cache, batch_size=batch_size, **spec.options)
