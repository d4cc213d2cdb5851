"""Per-item seeds: derived per (layout, seed index) from the run's base seed, or listed.

Derived (the default): each (layout, seed index) gets its own seed from sha256(base seed,
layout id, seed index). Deriving from the layout id (not the layout's position) keeps a
layout's images the same when the suite is filtered or reordered, and gives different layouts
different noise.

Listed (`--seed-list 42,37,...`, or a suite that lists its protocol's seeds): image i of every
layout uses the i-th listed seed, as published evaluations do (MIGC's COCO-MIG script seeds
every prompt with 42; re-run tables use the same 8 seeds for every prompt).
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eligen_bench.arguments import MAX_SEED, MAX_SEEDS
from eligen_bench.errors import InputError

if TYPE_CHECKING:
    from eligen_bench.suite import Suite

NAMED_SEED_LISTS: dict[str, tuple[int, ...]] = {
    "cocomig-8": (42, 37, 519, 609, 123, 401, 780, 0),
}
"""Seed lists `--seed-list` also takes by name: the 8 seeds of the COCO-MIG re-run tables."""


def derive_seed(base_seed: int, layout_id: str, seed_index: int) -> int:
    """A 63-bit seed from sha256(base_seed, layout_id, seed_index); stable across platforms."""
    text = f"{int(base_seed)}/{layout_id}/{int(seed_index)}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") & ((1 << 63) - 1)


@dataclass(frozen=True)
class SeedPlan:
    """How a run seeds its images: `count` per layout, derived from `base_seed` or `listed`."""

    count: int
    base_seed: int | None = 0
    """None when the seeds are listed."""
    listed: tuple[int, ...] = ()
    source: str = "derived from the base seed"
    """Where the seeds come from, for the manifest ('--seed-list', 'suite mig-bench', ...)."""

    def for_layout(self, layout_id: str) -> list[int]:
        if self.listed:
            return list(self.listed)
        return [derive_seed(int(self.base_seed or 0), layout_id, i) for i in range(self.count)]

    def config(self) -> dict[str, Any]:
        """The run configuration's seed fields; `seed_list` only when seeds are listed, so runs
        with derived seeds keep the configuration (and hash) they always had."""
        config: dict[str, Any] = {"seeds": self.count, "base_seed": self.base_seed}
        if self.listed:
            config["seed_list"] = list(self.listed)
        return config

    def describe(self) -> str:
        if self.listed:
            return f"{self.count} per layout, listed ({self.source}): {', '.join(map(str, self.listed))}"
        return f"{self.count} per layout, derived from base seed {self.base_seed}"


def parse_seed_list(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated distinct seeds, or the name of a list (`cocomig-8`)."""
    if text.strip() in NAMED_SEED_LISTS:
        return NAMED_SEED_LISTS[text.strip()]
    parts = [part.strip() for part in text.split(",")]
    try:
        seeds = tuple(int(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers or one of {sorted(NAMED_SEED_LISTS)}, got {text!r}") from None
    if not 1 <= len(seeds) <= MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"must list 1 to {MAX_SEEDS} seeds, got {len(seeds)}")
    if any(not 0 <= seed <= MAX_SEED for seed in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be in [0, {MAX_SEED}], got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must be distinct (a repeated seed repeats its image), got {text!r}")
    return seeds


def resolve_seeds(suite: Suite, *, seeds: int | None, base_seed: int | None,
                  seed_list: tuple[int, ...] | None) -> SeedPlan:
    """The run's seeds: `--seed-list`, else derived when `--seeds` or `--base-seed` is given,
    else the seeds the suite lists (MIG-Bench: 42), else one derived seed from base 0."""
    if seed_list:
        if base_seed is not None:
            raise InputError("--base-seed derives the seeds and --seed-list lists them; give one",
                             field="--seed-list")
        if seeds is not None and seeds != len(seed_list):
            raise InputError(f"lists {len(seed_list)} seed(s) but --seeds asks for {seeds}; drop --seeds",
                             field="--seed-list")
        return SeedPlan(len(seed_list), None, tuple(seed_list), "--seed-list")
    if seeds is None and base_seed is None and suite.seed_list:
        return SeedPlan(len(suite.seed_list), None, suite.seed_list,
                        f"listed by suite {suite.name} (give --seeds N for derived seeds)")
    count = 1 if seeds is None else seeds
    if count < 1:
        raise InputError(f"must be at least 1, got {count}", field="--seeds")
    return SeedPlan(count, 0 if base_seed is None else base_seed)
