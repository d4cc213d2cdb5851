"""The report stage: tables, breakdowns, win rates, plots and a static leaderboard of a run.

`write_report(run_dir)` reads a run folder (manifest.json, suite.jsonl, images/, scores.parquet)
and writes everything under `run_dir/report/`.
"""

from eligen_bench.report.data import MetricInfo, Run, load_run
from eligen_bench.report.stats import BootstrapOptions, summarize, win_rates
from eligen_bench.report.write import Report, ReportOptions, build_report, save_report, write_report

__all__ = [
    "BootstrapOptions",
    "MetricInfo",
    "Report",
    "ReportOptions",
    "Run",
    "build_report",
    "load_run",
    "save_report",
    "summarize",
    "win_rates",
    "write_report",
]
