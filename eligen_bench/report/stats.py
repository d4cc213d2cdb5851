"""The numbers of a report: means with bootstrap intervals, breakdowns and win rates.

Entity-level metrics are averaged over every scored entity of the suite (the EliGen paper's
success rate "aggregated across all entities"), image-level metrics over every image. Rows
whose status is not 'ok' (excluded, unparsed, ...) or whose value is not finite never enter a
mean; they are counted instead. All reported values are multiplied by the metric's scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from eligen_bench.report.data import MetricInfo, Run

PREFERENCE_METRICS = ("pickscore", "mps")
"""Registered metric names whose pairwise win rates are reported (the paper's Table 2)."""


@dataclass(frozen=True)
class BootstrapOptions:
    """Percentile bootstrap over layouts."""

    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0


def valid_mask(scores: pd.DataFrame) -> pd.Series:
    """Rows that count: status 'ok' and a finite value."""
    return (scores["status"] == "ok") & np.isfinite(scores["value"].to_numpy(dtype=float))


def layout_weights(n_layouts: int, options: BootstrapOptions) -> np.ndarray:
    """How often each layout appears in each resample, shape (resamples, n_layouts).

    Drawn once per report from a fixed seed and shared by every generator and metric, so the
    intervals are reproducible and all cells see the same resampled suites.
    """
    if n_layouts == 0:
        return np.zeros((options.resamples, 0))
    rng = np.random.default_rng(options.seed)
    return rng.multinomial(n_layouts, np.full(n_layouts, 1.0 / n_layouts), size=options.resamples).astype(float)


def bootstrap_mean(sums: np.ndarray, counts: np.ndarray, weights: np.ndarray,
                   confidence: float) -> tuple[float, float, float]:
    """Pooled mean sum(sums)/sum(counts) and its percentile interval under layout resampling.

    `sums` and `counts` hold, per layout, the sum and number of valid values, so a layout with
    many entities weighs as much as its entities do, as in the pooled mean itself.
    """
    total = counts.sum()
    if total == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(sums.sum() / total)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (weights @ sums) / (weights @ counts)
    means = means[np.isfinite(means)]
    if means.size == 0:
        return mean, float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return mean, float(low), float(high)


def summarize(run: Run, options: BootstrapOptions | None = None) -> pd.DataFrame:
    """One row per (generator, metric label): mean, CI, n and counts of invalid rows.

    Columns: generator, metric, mean, ci_low, ci_high (scaled), strict_mean, strict_ci_low,
    strict_ci_high (scaled; unparsed rows count as 0, see `_strict_mean`), n (valid values), n_layouts
    (layouts with a valid value), n_rows, n_expected, n_excluded, n_unparsed, n_other_invalid.
    """
    import pandas as pd

    options = options or BootstrapOptions()
    layout_ids = [layout.id for layout in run.suite.layouts]
    weights = layout_weights(len(layout_ids), options)
    scores = run.scores.assign(_valid=valid_mask(run.scores))
    cells = dict(tuple(scores.groupby(["metric", "generator"], sort=False)))
    empty = scores.iloc[0:0]
    layouts = {layout.id: layout for layout in run.suite.layouts}
    records = []
    for label, info in run.metrics.items():
        aggregate = _aggregator(info.name)
        for generator in run.generators:
            rows = cells.get((label, generator), empty)
            good = rows[rows["_valid"]]
            sums, counts = per_layout(good, layout_ids)
            mean, low, high = bootstrap_mean(sums, counts, weights, options.confidence)
            # A run-level statistic sees every row of the cell: COCO AP counts the detections on
            # images without a scorable entity as false positives, as pycocotools does.
            run_level = aggregate(rows, layouts) if aggregate is not None and len(rows) else None
            if run_level is not None:  # a run-level statistic (COCO AP): no per-layout bootstrap
                mean, low, high = run_level, float("nan"), float("nan")
            status = rows["status"].value_counts()
            n_invalid = len(rows) - len(good)
            excluded, unparsed = int(status.get("excluded", 0)), int(status.get("unparsed", 0))
            strict = _strict_mean(rows, layout_ids, weights, options.confidence) if run_level is None \
                else (mean, low, high)
            records.append({
                "generator": generator, "metric": label,
                "mean": mean * info.scale, "ci_low": low * info.scale, "ci_high": high * info.scale,
                "strict_mean": strict[0] * info.scale, "strict_ci_low": strict[1] * info.scale,
                "strict_ci_high": strict[2] * info.scale,
                "n": len(good), "n_layouts": int((counts > 0).sum()), "n_rows": len(rows),
                "n_expected": expected_rows(run, info),
                "n_excluded": excluded, "n_unparsed": unparsed,
                "n_other_invalid": n_invalid - excluded - unparsed,
            })
    return pd.DataFrame.from_records(records, columns=[
        "generator", "metric", "mean", "ci_low", "ci_high", "strict_mean", "strict_ci_low", "strict_ci_high",
        "n", "n_layouts", "n_rows", "n_expected", "n_excluded", "n_unparsed", "n_other_invalid"])


def _strict_mean(rows: pd.DataFrame, layout_ids: Sequence[str], weights: np.ndarray,
                 confidence: float) -> tuple[float, float, float]:
    """The mean with every 'unparsed' row counted as 0 (a VLM answer nobody can read is not a
    success): the strict rate, beside the rate over parsed answers."""
    counted = rows[rows["_valid"] | (rows["status"] == "unparsed")]
    counted = counted.assign(value=counted["value"].where(counted["_valid"], 0.0))
    sums, counts = per_layout(counted, layout_ids)
    return bootstrap_mean(sums, counts, weights, confidence)


def _aggregator(name: str):  # noqa: ANN202 - a bound classmethod or None
    """The metric class's run-level `aggregate`, when its plugin is installed."""
    from eligen_bench import registry
    from eligen_bench.api.metric import Metric

    try:
        cls = registry.metric_class(name)
    except Exception:  # the report must work without the plugin that scored the rows
        return None
    # None unless the class overrides it: the base class's answer is always "average the rows"
    return cls.aggregate if cls.aggregate.__func__ is not Metric.aggregate.__func__ else None


def per_layout(valid_rows: pd.DataFrame, layout_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per layout (in `layout_ids` order): the sum and the number of the rows' values."""
    grouped = valid_rows.groupby("layout_id")["value"]
    sums = grouped.sum().reindex(layout_ids, fill_value=0.0).to_numpy(float)
    counts = grouped.count().reindex(layout_ids, fill_value=0).to_numpy(float)
    return sums, counts


def layout_sums(run: Run, label: str, generator: str, layout_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """`per_layout` of one (metric label, generator) cell's valid rows."""
    scores = run.scores
    rows = scores[(scores["metric"] == label) & (scores["generator"] == generator) & valid_mask(scores)]
    return per_layout(rows, layout_ids)


def paired_difference_interval(run: Run, other: Run, label: str, generator: str,
                               options: BootstrapOptions) -> tuple[float, float]:
    """Percentile interval (scaled) of mean(run) - mean(other) under one shared layout resampling.

    Both runs are resampled with the same layouts in each draw, so the interval reflects the
    difference between them on the same suite and seeds, not each run's own spread. NaN for
    metrics with a run-level `aggregate`.
    """
    if _aggregator(run.metrics[label].name) is not None:
        # A run-level statistic (COCO AP) is not a mean of per-layout values: an interval of the
        # per-image mean would test another quantity. No interval (the delta still is run-level).
        return float("nan"), float("nan")
    theirs = {layout.id for layout in other.suite.layouts}
    ids = [layout.id for layout in run.suite.layouts if layout.id in theirs]
    ours_sums, ours_counts = layout_sums(run, label, generator, ids)
    their_sums, their_counts = layout_sums(other, label, generator, ids)
    weights = layout_weights(len(ids), options)
    with np.errstate(invalid="ignore", divide="ignore"):
        diffs = (weights @ ours_sums) / (weights @ ours_counts) - (weights @ their_sums) / (weights @ their_counts)
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - options.confidence) / 2.0 * 100.0
    low, high = np.percentile(diffs, [tail, 100.0 - tail]) * run.metrics[label].scale
    return float(low), float(high)


def expected_rows(run: Run, info: MetricInfo) -> int:
    """Rows one generator should have for a metric once the run is complete."""
    per_seed = sum(len(layout.entities) for layout in run.suite.layouts) if info.level == "entity" \
        else len(run.suite.layouts)
    return per_seed * run.seeds


def entity_table(run: Run) -> pd.DataFrame:
    """Every entity of the suite: layout_id, entity_index, category, n_entities."""
    import pandas as pd

    records = [
        {"layout_id": layout.id, "entity_index": i, "category": entity.category or "(none)",
         "n_entities": len(layout.entities)}
        for layout in run.suite.layouts for i, entity in enumerate(layout.entities)
    ]
    return pd.DataFrame.from_records(records, columns=["layout_id", "entity_index", "category", "n_entities"])


def breakdown_by_entities(run: Run) -> pd.DataFrame:
    """Mean (scaled) and n per metric, generator and number of entities in the layout."""
    scores = run.scores[valid_mask(run.scores)].copy()
    scores["n_entities"] = scores["layout_id"].map(run.entity_counts())
    return _grouped_means(scores, run, "n_entities", list(run.metrics))


def breakdown_by_category(run: Run) -> pd.DataFrame:
    """Mean (scaled) and n per entity-level metric, generator and entity category."""
    scores = run.scores[valid_mask(run.scores) & (run.scores["entity_index"] >= 0)]
    scores = scores.merge(entity_table(run), on=["layout_id", "entity_index"], how="inner")
    labels = [label for label, info in run.metrics.items() if info.level == "entity"]
    return _grouped_means(scores, run, "category", labels)


def _grouped_means(scores: pd.DataFrame, run: Run, by: str, labels: Sequence[str]) -> pd.DataFrame:
    """Mean (scaled) and n of valid values per metric label, generator and `by`."""
    import pandas as pd

    parts = []
    for label in labels:
        rows = scores[scores["metric"] == label]
        grouped = rows.groupby(["generator", by])["value"].agg(["mean", "count"]).reset_index()
        grouped["mean"] *= run.metrics[label].scale
        grouped.insert(0, "metric", label)
        parts.append(grouped.rename(columns={"count": "n"}))
    columns = ["metric", "generator", by, "mean", "n"]
    if not parts:
        return pd.DataFrame(columns=columns)
    return _order(pd.concat(parts, ignore_index=True)[columns], run, [by])


def _order(table: pd.DataFrame, run: Run, last: list[str]) -> pd.DataFrame:
    """Sort rows by the manifest's metric and generator order, then by `last`."""
    metric_rank = {label: i for i, label in enumerate(run.metrics)}
    generator_rank = {name: i for i, name in enumerate(run.generators)}
    table = table.assign(_m=table["metric"].map(metric_rank), _g=table["generator"].map(generator_rank))
    return table.sort_values(["_m", "_g", *last]).drop(columns=["_m", "_g"]).reset_index(drop=True)


def preference_probability(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """softmax([ours, theirs])[0] per pair: how PickScore's and MPS's own code turn two scores of
    one prompt into a preference (yuvalkirstain/PickScore@f79607f README.md `calc_probs`;
    Kwai-Kolors/MPS@be9027f eval_overall_mps_on_hpdv2.py `infer_example`: both
    `torch.softmax(scores, dim=-1)` over the images' logit-scaled scores)."""
    return 1.0 / (1.0 + np.exp(np.clip(theirs - ours, -700.0, 700.0)))


WIN_COLUMNS = ["generator", "opponent", "wins", "ties", "losses", "n", "win_rate", "preference"]


def win_rates(scores: pd.DataFrame, metric: str, *, higher_is_better: bool = True,
              generators: Sequence[str] | None = None, preference: bool = False) -> pd.DataFrame:
    """Pairwise comparisons of image-level scores on the same (layout, seed).

    Two numbers per ordered pair, over the images both generators have a valid value for:
    `win_rate`, the binary win rate (a strictly better value wins, a tie counts half), and, when
    `preference` is set (preference models, whose scores are logits), `preference`, the mean
    preference probability softmax([ours, theirs])[0] (`preference_probability`); NaN otherwise.
    The EliGen paper's Table 2 caption calls its values "the win rate in pairwise comparisons",
    its text (Sec. 5.2) "the probability of humans favoring one image over another" and
    "preference probability"; its evaluation code is not published, so both are reported.
    Returns one row per ordered pair: `WIN_COLUMNS` (rates 0..1, NaN when n is 0).
    """
    import pandas as pd

    rows = scores[(scores["metric"] == metric) & (scores["entity_index"] < 0) & valid_mask(scores)]
    table = rows.pivot_table(index=["layout_id", "seed_index"], columns="generator", values="value",
                             aggfunc="mean")
    names = list(generators) if generators is not None else list(table.columns)
    records = []
    for generator in names:
        for opponent in names:
            if opponent == generator:
                continue
            ours, theirs = _paired_values(table, generator, opponent)
            records.append(_pair_record(generator, opponent, ours, theirs, higher_is_better, preference))
    return pd.DataFrame.from_records(records, columns=WIN_COLUMNS)


def _paired_values(table: pd.DataFrame, generator: str, opponent: str) -> tuple[np.ndarray, np.ndarray]:
    if generator not in table.columns or opponent not in table.columns:
        return np.zeros(0), np.zeros(0)
    both = table[[generator, opponent]].dropna()
    return both[generator].to_numpy(float), both[opponent].to_numpy(float)


def _pair_record(generator: str, opponent: str, ours: np.ndarray, theirs: np.ndarray,
                 higher_is_better: bool, preference: bool) -> dict[str, object]:
    diff = ours - theirs if higher_is_better else theirs - ours
    wins, ties, n = int((diff > 0).sum()), int((diff == 0).sum()), int(diff.size)
    prob = float(preference_probability(ours, theirs).mean()) if preference and higher_is_better and n \
        else float("nan")
    return {"generator": generator, "opponent": opponent, "wins": wins, "ties": ties,
            "losses": n - wins - ties, "n": n, "win_rate": (wins + 0.5 * ties) / n if n else float("nan"),
            "preference": prob}


def win_rate_metrics(run: Run, *, all_image_metrics: bool = False) -> list[str]:
    """Labels that get a win-rate table: preference metrics, or every image-level metric."""
    return [label for label, info in run.metrics.items()
            if info.level == "image" and (all_image_metrics or info.name in PREFERENCE_METRICS)]


def all_win_rates(run: Run, labels: Sequence[str]) -> pd.DataFrame:
    """Win rates of every label in `labels`, stacked, with a 'metric' column first."""
    import pandas as pd

    parts = []
    for label in labels:
        info = run.metrics[label]
        table = win_rates(run.scores, label, higher_is_better=info.higher_is_better,
                          generators=run.generators, preference=info.name in PREFERENCE_METRICS)
        table.insert(0, "metric", label)
        parts.append(table)
    if not parts:
        return pd.DataFrame(columns=["metric", *WIN_COLUMNS])
    return pd.concat(parts, ignore_index=True)
