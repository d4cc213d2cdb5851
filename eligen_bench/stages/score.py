"""Scoring stage: every metric over every generated image, in resumable shards.

Items are scored in shards of a fixed size; a shard's file name is the hash of the metric's
identity and the images it covers, so a finished shard is never scored again, a changed metric
(other model, other threshold) scores into new shards, and a changed image invalidates only
the shards holding it. The run's `scores.parquet` is compiled from the current shards.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from eligen_bench.atomic import atomic_write
from eligen_bench.errors import InputError
from eligen_bench.hashing import content_hash, file_sha256
from eligen_bench.metrics.base import Metric, ScoreItem
from eligen_bench.rundir import RunDir
from eligen_bench.suite import Suite

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
COLUMNS = ["metric", "generator", "layout_id", "seed_index", "seed", "entity_index", "value",
           "status", "detail", "image_sha256", "metric_key"]


def collect_items(run: RunDir, suite: Suite, generators: Sequence[str], seed_table: Mapping[str, list[int]],
                  inputs: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, list[ScoreItem]]:
    """The images to score, per generator; all must exist (generate first).

    `inputs` maps layout ids to the input images generation used ({'path', 'sha256'}).
    """
    inputs = inputs or {}
    items: dict[str, list[ScoreItem]] = {}
    for label in generators:
        found, missing = [], []
        for layout in suite.layouts:
            init = Path(inputs[layout.id]["path"]) if layout.id in inputs else None
            for index, seed in enumerate(seed_table[layout.id]):
                path = run.image_path(label, f"{layout.id}_{index}")
                if run.image_key(path) is None:
                    missing.append(path.name)
                    continue
                found.append(ScoreItem(label, layout, index, seed, path, file_sha256(path), init))
        if missing:
            raise InputError(
                f"{len(missing)} image(s) of {label!r} not generated yet (e.g. {missing[0]}); run generate first",
                where=str(run.root),
            )
        items[label] = found
    return items


def shard_name(metric_key: str, items: Sequence[ScoreItem]) -> str:
    return content_hash([metric_key, [(i.layout.id, i.seed_index, i.image_sha256) for i in items]])


def shard_plan(run: RunDir, metric_key: str, items: Mapping[str, list[ScoreItem]],
               shard_size: int) -> list[tuple[Path, list[ScoreItem]]]:
    """Every shard file of one metric over the run's images, with the items it covers."""
    plan = []
    for generator, generator_items in items.items():
        for start in range(0, len(generator_items), shard_size):
            chunk = generator_items[start : start + shard_size]
            plan.append((run.shard_path(metric_key, generator, shard_name(metric_key, chunk)), chunk))
    return plan


def run_scoring(run: RunDir, metrics: Mapping[str, Metric], items: Mapping[str, list[ScoreItem]],
                shard_size: int = 16, progress: bool = True) -> None:
    """Score what is not scored yet, one shard file at a time."""
    from eligen_bench import console

    plans = {label: shard_plan(run, metric.key, items, shard_size) for label, metric in metrics.items()}
    total = sum(len(chunk) for plan in plans.values() for _, chunk in plan)
    kept = sum(len(chunk) for plan in plans.values() for path, chunk in plan if path.exists())
    bar = console.stage_bar("score", total, kept, enabled=progress)
    for label, metric in metrics.items():
        plan = plans[label]
        todo = [(path, chunk) for path, chunk in plan if not path.exists()]
        log.info("score %s: %d shard(s) to score, %d done", label, len(todo), len(plan) - len(todo))
        bar.set_description(f"score {label}")
        try:
            for path, chunk in todo:
                rows = metric.score(chunk)
                _write_rows(path, [{**r.to_record(), "metric": label} for r in rows])
                bar.update(len(chunk))
        finally:
            metric.release()  # one metric's model at a time, beside what the run's cache shares
    bar.set_description("score")
    bar.close()


def _write_rows(path: Path, records: list[dict]) -> None:
    import pandas as pd

    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def _read_shard(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise InputError(f"unreadable score shard ({type(exc).__name__}); delete it and run score again "
                         "to rescore just that shard", where=str(path)) from None


def compile_scores(run: RunDir, shards: Sequence[Path]) -> pd.DataFrame:
    """Concatenate the shards into `scores.parquet`, in a fixed order (identical across resumes)."""
    import pandas as pd

    frames = [_read_shard(path) for path in shards]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    table = table.sort_values(["metric", "generator", "layout_id", "seed_index", "entity_index"],
                              kind="mergesort").reset_index(drop=True)
    atomic_write(run.scores_path, lambda tmp: table.to_parquet(tmp, index=False))
    return table
