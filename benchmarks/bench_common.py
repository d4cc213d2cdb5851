"""What several benchmark scripts share: the CPU's name, the load average, interleaved timing
with per-round ratios, and seeded random box masks.

On a shared machine the load of other processes comes and goes between one variant's timing and
the next: timed one after the other, the same code measured 0.43x, 0.62x and 1.26x its
reference. So variants are timed interleaved (A, B, C, A, B, C, ... in one warm process), each
ratio is taken within a round (the two times share that round's load), and the report gives the
median of the per-round ratios with their range, beside the load average.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def cpu_name() -> str:
    """The CPU model, for the line that says what a CPU run measured."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages and the CPU count (how busy the machine was)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) on {os.cpu_count()} CPUs"


def interleaved(timers: Mapping[str, Callable[[], float]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Each timer's measurement per round, the timers called in turn (A, B, C, A, B, C, ...).

    A timer runs its variant once and returns what it measured (seconds, or a rate). The first
    `warmup` rounds are run and dropped (caches, kernel selection, compilation)."""
    kept: dict[str, list[float]] = {name: [] for name in timers}
    for round_ in range(warmup + rounds):
        for name, timer in timers.items():
            value = timer()
            if round_ >= warmup:
                kept[name].append(value)
    return kept


def round_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """``numerator[i] / denominator[i]`` for each round i (both measured in that round)."""
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def ratio_summary(ratios: Sequence[float]) -> str:
    """The median of per-round ratios and their range: "0.43 [0.40-0.47]"."""
    middle = statistics.median(ratios)
    if len(ratios) == 1:
        return f"{middle:.2f} (1 round)"
    return f"{middle:.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"


def status_kib(field: str) -> int:
    """A kibibyte field of /proc/self/status (e.g. VmHWM, the peak resident set), on Linux."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def box_token_masks(entities: int, size: int, seed: int) -> Any:
    """Bool (entities, (size // 16) ** 2) FLUX token masks of seeded random boxes, each side 1/4 to 5/8
    of the image: the same boxes for the same (entities, size, seed) in every benchmark."""
    import numpy as np
    import torch

    from eligen_bench.generators.flux.attention import latent_token_masks

    rng = np.random.default_rng(seed + entities)
    masks = []
    for _ in range(entities):
        h, w = rng.integers(size // 4, size * 5 // 8, size=2)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        mask = np.zeros((size, size), dtype=bool)
        mask[y : y + h, x : x + w] = True
        masks.append(mask)
    if not masks:
        return torch.zeros((0, (size // 16) ** 2), dtype=torch.bool)
    return latent_token_masks(masks, size, size)
