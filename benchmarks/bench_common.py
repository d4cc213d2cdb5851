"""What several benchmark scripts share: the CPU's name, and seeded random box masks."""

from __future__ import annotations

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
