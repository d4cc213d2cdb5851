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
        return getattr(import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot import {name!r} ({exc})", field=kind) from None


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
    if python:
        from eligen_bench.worker import WorkerGenerator

        return WorkerGenerator(python=str(python), target=target_of(spec.name, kind="generator"),
                               profile=profile, device=device, **options)
    cls = load_target(spec.name, kind="generator")
    return cls(profile=profile, device=device, **options)


def make_metric(spec: PluginSpec, *, profile: str, device: str | None, cache: Any, batch_size: int) -> Any:
    cls = load_target(spec.name, kind="metric")
    return cls(profile=profile, device=device, cache=cache, batch_size=batch_size, **spec.options)
