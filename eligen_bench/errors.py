"""The one error type for bad input: it names what was wrong and where."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class InputError(ValueError):
    """Bad user input (layouts, suites, names, options). The CLI prints it on one line and exits 2.

    `where` names the place (a file and line, a layout id), `field` the offending field.
    """

    def __init__(self, message: str, *, where: str | None = None, field: str | None = None):
        self.message = message
        self.where = where
        self.field = field
        prefix = ""
        if where:
            prefix += f"{where}: "
        if field:
            prefix += f"{field}: "
        super().__init__(prefix + message)


class WorkerError(RuntimeError):
    """A generator's worker process failed, timed out or broke the protocol (one line, exit 2)."""


PROFILES = ("full", "tiny")
"""Model profiles: `full` (the real models) and `tiny` (tiny random models, offline)."""


def check_plugin_options(kind: str, name: str, profile: str, defaults: Mapping[str, Any],
                         options: Mapping[str, Any]) -> None:
    """Reject an unknown profile or option of a generator or metric, naming what it takes."""
    if profile not in PROFILES:
        raise InputError(f"unknown profile {profile!r}; choose one of {PROFILES}", field="profile")
    unknown = set(options) - set(defaults)
    if unknown:
        raise InputError(f"unknown option(s) {sorted(unknown)}; {name} takes {sorted(defaults)}",
                         where=f"{kind} {name!r}")
    for key, value in options.items():
        expected = _expected_type(defaults[key], value)
        if expected:
            raise InputError(f"must be {expected} (like its default {defaults[key]!r}), got {value!r}",
                             where=f"{kind} {name!r}", field=key)


def _expected_type(default: Any, value: Any) -> str | None:
    """What `value` should be, judged by the option's default; None when it fits (or can't tell)."""
    if default is None or value is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    return None
