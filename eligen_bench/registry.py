"""Plugin registry: generators, metrics and suites found through entry-point groups.

Built-ins register in pyproject.toml exactly like outside packages do. Entries are
`"module:attribute"` strings loaded only when used, so a broken third-party plugin is
reported (in `eligen-bench ls`, or when asked for by name), never fatal to the others.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import import_module, metadata
from typing import Any

from eligen_bench.errors import InputError

GROUPS = {
    "generator": "eligen_bench.generators",
    "metric": "eligen_bench.metrics",
    "suite": "eligen_bench.suites",
}
BASES = {
    "generator": ("eligen_bench.api.generator", "Generator"),
    "metric": ("eligen_bench.api.metric", "Metric"),
}
"""The class every plugin of a kind must subclass (suites are loader functions)."""


@dataclass(frozen=True)
class Entry:
    """A registered plugin, not yet imported."""

    kind: str
    """'generator', 'metric' or 'suite'."""
    name: str
    """The name users type."""
    target: str
    """'module:attribute' to import when used."""
    origin: str
    """The distribution that registered it."""

    def load(self) -> Any:
        module_name, _, attribute = self.target.partition(":")
        try:
            obj: Any = import_module(module_name)
            for part in attribute.split("."):
                obj = getattr(obj, part)
        except Exception as exc:  # a broken plugin must not take the others down
            raise PluginError(f"{self.kind} {self.name!r} ({self.target}, from {self.origin}) failed to load: {exc}") from exc
        problem = kind_problem(self.kind, obj)
        if problem:
            raise PluginError(f"{self.kind} {self.name!r} ({self.target}, from {self.origin}) {problem}")
        return obj


class PluginError(RuntimeError):
    """A registered plugin that cannot be imported."""


def kind_problem(kind: str, obj: Any) -> str | None:
    """Why `obj` cannot serve as a plugin of `kind` (not a subclass of its base, abstract), or None."""
    if kind not in BASES:
        return None if callable(obj) else f"is a {type(obj).__name__}, not a function that returns a suite"
    module, name = BASES[kind]
    base = getattr(import_module(module), name)
    if not (isinstance(obj, type) and issubclass(obj, base)):
        what = f"the class {obj.__name__}" if isinstance(obj, type) else f"a {type(obj).__name__}"
        return f"is {what}, not a {kind} (a subclass of {module}.{name})"
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        return f"is abstract (it does not implement {missing})"
    return None


def entries(kind: str) -> dict[str, Entry]:
    """All registered plugins of one kind, by name (first registration wins, duplicates noted)."""
    group = GROUPS[kind]
    found: dict[str, Entry] = {}
    for ep in metadata.entry_points(group=group):
        origin = ep.dist.name if ep.dist is not None else "?"
        found.setdefault(ep.name, Entry(kind, ep.name, ep.value, origin))
    return dict(sorted(found.items()))


def get(kind: str, name: str) -> Any:
    """The plugin object registered as `name`; InputError naming the known ones when absent."""
    known = entries(kind)
    if name not in known:
        choices = ", ".join(known) or "none registered (is the package installed?)"
        raise InputError(f"unknown {kind} {name!r}; known: {choices}", field=kind)
    return known[name].load()


def generator_class(name: str) -> type:
    return get("generator", name)


def metric_class(name: str) -> type:
    return get("metric", name)


def load_target(name: str, *, kind: str) -> Any:
    """A registered name, or a 'module:Class' target for plugins not (yet) packaged."""
    if ":" not in name:
        return get(kind, name)
    module_name, _, attribute = name.partition(":")
    try:
        obj: Any = import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # whatever the module raises on import is the user's target's problem
        raise InputError(f"cannot import {name!r} ({type(exc).__name__}: {exc})", field=kind) from None
    problem = kind_problem(kind, obj)
    if problem:
        raise InputError(f"{name!r} {problem}", field=kind)
    return obj


def target_of(name: str, *, kind: str) -> str:
    if ":" in name:
        return name
    known = entries(kind)
    if name not in known:
        get(kind, name)  # raises the InputError listing known names
    return known[name].target
