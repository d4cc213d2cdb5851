"""The default executor: every item in this process, one after the other."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eligen_bench.api.generator import Generator
from eligen_bench.api.metric import Metric, ScoreItem
from eligen_bench.claims import make_all
from eligen_bench.requests import GenerationRequest
from eligen_bench.rundir import RunDir, worker_record
from eligen_bench.runtime import DEFAULT_THREADS
from eligen_bench.stages.generate import make_images
from eligen_bench.stages.score import score_shard


class LocalExecutor:
    name = "local"

    def __init__(self, device: str | None = None, threads: int = DEFAULT_THREADS) -> None:
        self.worker = worker_record(self.name, device, threads)

    def generate(self, run: RunDir, label: str, generator: Generator,
                 batches: Sequence[Sequence[GenerationRequest]], bar: Any) -> None:
        def make(batch: Sequence[GenerationRequest], wait: bool) -> list[Sequence[GenerationRequest]]:
            return [[r] for r in make_images(run, label, generator, batch, self.worker, wait=wait)]

        try:
            make_all(batches, make, len, bar, f"generate {label}")
        finally:
            generator.close()

    def score(self, run: RunDir, label: str, metric: Metric,
              shards: Sequence[tuple[Path, Sequence[ScoreItem]]], bar: Any) -> None:
        def make(shard: tuple[Path, Sequence[ScoreItem]], wait: bool) -> list[tuple[Path, Sequence[ScoreItem]]]:
            return [] if score_shard(run, label, metric, *shard, self.worker, wait=wait) else [shard]

        try:
            make_all(shards, make, lambda shard: len(shard[1]), bar, f"score {label}")
        finally:
            metric.release()  # one metric's model at a time, beside what the run's cache shares

    def workers(self) -> list[dict[str, Any]]:
        return [self.worker]

    def close(self) -> None:
        return None
