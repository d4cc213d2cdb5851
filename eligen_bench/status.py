"""`eligen-bench status RUN`: what a run folder still lacks, per generator and metric.

Used after sharded runs (`--shard i/n`), where no single process sees the whole run: it says
which images and score shards are missing, so the missing part can be run again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eligen_bench.run_records import metric_shards, seed_table
from eligen_bench.rundir import KEY_CHUNK, RunDir
from eligen_bench.stages.score import collect_items, shard_plan

SHOWN = 5
"""Missing items named per line (the rest are counted)."""


@dataclass
class Status:
    lines: list[str] = field(default_factory=list)
    missing_images: int = 0
    missing_shards: int = 0

    @property
    def complete(self) -> bool:
        return not self.missing_images and not self.missing_shards


def missing_images(run: RunDir, label: str, seeds: dict[str, list[int]], layout_ids: list[str]) -> list[str]:
    return [f"{layout_id}_{index}" for layout_id in layout_ids for index in range(len(seeds[layout_id]))
            if KEY_CHUNK not in run.image_text(run.image_path(label, f"{layout_id}_{index}"))]


def run_status(run: RunDir, shown: int | None = SHOWN) -> Status:
    """Completeness of every generator's images and every metric's shards; `shown` caps the
    missing items named per line (None: all)."""
    manifest = run.require_manifest()
    suite = run.read_suite()
    layout_ids = [layout.id for layout in suite.layouts]
    seeds = seed_table(manifest, layout_ids, str(run.manifest_path))
    shards = metric_shards(manifest, str(run.manifest_path))
    status = Status()
    complete = []
    for label in manifest["config"]["generators"]:
        missing = missing_images(run, label, seeds, layout_ids)
        total = sum(len(seeds[i]) for i in layout_ids)
        status.missing_images += len(missing)
        status.lines.append(f"images {label}: {total - len(missing)}/{total}" + _names("missing", missing, shown))
        if not missing:
            complete.append(label)
    items = collect_items(run, suite, complete, seeds, manifest.get("inputs"))
    for metric, (key, shard_size) in shards.items():
        for label in manifest["config"]["generators"]:
            if label not in items:
                status.lines.append(f"scores {metric} / {label}: waiting for its images")
                continue
            plan = shard_plan(run, key, {label: items[label]}, shard_size)
            missing_plan = [chunk for path, chunk in plan if not run.holds(path)]
            status.missing_shards += len(missing_plan)
            covers = [f"{i.layout.id}_{i.seed_index}" for chunk in missing_plan for i in chunk]
            status.lines.append(f"scores {metric} / {label}: {len(plan) - len(missing_plan)}/{len(plan)} shard(s)"
                                + _names("the missing ones cover", covers, shown))
    return status


def _names(what: str, names: list[str], shown: int | None) -> str:
    if not names:
        return ""
    shown = len(names) if shown is None else shown
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"; {what} {', '.join(names[:shown])}{more}"
