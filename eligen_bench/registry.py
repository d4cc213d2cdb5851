"""Plugin registry: generators, metrics and suites found through entry-point groups.

Built-ins register in pyproject.toml exactly like outside packages do. Entries are
`"module:attribute"` strings loaded only when used, so a broken third-party plugin is
reported (in `eligen-bench ls`, or when asked for by name), never fatal to the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module, metadata
from typing import Any

from eligen_bench.errors import InputError

GROUPS = {
    "generator": "eligen_bench.generators",
    "metric": "eligen_bench.metrics",
    "suite": "eligen_bench.suites",
}


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
        return obj


class PluginError(RuntimeError):
    """A registered plugin that cannot be imported."""


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
