"""Plugin specs on the command line: `name`, `name[key=value,...]` or `label=name[...]`.

Values are read as JSON when they parse (numbers, true/false, null), else as strings, so
`eligen[lora_scale=0.8,lora=ckpt/new.safetensors]` does what it says. A generator with options
and no label gets `name-<hash>` as its folder name, so two configurations never share images.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from eligen_bench.errors import InputError
from eligen_bench.hashing import content_hash
from eligen_bench.layout import check_id

_SPEC = re.compile(r"^(?:(?P<label>[A-Za-z0-9][A-Za-z0-9._-]*)=)?(?P<name>[A-Za-z0-9_.:-]+)(?:\[(?P<opts>.*)\])?$")


@dataclass(frozen=True)
class PluginSpec:
    """One requested generator or metric with its options."""

    name: str
    """Registered name (or a 'module:Class' target)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Constructor options."""
    label: str = ""
    """What results call it: folder names for generators, column names for metrics."""


def split_list(text: str) -> list[str]:
    """Split on commas outside brackets."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_spec(text: str, *, kind: str) -> PluginSpec:
    match = _SPEC.match(text.strip())
    if not match:
        raise InputError(f"cannot parse {text!r}; expected name, name[key=value,...] or label=name[...]", field=kind)
    options: dict[str, Any] = {}
    for item in split_list(match["opts"] or ""):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"option {item!r} in {text!r} is not key=value", field=kind)
        options[key.strip()] = _value(value.strip())
    name = match["name"]
    label = match["label"] or ""
    if not label:
        if kind == "generator":
            base = name.rsplit(":", 1)[-1].lower() if ":" in name else name
            # Where the generator runs is not what it makes: like its identity, its folder name
            # leaves out the worker's interpreter, so moving an environment does not regenerate.
            made = {k: v for k, v in options.items() if k != "worker_python"}
            label = f"{base}-{content_hash(made, 6)}" if made else base
        else:
            label = name if not options else f"{name}[{','.join(f'{k}={options[k]}' for k in sorted(options))}]"
    if kind == "generator":
        check_id(label, where=f"generator spec {text!r}", what="label")
    return PluginSpec(name=name, options=options, label=label)


def parse_specs(text: str, *, kind: str) -> list[PluginSpec]:
    specs = [parse_spec(part, kind=kind) for part in split_list(text)]
    labels = [s.label for s in specs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise InputError(f"{kind} label(s) {duplicates} given twice; name them with label=...", field=kind)
    return specs


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
