"""`report/results.json`: a run's results in one machine-readable file.

Modelled on the one results file EleutherAI/lm-evaluation-harness writes per run
(`lm_eval/loggers/evaluation_tracker.py`, `EvaluationTracker.save_results_aggregated`: results,
configuration, versions and sample counts in one JSON): the configuration (suite, sample, seeds,
generators, metrics), the versions, per generator and metric label the mean, its interval and
its counts, and the references the defaults follow.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eligen_bench.report.write import Report

FORMAT = 1


def results_document(report: Report) -> dict[str, Any]:
    """The whole document; numbers that are not finite are null."""
    run, view, options = report.run, report.view, report.options
    manifest = run.manifest
    return {
        "format": FORMAT,
        "run": run.name,
        "profile": run.profile,
        "created": manifest.get("created"),
        "versions": {"eligen_bench": manifest.get("eligen_bench_version"), "code": manifest.get("code_version"),
                     "packages": manifest.get("packages", {})},
        "config": {
            "suite": {"name": run.suite.name, "version": run.suite.version, "hash": run.suite_hash,
                      "layouts": len(run.suite.layouts), "notes": list(run.suite.notes)},
            "sample": manifest.get("sample"),
            "seeds": run.seeds, "base_seed": run.base_seed,
            "generators": {g: {"display_name": view.generator(g), **run.config.get("generators", {}).get(g, {})}
                           for g in view.generators},
            "metrics": {m: {"display_name": view.metric(m), **run.config.get("metrics", {}).get(m, {})}
                        for m in view.metrics},
        },
        "statistics": {"mean": "of valid values x scale; entity-level metrics over all entities, image-level "
                               "over all images",
                       "interval": f"{options.confidence:.0%} percentile bootstrap over layouts",
                       "resamples": options.bootstrap_resamples, "bootstrap_seed": options.bootstrap_seed},
        "results": _results(report),
        "references": {"generators": manifest.get("references", {}),
                       "metrics": {m: run.config.get("metrics", {}).get(m, {}).get("reference", "")
                                   for m in view.metrics}},
        "warnings": report.warnings,
        "notes": report.notes,
    }


def _results(report: Report) -> dict[str, dict[str, Any]]:
    by_key = {(r.generator, r.metric): r for r in report.summary.itertuples(index=False)}
    results: dict[str, dict[str, Any]] = {}
    for generator in report.view.generators:
        cells = {}
        for metric in report.view.metrics:
            row = by_key.get((generator, metric))
            if row is None:
                continue
            cell = {"mean": _number(row.mean), "ci_low": _number(row.ci_low), "ci_high": _number(row.ci_high),
                    "n": int(row.n), "n_layouts": int(row.n_layouts), "n_rows": int(row.n_rows),
                    "n_expected": int(row.n_expected), "n_excluded": int(row.n_excluded),
                    "n_unparsed": int(row.n_unparsed), "n_other_invalid": int(row.n_other_invalid)}
            if row.n_unparsed or report.run.metrics[metric].name == "vlm_success":
                cell.update(strict_mean=_number(row.strict_mean), strict_ci_low=_number(row.strict_ci_low),
                            strict_ci_high=_number(row.strict_ci_high))
            cells[metric] = cell
        results[generator] = cells
    return results


def _number(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
