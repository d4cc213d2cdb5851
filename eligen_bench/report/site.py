"""`eligen-bench leaderboard`: one static site comparing many run folders.

Runs are grouped by what makes their numbers comparable: the suite's content hash and the
seeds (count and base seed). Inside a group a column is one metric key: two runs that scored
the same label with different metric models get two columns, never one mixed column. Every
row is one (run, generator label), summarised once for the whole suite and once per
entity-count bucket with the per-run report's statistics (`stats.summarize`).
"""

from __future__ import annotations

import dataclasses
import glob
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eligen_bench.errors import InputError
from eligen_bench.report import stats
from eligen_bench.report.data import Run, load_run

ALL = "all"
BUCKETS = ((0, 0, "0"), (1, 2, "1-2"), (3, 4, "3-4"), (5, 6, "5-6"), (7, math.inf, "7+"))
"""Entity-count buckets: (lowest, highest, name)."""


def bucket_of(n_entities: int) -> str:
    return next(name for low, high, name in BUCKETS if low <= n_entities <= high)


@dataclass
class Column:
    """One metric key of a group; the labels it was scored under in the group's runs."""

    id: str
    key: str
    labels: list[str]
    name: str
    higher_is_better: bool
    scale: float
    level: str


@dataclass
class Group:
    """Runs whose numbers can share columns: same suite hash, seeds and base seed."""

    suite: dict[str, Any]
    seeds: int
    base_seed: Any
    runs: list[tuple[str, Run]] = field(default_factory=list)
    """(run id on the site, loaded run)."""
    columns: list[Column] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What was set apart in this group and why."""

    @property
    def title(self) -> str:
        return (f"suite {self.suite['name']} v{self.suite['version']} (hash {self.suite['hash'][:12]}), "
                f"{self.seeds} seed(s), base seed {self.base_seed}")

    @property
    def buckets(self) -> list[str]:
        counts = {bucket_of(len(layout.entities)) for layout in self.runs[0][1].suite.layouts}
        return [name for _, _, name in BUCKETS if name in counts]


def expand_runs(patterns: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Run folders named or matched by `patterns`; what a glob matched that is no run folder.

    A folder named outright must be a run folder (InputError otherwise); a glob may match
    other things, which are set apart and reported.
    """
    found: list[Path] = []
    skipped: list[str] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern))
            if not matches:
                raise InputError("matches nothing", where=f"run pattern {pattern!r}")
            for path in matches:
                if (path / "manifest.json").is_file():
                    found.append(path)
                else:
                    skipped.append(f"{path}: not a run folder (no manifest.json), skipped")
        else:
            path = Path(pattern)
            if not (path / "manifest.json").is_file():
                raise InputError("not a run folder (no manifest.json)", where=str(path))
            found.append(path)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise InputError("no run folder found", where=" ".join(patterns))
    return unique, skipped


def site_ids(runs: Sequence[Run]) -> list[str]:
    """A file-name safe, unique id per run (run folders of one name from different places)."""
    ids: list[str] = []
    for run in runs:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", run.name) or "run"
        name, n = base, 1
        while name in ids:
            n += 1
            name = f"{base}-{n}"
        ids.append(name)
    return ids


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Runs grouped by suite hash and seeds, in the order first seen."""
    groups: dict[tuple[str, int, str], Group] = {}
    for run_id, run in zip(site_ids(runs), runs, strict=True):
        key = (run.suite_hash, run.seeds, repr(run.base_seed))
        if key not in groups:
            suite = {"name": run.suite.name, "version": run.suite.version, "hash": run.suite_hash,
                     "layouts": len(run.suite.layouts)}
            groups[key] = Group(suite, run.seeds, run.base_seed)
        groups[key].runs.append((run_id, run))
    return list(groups.values())


def apart_notes(groups: Sequence[Group]) -> list[str]:
    """Why runs of one suite sit in different groups (seeds), and that suites differ."""
    notes = []
    by_suite: dict[str, list[Group]] = {}
    for group in groups:
        by_suite.setdefault(group.suite["hash"], []).append(group)
    for parts in by_suite.values():
        if len(parts) > 1:
            names = "; ".join(f"{', '.join(i for i, _ in g.runs)} ({g.seeds} seed(s), base seed {g.base_seed})"
                              for g in parts)
            notes.append(f"suite {parts[0].suite['name']}: runs with different seeds are set apart "
                         f"into separate groups: {names}")
    if len(by_suite) > 1:
        notes.append(f"{len(by_suite)} different suites (by content hash): each has its own table; "
                     "no number is compared across suites")
    return notes


def build_columns(group: Group) -> None:
    """One column per metric key; a label scored under several keys is split and reported."""
    columns: dict[str, Column] = {}
    keys_of_label: dict[str, dict[str, list[str]]] = {}
    for run_id, run in group.runs:
        for label, info in run.metrics.items():
            key = info.key or f"(no key) {label}"
            if key not in columns:
                columns[key] = Column(f"c{len(columns)}", key, [], info.name, info.higher_is_better,
                                      info.scale, info.level)
            if label not in columns[key].labels:
                columns[key].labels.append(label)
            keys_of_label.setdefault(label, {}).setdefault(key, []).append(run_id)
    group.columns = list(columns.values())
    for label, keys in keys_of_label.items():
        if len(keys) > 1:
            text = "; ".join(f"key {k[:12]} in {', '.join(ids)}" for k, ids in keys.items())
            group.notes.append(f"{group.title}: metric {label!r} was scored with {len(keys)} different "
                               f"metric keys ({text}): separate columns, never mixed")


def bucket_run(run: Run, bucket: str) -> Run:
    """The run restricted to the layouts of one entity-count bucket."""
    layouts = tuple(layout for layout in run.suite.layouts if bucket_of(len(layout.entities)) == bucket)
    ids = {layout.id for layout in layouts}
    scores = run.scores[run.scores["layout_id"].isin(ids)].reset_index(drop=True)
    return dataclasses.replace(run, suite=dataclasses.replace(run.suite, layouts=layouts), scores=scores)


def build_rows(group: Group, options: stats.BootstrapOptions) -> None:
    """One row per (run, generator, bucket); cells by column id, with interval and counts; then
    each bucket's rows ranked and each column's best and second best marked."""
    from eligen_bench.report.configuration import configuration

    column_of = {(label, c.key): c.id for c in group.columns for label in c.labels}
    for run_id, run in group.runs:
        for bucket in [ALL, *group.buckets]:
            part = run if bucket == ALL else bucket_run(run, bucket)
            summary = stats.summarize(part, options)
            for generator in run.generators:
                rows = summary[summary["generator"] == generator]
                cells = {}
                for r in rows.itertuples(index=False):
                    key = run.metrics[r.metric].key or f"(no key) {r.metric}"
                    cells[column_of[(r.metric, key)]] = {
                        "label": r.metric, "mean": _number(r.mean), "ci_low": _number(r.ci_low),
                        "ci_high": _number(r.ci_high), "strict_mean": _number(r.strict_mean),
                        "strict_ci_low": _number(r.strict_ci_low), "strict_ci_high": _number(r.strict_ci_high),
                        "n": int(r.n), "n_layouts": int(r.n_layouts), "n_unparsed": int(r.n_unparsed)}
                group.rows.append({"run": run_id, "generator": generator, "bucket": bucket,
                                   "layouts": len(part.suite.layouts), "seeds": run.seeds,
                                   "profile": run.profile, "configuration": configuration(run, generator),
                                   "cells": cells})
    rank_rows(group)


STRICT_FIELD = "strict_mean"
"""A VLM success column shows the strict rate (unparsed answers count as failures) beside it."""
RANK_DECIMALS = 2
"""Values are ranked and marked at the precision the page shows them."""


def value_fields(column: Column) -> list[str]:
    from eligen_bench.report.tables import STRICT_METRICS

    return ["mean", STRICT_FIELD] if column.name in STRICT_METRICS else ["mean"]


def rank_rows(group: Group) -> None:
    """Per bucket: mark each column's best and second best (`marks` of a cell, by the metric's
    direction), give each row its mean rank over the columns it has (a column ranks rows by
    competition ranking: 1 + the rows strictly better), and its place by that mean rank; rows
    sorted by bucket, then place."""
    from eligen_bench.report.tables import rank_marks

    for bucket in dict.fromkeys(r["bucket"] for r in group.rows):
        rows = [r for r in group.rows if r["bucket"] == bucket]
        ranks: list[list[int]] = [[] for _ in rows]
        for column in group.columns:
            for name in value_fields(column):
                values = [(r["cells"].get(column.id) or {}).get(name) for r in rows]
                shown = [round(v, RANK_DECIMALS) if v is not None else None for v in values]
                for row, mark in zip(rows, rank_marks([v if v is not None else math.nan for v in shown],
                                                      higher_is_better=column.higher_is_better,
                                                      decimals=RANK_DECIMALS), strict=True):
                    if mark and column.id in row["cells"]:
                        row["cells"][column.id].setdefault("marks", {})[name] = mark
                if name != "mean":
                    continue  # the strict rate is shown, not ranked twice
                sign = 1.0 if column.higher_is_better else -1.0
                for i, value in enumerate(shown):
                    if value is not None:
                        ranks[i].append(1 + sum(1 for other in shown if other is not None and sign * other > sign * value))
        for row, row_ranks in zip(rows, ranks, strict=True):
            row["mean_rank"] = sum(row_ranks) / len(row_ranks) if row_ranks else None
        for row in rows:
            mine = row["mean_rank"]
            row["rank"] = None if mine is None else 1 + sum(
                1 for other in rows if other["mean_rank"] is not None and other["mean_rank"] < mine - 1e-12)
    position = {b: i for i, b in enumerate(dict.fromkeys(r["bucket"] for r in group.rows))}
    group.rows.sort(key=lambda r: (position[r["bucket"]], r["rank"] is None, r["rank"] or 0))


def _number(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


@dataclass
class Leaderboard:
    """Everything the site shows, and what was set apart on the way."""

    groups: list[Group]
    notes: list[str]
    """What the page says was set apart (suites, seeds, metric keys)."""
    skipped: list[str] = field(default_factory=list)
    """What a glob matched that is no run folder: said on the terminal only (local paths)."""


def build_leaderboard(patterns: Sequence[str], *, bootstrap: stats.BootstrapOptions | None = None) -> Leaderboard:
    """Load every run (all are checked before anything is written), group, summarise."""
    paths, skipped = expand_runs(patterns)
    runs = [load_run(path) for path in paths]
    groups = group_runs(runs)
    notes = apart_notes(groups)
    for group in groups:
        build_columns(group)
        build_rows(group, bootstrap or stats.BootstrapOptions())
        notes += group.notes
    return Leaderboard(groups, notes, skipped)
