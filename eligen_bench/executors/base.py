"""What every executor offers the stages."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from eligen_bench.api.generator import Generator
from eligen_bench.api.metric import Metric, ScoreItem
from eligen_bench.requests import GenerationRequest
from eligen_bench.rundir import RunDir


class Executor(Protocol):
    """Makes work items: batches of generation requests, and score shards."""

    name: str

    def generate(self, run: RunDir, label: str, generator: Generator,
                 batches: Sequence[Sequence[GenerationRequest]], bar: Any) -> None:
        """Make every batch's missing images with (copies of) `generator`; `bar.update(n)` as they are done."""

    def score(self, run: RunDir, label: str, metric: Metric,
              shards: Sequence[tuple[Path, Sequence[ScoreItem]]], bar: Any) -> None:
        """Score every shard not on disk yet with (copies of) `metric`; `bar.update(n)` per shard's images."""

    def workers(self) -> list[dict[str, Any]]:
        """The workers that made items so far: id, host, process, device."""

    def close(self) -> None:
        """Stop the executor's workers."""
