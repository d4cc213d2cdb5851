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

    def __init__(self, progress: bool = True, device: str | None = None) -> None:
        self.progress = progress
        self.worker = worker_record(self.name, device)

    def generate(self, run: RunDir, label: str, generator: Generator,
                 batches: Sequence[Sequence[GenerationRequest]]) -> None:
        from tqdm import tqdm

        from eligen_bench.stages.generate import make_images

        total = sum(len(batch) for batch in batches)
        bar = tqdm(total=total, desc=f"generate {label}", unit="img", disable=not self.progress)
        try:
            for batch in batches:
                make_images(run, label, generator, batch, self.worker)
                bar.update(len(batch))
        finally:
            bar.close()
            generator.close()

    def score(self, run: RunDir, label: str, metric: Metric,
              shards: Sequence[tuple[Path, Sequence[ScoreItem]]]) -> None:
        from tqdm import tqdm

        from eligen_bench.stages.score import score_shard

        total = sum(len(chunk) for _, chunk in shards)
        try:
            with tqdm(total=total, desc=f"score {label}", unit="img", disable=not self.progress) as bar:
                for path, chunk in shards:
                    score_shard(run, label, metric, path, chunk, self.worker)
                    bar.update(len(chunk))
        finally:
            metric.release()  # one metric's model at a time, beside what the run's cache shares

    def workers(self) -> list[dict[str, Any]]:
        return [self.worker]

    def close(self) -> None:
        return None
