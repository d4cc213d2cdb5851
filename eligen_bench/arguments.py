"""Types of command-line values: every number has a range and every device must exist.

They run inside argument parsing, so a bad value stops the command before anything is read
or written, with argparse's one line naming the option.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

MAX_SEEDS = 100
"""Most images per layout (seed indices 0..N-1)."""
MAX_BATCH = 1024
"""Largest generation or metric batch."""
MAX_SHARD = 100_000
"""Most images in one resumable score shard."""
MAX_LIMIT = 10_000_000
"""Largest `--limit` (more layouts than any suite holds)."""
MAX_SEED = 2**63 - 1
"""Largest base seed (the per-image seeds are 63 bits)."""
MAX_WORKERS = 4096
"""Most Ray actors per stage."""
MAX_GPUS_PER_WORKER = 64.0
"""Most GPUs one Ray actor holds (a fraction shares a GPU)."""
MAX_THREADS = 1024
"""Most torch CPU threads per worker."""
MAX_RESAMPLES = 20_000
"""Most bootstrap resamples (twice the usual 10,000; the resample matrix holds resamples x
layouts numbers: 2830 COCO layouts x 20,000 resamples is 450 MB)."""
MAX_PER_BUCKET = 10_000
"""Most layouts per entity-count bucket shown in a leaderboard's image comparisons."""
MAX_WAIT = 30 * 24 * 3600.0
"""Longest `--wait-timeout`, in seconds (30 days)."""

_DEVICE = re.compile(r"(cpu|cuda|mps|xpu)(:(0|[1-9][0-9]{0,3}))?")


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def number_range(low: float, high: float, *, above_low: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (in (low, high] with `above_low`)."""
    opening = "(" if above_low else "["

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value > high or value < low or (above_low and value == low):
            raise argparse.ArgumentTypeError(f"must be a number in {opening}{low:g}, {high:g}], got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def device(text: str) -> str:
    """An argparse type: a torch device of this machine (cpu, cuda[:N], mps, xpu[:N])."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu, cuda, cuda:N, mps or xpu[:N]")
    kind, _, index = text.partition(":")
    if kind == "cpu":
        return text
    problem = _missing_device(kind, int(index) if index else None)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return text


def _missing_device(kind: str, index: int | None) -> str | None:
    """Why the device does not exist here, or None when it does (imports torch: only for a GPU)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if kind == "mps":
        return None if torch.backends.mps.is_available() else "no MPS device on this machine"
    backend = getattr(torch, kind)
    if not backend.is_available():
        return f"no {kind.upper()} device on this machine"
    count = backend.device_count()
    if index is not None and index >= count:
        return f"this machine has {count} {kind.upper()} device(s): {kind}:0 to {kind}:{count - 1}"
    return None
