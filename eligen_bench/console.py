"""What a command shows on the terminal: quiet by default, details with `-v`.

By default a run prints one progress bar per stage and a short summary; the INFO logs,
progress bars and Python warnings of the model libraries (transformers, diffusers,
ultralytics, open_clip, huggingface_hub) are silenced, and the project's own warnings still
show. `-v` restores every library's own output and the project's INFO log; `-vv` adds DEBUG.
Nothing here imports a model library: they read the environment variables set here when
they are imported later, and `quiet_loaded_libraries` handles the ones already imported.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

LIBRARIES = ("transformers", "diffusers", "ultralytics", "open_clip", "huggingface_hub", "timm",
             "accelerate", "torch", "torchvision", "PIL", "matplotlib", "urllib3", "filelock")
QUIET_ENVIRONMENT = {
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "YOLO_VERBOSE": "False",
}
_state = {"verbose": 0}


def configure(verbose: int = 0) -> None:
    """Set up logging for a command; called once per command before any model library loads."""
    _state["verbose"] = verbose
    level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    project = logging.getLogger("eligen_bench")
    project.setLevel(level)
    if verbose:
        root.setLevel(level)
        return
    # Libraries that log to the root logger (open_clip) or their own: only errors reach the terminal.
    root.setLevel(logging.ERROR)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    pattern = r"(" + "|".join(LIBRARIES) + r")(\.|$)"
    warnings.filterwarnings("ignore", module=pattern)
    warnings.filterwarnings("ignore", category=FutureWarning)
    quiet_loaded_libraries(before_loading=False)


def verbose() -> int:
    return _state["verbose"]


def quiet_loaded_libraries(*, before_loading: bool = True) -> None:
    """Switch off the progress bars and logs of model libraries already imported.

    diffusers does not read an environment variable for its progress bars, so a stage calls
    this right before it loads a model (`before_loading`: import diffusers now, as loading the
    model would anyway).
    """
    if _state["verbose"]:
        return
    for name in ("diffusers", "transformers"):
        if name in sys.modules or before_loading and name == "diffusers" and _installed(name):
            try:
                module = __import__(f"{name}.utils.logging", fromlist=["logging"])
            except Exception:  # a broken optional library must not stop the run
                continue
            module.set_verbosity_error()
            module.disable_progress_bar()


def _installed(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None


def stage_bar(stage: str, total: int, kept: int, *, enabled: bool = True, unit: str = "img") -> Any:
    """One progress bar for a whole stage: items done of all, kept from before, rate, time left."""
    from tqdm import tqdm

    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()

    class StageBar(tqdm):
        def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
            # Into a log file (no terminal) a new description waits for the next timed refresh.
            super().set_description(desc, refresh=refresh and tty)

    bar = StageBar(total=total, initial=kept, desc=f"{stage}: ", unit=unit, disable=not enabled or total == 0,
                mininterval=0.5 if tty else 30.0, dynamic_ncols=True,
                bar_format="{desc}{n_fmt}/{total_fmt} {unit} (" + f"{kept} kept from before"
                           + ") |{bar:20}| {rate_fmt}, {remaining} left")
    return bar


def print_summary(report: Any, written: list[Any]) -> None:
    """The end of a report: the main table with its intervals, the notes, the regression gate's
    delta table and verdict when runs were compared, and last where the report is."""
    from eligen_bench.report.gate import table_lines
    from eligen_bench.report.tables import text_table
    from eligen_bench.report.write import main_table

    intervals = "brackets" if report.options.intervals == "none" else report.options.intervals
    table = main_table(report, intervals=intervals)
    rows = [[name, *(f"{c.text} {c.extra}".rstrip() for c in cells)] for name, cells in table.rows]
    for line in text_table([table.corner, *table.headers], rows):
        print(line)
    print(f"({report.options.confidence:.0%} bootstrap intervals over layouts)")
    print_levels_and_reference(report)
    for note in report.notes:
        print(f"note: {note}")
    if report.verdict is not None:
        for line in table_lines(report.verdict, report.options.decimals):
            print(line)
    by_name = {path.name: path for path in written}
    if "index.html" in by_name:
        folder = by_name["index.html"].parent
        shown = [n for n in ("table.md", "table.tex", "results.json", "verdict.json") if n in by_name]
        print(f"report: {by_name['index.html']} ({', '.join(shown)} and more in {folder})")


def print_levels_and_reference(report: Any) -> None:
    """MIG-Bench's per-level table and the published-vs-this-run table, when the report has them."""
    from eligen_bench.report.tables import text_table

    levels = getattr(report, "levels", None)
    if levels is not None and len(levels):
        from eligen_bench.report.levels import text_tables

        for title, headers, rows in text_tables(levels):
            print()
            print(title)
            for line in text_table(headers, rows):
                print(line)
    compared = getattr(report, "reference", None)
    if compared is not None and len(compared):
        print()
        print("published vs this run:")
        rows = [[r.generator, str(r.reference_model), r.reference_column, f"{r.published:.2f}", f"{r.ours:.2f}",
                 f"{r.delta:+.2f}", r.reference] for r in compared.itertuples(index=False)]
        for line in text_table(["generator", "row", "column", "published", "ours", "delta", "file"], rows):
            print(line)
