"""Turn parsed specs into generator and metric objects (nothing is loaded yet)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from eligen_bench import registry
from eligen_bench.errors import InputError
from eligen_bench.specs import PluginSpec


def load_target(name: str, *, kind: str) -> Any:
    """A registered name, or a 'module:Class' target for plugins not (yet) packaged."""
    if ":" not in name:
        return registry.get(kind, name)
    module_name, _, attribute = name.partition(":")
    try:
        obj: Any = import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # whatever the module raises on import is the user's target's problem
        raise InputError(f"cannot import {name!r} ({type(exc).__name__}: {exc})", field=kind) from None
    problem = registry.kind_problem(kind, obj)
    if problem:
        raise InputError(f"{name!r} {problem}", field=kind)
    return obj


def target_of(name: str, *, kind: str) -> str:
    if ":" in name:
        return name
    entries = registry.entries(kind)
    if name not in entries:
        registry.get(kind, name)  # raises the InputError listing known names
    return entries[name].target


def make_generator(spec: PluginSpec, *, profile: str, device: str | None) -> Any:
    """A generator object; `worker_python=...` runs it in that interpreter's environment."""
    options = dict(spec.options)
    python = options.pop("worker_python", None)
    timeouts = {key: _seconds(options.pop(option), spec, option)
                for key, option in (("start_timeout", "worker_start_timeout"), ("timeout", "worker_timeout"))
                if option in options}
    if python:
        from eligen_bench.worker import WorkerGenerator

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
