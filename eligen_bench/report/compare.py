"""Comparing a run with other runs (regression testing: a new checkpoint against the last run).

Two runs' numbers are comparable only when they scored the same suite, with the same seeds and
the same metric identities. Every difference becomes a warning in the report; the delta table
is still written, so a reader sees both the numbers and why they may not be comparable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from eligen_bench.report.data import Run


def comparability_warnings(run: Run, other: Run) -> list[str]:
    """What makes `other`'s numbers not directly comparable with `run`'s."""
    name = other.name if other.name != run.name else str(other.path)
    found: list[str] = []
    if run.suite_hash != other.suite_hash:
        found.append(f"run {name}: suite hash {other.suite_hash} differs from this run's {run.suite_hash}")
    if (run.seeds, run.base_seed) != (other.seeds, other.base_seed):
        found.append(f"run {name}: seeds differ ({other.seeds} seeds from base {other.base_seed} vs "
                     f"{run.seeds} from base {run.base_seed})")
    if run.profile != other.profile:
        found.append(f"run {name}: profile {other.profile!r} differs from this run's {run.profile!r}")
    for label, info in run.metrics.items():
        theirs = other.metrics.get(label)
        if theirs is None:
            continue
        if info.key != theirs.key:
            found.append(f"run {name}: metric {label!r} has key {theirs.key} there and {info.key} here; "
                         "its values are not comparable")
        elif info.identity != theirs.identity:
            found.append(f"run {name}: metric {label!r} has the same key but a different identity")
        ours_keys, their_keys = _keys(run, label), _keys(other, label)
        if ours_keys and their_keys and ours_keys != their_keys and info.key == theirs.key:
            found.append(f"run {name}: metric {label!r} rows carry keys {sorted(their_keys)} there and "
                         f"{sorted(ours_keys)} here")
    only_here = sorted(set(run.metrics) - set(other.metrics))
    if only_here:
        found.append(f"run {name}: has no metric(s) {only_here}")
    return found


def configuration_differences(run: Run, other: Run) -> dict[str, list[str]]:
    """Generator labels of both runs that name different configurations, with what differs
    ('method flux there, eligen here', 'lora_scale: 0.5 there, 1.0 here')."""
    ours_all, theirs_all = run.config.get("generators", {}), other.config.get("generators", {})
    found: dict[str, list[str]] = {}
    for label in run.generators:
        ours, theirs = ours_all.get(label), theirs_all.get(label)
        if not isinstance(ours, dict) or not isinstance(theirs, dict) or ours == theirs:
            continue
        found[label] = _identity_differences(ours, theirs)
    return found


def _identity_differences(ours: dict, theirs: dict) -> list[str]:
    differences = []
    if ours.get("name") != theirs.get("name"):
        differences.append(f"method {theirs.get('name')} there, {ours.get('name')} here")
    for part in ("settings", "models"):
        mine, yours = ours.get(part) or {}, theirs.get(part) or {}
        if not isinstance(mine, dict) or not isinstance(yours, dict):
            continue
        for key in sorted(set(mine) | set(yours)):
            if mine.get(key, _ABSENT) != yours.get(key, _ABSENT):
                differences.append(f"{key}: {_shown(yours.get(key, _ABSENT))} there, {_shown(mine.get(key, _ABSENT))} here")
    known = {"name", "settings", "models"}
    for key in sorted((set(ours) | set(theirs)) - known):
        if ours.get(key) != theirs.get(key):
            differences.append(f"{key}: {_shown(theirs.get(key, _ABSENT))} there, {_shown(ours.get(key, _ABSENT))} here")
    return differences or ["identity differs"]


_ABSENT = object()


def _shown(value: object) -> str:
    if value is _ABSENT:
        return "(not set)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _keys(run: Run, label: str) -> set[str]:
    return set(run.scores.loc[run.scores["metric"] == label, "metric_key"]) - {""}


def comparable_metrics(run: Run, other: Run) -> set[str]:
    """Labels whose numbers can be compared: same suite, seeds, profile and metric key."""
    if (run.suite_hash, run.seeds, run.base_seed, run.profile) != (
            other.suite_hash, other.seeds, other.base_seed, other.profile):
        return set()
    return {label for label, info in run.metrics.items()
            if label in other.metrics and other.metrics[label].key == info.key}


def unmeasured_warnings(summary: pd.DataFrame, other_summary: pd.DataFrame, other_name: str) -> list[str]:
    """Cells both runs have but that cannot be compared because a mean is not finite (no valid
    values): said, so a gate that finds nothing to compare names the real reason."""
    means = {(r.generator, r.metric): r.mean for r in other_summary.itertuples(index=False)}
    found = []
    for row in summary.itertuples(index=False):
        theirs = means.get((row.generator, row.metric))
        if theirs is None or (math.isfinite(row.mean) and math.isfinite(theirs)):
            continue
        where = "in either run" if not math.isfinite(row.mean) and not math.isfinite(theirs) else \
            "here" if not math.isfinite(row.mean) else "there"
        found.append(f"run {other_name}: {row.generator} / {row.metric} has no valid value {where} "
                     "(no finite mean), so it is not compared")
    return found


def delta_table(summary: pd.DataFrame, other_summary: pd.DataFrame, other_name: str,
                comparable: set[str] | None = None,
                paired: dict[tuple[str, str], tuple[float, float]] | None = None,
                changed: Iterable[str] = ()) -> pd.DataFrame:
    """This run minus the other run per (generator, metric) both have.

    `paired` gives, per (generator, label), the interval of the difference under a shared layout
    resampling (`stats.paired_difference_interval`); `exceeds_ci` is True when that interval
    excludes 0. Cells without one (run-level statistics such as COCO AP) fall back to asking
    whether the other run's mean lies outside this run's own interval. `comparable` is False
    for labels outside `comparable` (all labels count as comparable when it is None);
    `same_configuration` is False for the generator labels in `changed`.
    """
    import pandas as pd

    paired = paired or {}
    changed = set(changed)
    theirs = {(r.generator, r.metric): r for r in other_summary.itertuples(index=False)}
    records = []
    for row in summary.itertuples(index=False):
        other = theirs.get((row.generator, row.metric))
        if other is None or not math.isfinite(row.mean) or not math.isfinite(other.mean):
            continue
        low, high = paired.get((row.generator, row.metric), (math.nan, math.nan))
        if math.isfinite(low):
            exceeds = not low <= 0.0 <= high
        else:
            exceeds = bool(math.isfinite(row.ci_low) and not row.ci_low <= other.mean <= row.ci_high)
        records.append({"other": other_name, "generator": row.generator, "metric": row.metric,
                        "this": row.mean, "other_mean": other.mean, "delta": row.mean - other.mean,
                        "delta_ci_low": low, "delta_ci_high": high,
                        "ci_low": row.ci_low, "ci_high": row.ci_high, "exceeds_ci": exceeds,
                        "comparable": comparable is None or row.metric in comparable,
                        "same_configuration": row.generator not in changed})
    return pd.DataFrame.from_records(records, columns=[
        "other", "generator", "metric", "this", "other_mean", "delta", "delta_ci_low", "delta_ci_high",
        "ci_low", "ci_high", "exceeds_ci", "comparable", "same_configuration"])


def regressions(deltas: pd.DataFrame, metrics: dict) -> pd.DataFrame:
    """Comparable cells where this run is worse than the other and the difference's interval
    excludes 0 (`delta_table`'s `exceeds_ci`). `metrics` maps labels to `MetricInfo`."""
    def worse(row) -> bool:
        info = metrics.get(row.metric)
        direction = 1.0 if info is None or info.higher_is_better else -1.0
        return bool(row.comparable and row.exceeds_ci and direction * row.delta < 0)

    return deltas[[worse(row) for row in deltas.itertuples(index=False)]] if len(deltas) else deltas


def ungated(deltas: pd.DataFrame) -> pd.DataFrame:
    """Comparable cells the gate cannot judge: neither a paired interval of the difference nor an
    interval of this run's own (run-level statistics such as COCO AP). Said, never passed silently."""
    if not len(deltas):
        return deltas
    return deltas[deltas["comparable"].astype(bool) & deltas["delta_ci_low"].isna() & deltas["ci_low"].isna()]


def unchecked_runs(deltas: pd.DataFrame, others: list[str], warnings: list[str]) -> list[str]:
    """For a regression gate that fails closed: one line per compared run that shares no
    comparable (generator, metric) cell with this run, with the first reason found."""
    found = []
    for name in others:
        cells = deltas[(deltas["other"] == name) & deltas["comparable"].astype(bool)] if len(deltas) else deltas
        if len(cells):
            continue
        reasons = [w for w in warnings if w.startswith(f"run {name}:")]
        because = reasons[0].split(": ", 1)[1] if reasons else "no generator and metric in common"
        found.append(f"run {name} shares no comparable generator and metric with this run ({because})")
    return found
