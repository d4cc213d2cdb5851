"""What a run records so that its readers can tell its configurations apart.

A generator label (`new`) says nothing by itself: two runs may give it another method, another
LoRA scale or another checkpoint. At generation the run records, per label, the method, the
settings that differ from the method's defaults (of the run's profile), and every local file a
setting names, by file name and sha256 (`manifest["configurations"]`), with the display names
and the order of `--generators` and `--metrics`. Reports, the regression gate and the
leaderboard read it back; none of it is part of an image's identity, so recording it never
regenerates anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from eligen_bench.errors import InputError
from eligen_bench.layout import check_text

NOT_SHOWN = ("worker_python",)
"""Settings that say where a generator runs, not what it makes (never shown, never hashed)."""
MAX_DISPLAY_NAME = 200
_LOCAL_PATH = re.compile(r"^(/|~|\.{1,2}/|[A-Za-z]:[\\/])")


def default_settings(generator: Any) -> dict[str, Any]:
    """The settings a generator takes when given no options, in its profile."""
    return {**dict(getattr(generator, "defaults", {}) or {}), **generator.profile_overrides()}


def changed_settings(settings: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that differ from `defaults` (all of them when no defaults are known)."""
    return {k: v for k, v in sorted(settings.items())
            if k not in NOT_SHOWN and (k not in defaults or defaults[k] != v)}


def local_files(settings: Mapping[str, Any], previous: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Per setting that names a local file: its file name and sha256 (reused from `previous`
    when the file's size and modification time are unchanged, so a resume does not hash a
    checkpoint of gigabytes again)."""
    from eligen_bench.hashing import file_sha256

    previous = previous or {}
    found = {}
    for key, value in sorted(settings.items()):
        if key in NOT_SHOWN or not isinstance(value, str) or not value:
            continue
        path = Path(value).expanduser()
        try:
            if not path.is_file():
                continue
            stat = path.stat()
        except OSError:  # a hub id such as 'org/model' is no file; an unreadable path is not hashed
            continue
        record = {"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        old = previous.get(key) or {}
        same = all(old.get(k) == record[k] for k in ("name", "size", "mtime_ns")) and old.get("sha256")
        record["sha256"] = old["sha256"] if same else file_sha256(path)
        found[key] = record
    return found


def generator_record(generator: Any, title: str, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the manifest records about one generator label."""
    settings = dict(generator.settings)
    return {"name": generator.name, "title": title,
            "changed": changed_settings(settings, default_settings(generator)),
            "files": local_files(settings, (previous or {}).get("files"))}


def generator_title(label: str, generator: Any, names: Mapping[str, str]) -> str:
    """The display name: the one given, else the method's own when the label is its name."""
    if label in names:
        return names[label]
    display = getattr(generator, "display_name", "") or ""
    return display if display and label == generator.name else label


def parse_names(text: str | None, known: Iterable[str], *, option: str) -> dict[str, str]:
    """`label=Display Name,...` (commas inside brackets belong to a metric label) -> {label: name}."""
    from eligen_bench.specs import split_list

    if not text:
        return {}
    known = list(known)
    names: dict[str, str] = {}
    for item in split_list(text):
        label, sep, name = split_name(item)
        if not sep or not label or not name.strip():
            raise InputError(f"{item!r} is not label=display name", field=option)
        if label not in known:
            raise InputError(f"no label {label!r} here; labels: {', '.join(known)}", field=option)
        check_text(name, where=None, what=option)
        if len(name) > MAX_DISPLAY_NAME:
            raise InputError(f"display name of {label!r} is longer than {MAX_DISPLAY_NAME} characters", field=option)
        names[label] = name.strip()
    return names


def split_name(item: str) -> tuple[str, str, str]:
    """Split at the first '=' outside brackets: 'vlm_success[judge=x]=Qwen' -> label, '=', 'Qwen'."""
    depth = 0
    for i, char in enumerate(item):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "=" and depth == 0:
            return item[:i].strip(), "=", item[i + 1:]
    return item.strip(), "", ""


def public_value(value: Any) -> Any:
    """A value fit for a published page: a local path becomes its file name (a hub id such as
    'org/model' stays), recursively through lists and mappings."""
    if isinstance(value, str) and _LOCAL_PATH.match(value):
        return f"{Path(value).name or value} (local file)"
    if isinstance(value, Mapping):
        return {k: public_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public_value(v) for v in value]
    return value


def ordered(previous: Iterable[str], current: Iterable[str]) -> list[str]:
    """The run's order: the labels it had, then the new ones in the order they were given."""
    order = list(previous)
    return order + [label for label in current if label not in order]
