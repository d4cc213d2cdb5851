"""The regression gate: a verdict on this run against earlier runs, for people and for CI.

Every (other run, generator label, metric label) that both runs hold is one comparison. A
comparison is gated when its numbers are comparable (same suite, seeds, profile and metric
key), its label names the same configuration in both runs (or `--gate-changed` names it), its
metric is among `--gate-metrics`, and its difference has an interval. Its result:

- regressed: the interval of the difference (this run minus the other, signed so that positive
  is better) lies entirely below -margin: this run is worse, and by more than the margin;
- worse within margin: the interval lies below 0 but reaches above -margin;
- improved: the interval lies entirely above 0;
- no significant change: otherwise.

The verdict is FAIL when any comparison regressed, PASS when some were gated and none
regressed, and UNCHECKED when nothing could be gated (the gate fails closed). The interval is
the paired bootstrap interval of the difference (both runs resampled with the same layouts);
where a statistic has none but this run's own interval exists, that interval shifted by the
other run's mean stands in (said in each comparison). Margins are in the table's units (points
of a percentage for metrics shown in %).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from eligen_bench.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from eligen_bench.report.data import MetricInfo

RULE = ("regressed when the confidence interval of the difference (this run - other run, signed so that "
        "positive is better) lies entirely below -margin; improved when it lies entirely above 0; "
        "FAIL when any gated comparison regressed")
REGRESSED, WITHIN_MARGIN, IMPROVED, UNCHANGED, NOT_GATED = (
    "regressed", "worse within margin", "improved", "no significant change", "not gated")
PASS, FAIL, UNCHECKED = "PASS", "FAIL", "UNCHECKED"
ALL = "all"


@dataclass(frozen=True)
class GateOptions:
    """What the gate judges and how."""

    margins: Mapping[str, float] = field(default_factory=dict)
    """Per metric label or registered metric name: a drop smaller than this never fails."""
    metrics: tuple[str, ...] | None = None
    """Metric labels or registered names to gate; None: every metric."""
    changed: tuple[str, ...] = ()
    """Generator labels gated even where they name another configuration in the other run
    ('all': every label)."""
    enforced: bool = False
    """`--fail-on-regression`: the verdict sets the exit code."""


def parse_margins(text: str | None, metrics: Mapping[str, MetricInfo]) -> dict[str, float]:
    """`miou=1.0,pickscore=0.05` -> {key: margin}; a key is a metric label or registered name."""
    from eligen_bench.configurations import split_name
    from eligen_bench.specs import split_list

    margins: dict[str, float] = {}
    for item in split_list(text or ""):
        key, sep, value = split_name(item)
        if not sep:
            raise InputError(f"{item!r} is not metric=margin", field="--margin")
        _check_metric_key(key, metrics, "--margin")
        try:
            margin = float(value)
        except ValueError:
            raise InputError(f"margin of {key!r} must be a number, got {value!r}", field="--margin") from None
        if not math.isfinite(margin) or margin < 0:
            raise InputError(f"margin of {key!r} must be a finite number >= 0, got {value!r}", field="--margin")
        margins[key] = margin
    return margins


def parse_gate_metrics(text: str | None, metrics: Mapping[str, MetricInfo]) -> tuple[str, ...] | None:
    from eligen_bench.specs import split_list

    if not text:
        return None
    chosen = tuple(split_list(text))
    for key in chosen:
        _check_metric_key(key, metrics, "--gate-metrics")
    return chosen


def parse_changed(text: str | None, generators: Sequence[str]) -> tuple[str, ...]:
    from eligen_bench.specs import split_list

    chosen = tuple(split_list(text or ""))
    unknown = [label for label in chosen if label != ALL and label not in generators]
    if unknown:
        raise InputError(f"no generator label(s) {unknown} in this run; labels: {', '.join(generators)}",
                         field="--gate-changed")
    return chosen


def _check_metric_key(key: str, metrics: Mapping[str, MetricInfo], option: str) -> None:
    if key not in metrics and key not in {info.name for info in metrics.values()}:
        raise InputError(f"no metric label or name {key!r} in this run; labels: {', '.join(metrics)}", field=option)


def _applies(key_set: Sequence[str] | Mapping[str, Any], info: MetricInfo) -> str | None:
    """The key (label first, then registered name) under which `info` appears in `key_set`."""
    if info.label in key_set:
        return info.label
    return info.name if info.name in key_set else None


@dataclass
class Comparison:
    """One (other run, generator, metric) cell and what the gate made of it."""

    other: str
    generator: str
    metric: str
    this: float
    other_mean: float
    difference: float
    interval: list[float | None]
    interval_kind: str
    """'paired' (the difference's own), 'this run' (this run's interval minus the other's mean) or ''."""
    higher_is_better: bool
    margin: float
    result: str
    reason: str = ""


@dataclass
class Verdict:
    """The gate's answer; `to_json` is `report/verdict.json`."""

    verdict: str
    comparisons: list[Comparison]
    options: GateOptions
    confidence: float
    others: list[str]
    configurations: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """Per other run: generator labels that name another configuration there, with what differs."""
    unchecked: list[str] = field(default_factory=list)
    """Compared runs that share nothing comparable with this run, with the reason."""

    @property
    def gated(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.result != NOT_GATED]

    @property
    def regressions(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.result == REGRESSED]

    def line(self, decimals: int = 2) -> str:
        """`regression gate: PASS (12 comparisons, 0 regressions)` or FAIL naming each regression."""
        gated, worse = len(self.gated), self.regressions
        head = f"regression gate: {self.verdict} ({gated} comparison{'s' if gated != 1 else ''}, " \
               f"{len(worse)} regression{'s' if len(worse) != 1 else ''}"
        if worse:
            head += ": " + "; ".join(
                f"{c.metric} {c.generator} {_signed(c.difference, decimals)} {_interval(c.interval, decimals)} "
                f"vs {c.other}" + (f" (margin {c.margin:g})" if c.margin else "") for c in worse)
        elif self.verdict == UNCHECKED:
            head += "; nothing could be gated: " + (self.unchecked[0] if self.unchecked else "see the table")
        return head + ")"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1, "verdict": self.verdict, "enforced": self.options.enforced,
            "rule": RULE, "confidence": self.confidence,
            "margins": dict(self.options.margins), "gate_metrics": list(self.options.metrics or [ALL]),
            "gate_changed": list(self.options.changed), "compared_with": self.others,
            "comparisons_gated": len(self.gated), "regressions": len(self.regressions),
            "configurations": self.configurations, "unchecked": self.unchecked,
            "comparisons": [_comparison_json(c) for c in self.comparisons],
        }


def _comparison_json(c: Comparison) -> dict[str, Any]:
    data = asdict(c)
    for key in ("this", "other_mean", "difference"):
        data[key] = _number(data[key])
    data["interval"] = [_number(v) for v in c.interval]
    return data


def _number(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def evaluate(deltas: pd.DataFrame, metrics: Mapping[str, MetricInfo], options: GateOptions, *,
             confidence: float, others: Sequence[str],
             configurations: Mapping[str, Mapping[str, list[str]]] | None = None,
             warnings: Sequence[str] = ()) -> Verdict:
    """The verdict on a delta table (`compare.delta_table` rows of every compared run);
    `warnings` give the reason a compared run shares nothing comparable."""
    from eligen_bench.report.compare import unchecked_runs

    configurations = {k: dict(v) for k, v in (configurations or {}).items()}
    comparisons = [_judge(row, metrics, options, configurations.get(row.other, {}))
                   for row in deltas.itertuples(index=False)]
    verdict = Verdict(UNCHECKED, comparisons, options, confidence, list(others), configurations,
                      unchecked_runs(deltas, list(others), list(warnings)))
    if verdict.regressions:
        verdict.verdict = FAIL
    elif verdict.gated and not verdict.unchecked:
        verdict.verdict = PASS
    return verdict


def _judge(row: Any, metrics: Mapping[str, MetricInfo], options: GateOptions,
           changed: Mapping[str, list[str]]) -> Comparison:
    info = metrics.get(row.metric)
    higher = True if info is None else info.higher_is_better
    margin_key = _applies(options.margins, info) if info is not None else None
    margin = float(options.margins[margin_key]) if margin_key else 0.0
    low, high, kind = _difference_interval(row)
    comparison = Comparison(row.other, row.generator, row.metric, row.this, row.other_mean, row.delta,
                            [_number(low), _number(high)], kind, higher, margin, NOT_GATED)
    reason = _not_gated(row, info, options, changed, kind)
    if reason:
        comparison.reason = reason
        return comparison
    better_low, better_high = (low, high) if higher else (-high, -low)
    if better_high < 0:
        comparison.result = REGRESSED if better_high < -margin else WITHIN_MARGIN
    elif better_low > 0:
        comparison.result = IMPROVED
    else:
        comparison.result = UNCHANGED
    return comparison


def _not_gated(row: Any, info: MetricInfo | None, options: GateOptions, changed: Mapping[str, list[str]],
               kind: str) -> str:
    if not bool(row.comparable):
        return "not comparable (other suite, seeds, profile or metric key: see the warnings)"
    if row.generator in changed and ALL not in options.changed and row.generator not in options.changed:
        return "the label names another configuration there (" + "; ".join(changed[row.generator]) + \
               "); --gate-changed gates it"
    if options.metrics is not None and (info is None or _applies(options.metrics, info) is None):
        return "not among --gate-metrics"
    if not kind:
        return "a run-level statistic without an interval"
    return ""


def _difference_interval(row: Any) -> tuple[float, float, str]:
    """The paired interval of the difference, else this run's interval minus the other's mean."""
    if math.isfinite(row.delta_ci_low) and math.isfinite(row.delta_ci_high):
        return float(row.delta_ci_low), float(row.delta_ci_high), "paired"
    if math.isfinite(row.ci_low) and math.isfinite(row.ci_high):
        return float(row.ci_low - row.other_mean), float(row.ci_high - row.other_mean), "this run"
    return math.nan, math.nan, ""


def _signed(value: float, decimals: int) -> str:
    return f"{value:+.{decimals}f}" if math.isfinite(value) else "–"


def _interval(interval: Sequence[float | None], decimals: int) -> str:
    low, high = interval
    if low is None or high is None:
        return "(no interval)"
    return f"[{low:+.{decimals}f}, {high:+.{decimals}f}]"


def table_lines(verdict: Verdict, decimals: int = 2) -> list[str]:
    """The delta table in plain text, one block per compared run, then the verdict line."""
    from eligen_bench.report.tables import text_table

    lines: list[str] = []
    level = f"{verdict.confidence:.0%}"
    for other in verdict.others:
        rows = [c for c in verdict.comparisons if c.other == other]
        lines.append(f"this run vs {other}:")
        body = [[c.metric, c.generator, _plain(c.this, decimals), _plain(c.other_mean, decimals),
                 _signed(c.difference, decimals),
                 _interval(c.interval, decimals) + (" (this run's)" if c.interval_kind == "this run" else ""),
                 c.result + (f" (margin {c.margin:g})" if c.margin and c.result != NOT_GATED else "")
                 + (f": {c.reason}" if c.reason else "")] for c in rows]
        lines += text_table(["metric", "label", "this run", other, "difference", f"{level} paired interval",
                             "gate"], body) if body else ["  (no generator and metric in common)"]
    lines.append(verdict.line(decimals))
    return lines


def _plain(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}" if math.isfinite(value) else "–"
