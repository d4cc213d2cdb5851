"""The default executor: every item in this process, one after the other."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eligen_bench.generators.base import Generator
from eligen_bench.metrics.base import Metric, ScoreItem
from eligen_bench.requests import GenerationRequest
from eligen_bench.rundir import RunDir, worker_record


class LocalExecutor:
    name = "local"

    def __init__(self, device: str | None = None) -> None:
        self.worker = worker_record(self.name, device)

    def generate(self, run: RunDir, label: str, generator: Generator,
                 batches: Sequence[Sequence[GenerationRequest]], bar: Any) -> None:
        from eligen_bench.stages.generate import make_images

        try:
            for batch in batches:
                make_images(run, label, generator, batch, self.worker)
                bar.update(len(batch))
        finally:
            generator.close()

    def score(self, run: RunDir, label: str, metric: Metric,
              shards: Sequence[tuple[Path, Sequence[ScoreItem]]], bar: Any) -> None:
        from eligen_bench.stages.score import score_shard

        try:
            for path, chunk in shards:
                score_shard(run, label, metric, path, chunk, self.worker)
                bar.update(len(chunk))
        finally:
            metric.release()  # one metric's model at a time, beside what the run's cache shares

    def workers(self) -> list[dict[str, Any]]:
        return [self.worker]

    def close(self) -> None:
        return None
