"""Scoring stage: every metric over every generated image, in resumable shards.

Items are scored in shards of a fixed size; a shard's file name is the hash of the metric's
identity and the images it covers, so a finished shard is never scored again, a changed metric
(other model, other threshold) scores into new shards, and a changed image invalidates only
the shards holding it. The run's `scores.parquet` is compiled from the shards on disk of every
metric the manifest on disk records (`compile_run_scores`), so a table never loses a metric
another command scored.

Before scoring, every inpainting input is checked against the sha256 recorded at generation,
and every image made from an input against the hash it recorded in its PNG.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eligen_bench.api.metric import Metric, ScoreItem
from eligen_bench.atomic import atomic_write
from eligen_bench.claims import claimed
from eligen_bench.errors import InputError
from eligen_bench.hashing import content_hash, file_sha256
from eligen_bench.rundir import INPUT_CHUNK, KEY_CHUNK, RunDir
from eligen_bench.suite import Suite

if TYPE_CHECKING:
    import pandas as pd

    from eligen_bench.executors.base import Executor
    from eligen_bench.executors.shard import Shard

log = logging.getLogger(__name__)
COLUMNS = ["metric", "generator", "layout_id", "seed_index", "seed", "entity_index", "value",
           "status", "detail", "image_sha256", "metric_key"]


def collect_items(run: RunDir, suite: Suite, generators: Sequence[str], seed_table: Mapping[str, list[int]],
                  inputs: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, list[ScoreItem]]:
    """The images to score, per generator; all must exist (generate first).

    `inputs` maps layout ids to the input images generation used ({'path', 'sha256'}); an input
    changed since, or an image made from another version of its input, is an InputError.
    """
    inputs = inputs or {}
    layout_ids = {layout.id for layout in suite.layouts}
    for layout_id, recorded in inputs.items():
        if layout_id in layout_ids:
            check_input(layout_id, recorded)
    items: dict[str, list[ScoreItem]] = {}
    for label in generators:
        found, missing = [], []
        for layout in suite.layouts:
            recorded = inputs.get(layout.id)
            init = Path(recorded["path"]) if recorded else None
            for index, seed in enumerate(seed_table[layout.id]):
                path = run.image_path(label, f"{layout.id}_{index}")
                text = run.image_text(path)
                if KEY_CHUNK not in text:
                    missing.append(path.name)
                    continue
                if recorded:
                    check_image_input(path, text, recorded, label)
                found.append(ScoreItem(label, layout, index, seed, path, file_sha256(path), init))
        if missing:
            raise InputError(
                f"{len(missing)} image(s) of {label!r} not generated yet (e.g. {missing[0]}); run generate first",
                where=str(run.root),
            )
        items[label] = found
    return items


def check_input(layout_id: str, recorded: Mapping[str, str]) -> None:
    """The input image must still be the file generation used (its sha256 is in the manifest)."""
    path = Path(recorded["path"])
    if not path.is_file():
        raise InputError(f"input image {str(path)!r} used for generation is gone; restore it",
                         where=f"layout {layout_id!r}", field="init_image")
    now = file_sha256(path)
    if now != recorded["sha256"]:
        raise InputError(
            f"input image {str(path)!r} changed since generation (sha256 {recorded['sha256'][:12]}... then, "
            f"{now[:12]}... now); restore it, or run generate again to remake the images made from it",
            where=f"layout {layout_id!r}", field="init_image")


def check_image_input(path: Path, text: Mapping[str, str], recorded: Mapping[str, str], label: str) -> None:
    """An image made from an input records that input's hash; it must be the one recorded now.

    (Images written before inputs were recorded in the PNG carry no hash; their key still does.)
    """
    made_from = text.get(INPUT_CHUNK)
    if made_from is not None and made_from != recorded["sha256"]:
        raise InputError(
            f"image {path.name} of {label!r} was made from another version of input image "
            f"{recorded['path']!r} (sha256 {made_from[:12]}..., the run's is {recorded['sha256'][:12]}...); "
            "run generate again to remake it", where=str(path.parent))


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


def score_shard(run: RunDir, label: str, metric: Metric, path: Path, chunk: Sequence[ScoreItem],
                worker: dict[str, Any], *, wait: bool = False) -> bool:
    """One work item (a score shard): score and write it unless it is on disk; returns False
    when it was skipped because another process holds its claim (never when `wait`).

    Every executor calls this; a shard is named by the metric's identity and its images, so
    one that exists is done. It is claimed (`eligen_bench.claims`) and checked again under the
    claim, so two processes never score it both, and written atomically, so never half. It is
    scored with the worker's torch thread setting (`runtime.threads`), whoever runs it.
    """
    from eligen_bench.runtime import record_facts, threads

    # Named without the run's path, which differs between machines and Ray workers.
    name = f"score:{path.parent.parent.name}/{path.parent.name}/{path.name}"
    with run.working(), threads(worker["threads"]), claimed(run.root, name, wait=wait) as mine:
        if not mine:
            return False
        if not run.holds(path):
            rows = metric.score(chunk)
            record_facts(worker, "metric", label, metric)
            run.check_inside(path)
            _write_rows(path, [{**r.to_record(), "metric": label} for r in rows])
            run.record_made(worker, "score", chunk[0].generator, f"{path.parent.parent.name}/{path.name}")
        return True


def run_scoring(run: RunDir, metrics: Mapping[str, Metric], items: Mapping[str, list[ScoreItem]],
                shard_size: int = 16, progress: bool = True, *, executor: Executor,
                shard: Shard | None = None) -> None:
    """Score what is not scored yet (of this shard), one shard file per work item, under one progress bar."""
    from eligen_bench import console
    mine = {label: [(path, chunk) for path, chunk in shard_plan(run, metric.key, items, shard_size)
                    if shard is None or shard.owns(path.stem)] for label, metric in metrics.items()}
    total = sum(len(chunk) for plan in mine.values() for _, chunk in plan)
    kept = sum(len(chunk) for plan in mine.values() for path, chunk in plan if run.holds(path))
    bar = console.stage_bar("score", total, kept, enabled=progress)
    try:
        for label, metric in metrics.items():
            todo = [(path, chunk) for path, chunk in mine[label] if not run.holds(path)]
            log.info("score %s: %d shard(s) to score, %d done", label, len(todo), len(mine[label]) - len(todo))
            if todo:
                bar.set_description(f"score {label}")
                executor.score(run, label, metric, todo, bar)
    finally:
        bar.set_description("score")
        bar.close()


def _write_rows(path: Path, records: list[dict]) -> None:
    import pandas as pd

    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def _read_shard(run: RunDir, path: Path) -> pd.DataFrame:
    from eligen_bench.run_records import read_score_table

    try:
        table = read_score_table(run.root, path)
    except InputError as exc:
        raise InputError(f"unreadable score shard ({exc.message}); delete it and run score again to rescore "
                         "just that shard",
                         where=exc.where, field=exc.field) from None
    assert table is not None  # only shards on disk are read
    return table


def compile_scores(run: RunDir, shards: Sequence[tuple[str, Path]]) -> pd.DataFrame:
    """Concatenate (label, shard) pairs into `scores.parquet`, in a fixed order (identical across
    resumes). Rows take the label they are compiled under: a shard is keyed by the metric's
    identity, so the label it was first scored under does not decide whose rows they are."""
    import pandas as pd

    frames = [_read_shard(run, path).assign(metric=label) for label, path in shards]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    table = table.sort_values(["metric", "generator", "layout_id", "seed_index", "entity_index"],
                              kind="mergesort").reset_index(drop=True)
    atomic_write(run.scores_path, lambda tmp: table.to_parquet(tmp, index=False))
    return table


def compile_run_scores(run: RunDir, items: Mapping[str, list[ScoreItem]]) -> pd.DataFrame:
    """`scores.parquet` from the manifest as it is on disk now and the shards on disk.

    Call it holding the run's lock. A metric with shards missing (images changed since it was
    scored) keeps the rows it has, with a warning; the report counts the missing rows.
    """
    from eligen_bench.run_records import metric_shards

    records = metric_shards(run.require_manifest(), str(run.manifest_path))
    shards = []
    for label, (key, shard_size) in records.items():
        plan = shard_plan(run, key, items, shard_size)
        present = [path for path, _ in plan if run.holds(path)]
        if len(present) < len(plan):
            log.warning("metric %s: %d of %d shard(s) not scored yet (another process is scoring them, "
                        "or images changed since); `eligen-bench status` says which", label,
                        len(plan) - len(present), len(plan))
        shards += [(label, path) for path in present]
    return compile_scores(run, shards)
