"""The DEIG paper's Table 3 (InstDiff-Bench) from three run folders.

InstDiff-Bench is three suites, so three runs: the colour suite scored with the attribute
metrics (Acc colour, CLIP colour), the texture suite with the same metrics (Acc texture, CLIP
texture), and the attribute-free suite with YOLOv8m-seg AP and AP50 ("primarily on
in-distribution instance captions", DEIG appendix). `instdiff_table` reads each run's report
summary and lays the numbers out in Table 3's columns and units, those of
``results/reference/deig_table3.csv``: accuracies in %, regional CLIP as a cosine, AP and AP50 as
fractions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from eligen_bench.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from eligen_bench.report.data import MetricInfo, Run

COLUMNS = ("acc_color", "clip_color", "acc_texture", "clip_texture", "ap", "ap50")
DIGITS = {"acc_color": 1, "clip_color": 3, "acc_texture": 1, "clip_texture": 3, "ap": 2, "ap50": 2}
"""Decimals as Table 3 prints them."""


def column_of(info: MetricInfo, attribute: str) -> str | None:
    """The Table 3 column a metric label of a run on the `attribute` suite fills, if any."""
    if info.name == "instdiff_attribute_acc" and attribute in ("color", "texture"):
        return f"acc_{attribute}"
    if info.name == "instdiff_regional_clip" and attribute in ("color", "texture"):
        return f"clip_{attribute}"
    if info.name == "instdiff_ap" and info.options.get("iou_type", "bbox") == "bbox":
        return {"AP": "ap", "AP50": "ap50"}.get(str(info.options.get("stat", "AP")))
    return None


def suite_attribute(run: Run) -> str:
    """'color', 'texture' or 'none' from the instance captions' first words ('mixed' otherwise)."""
    from eligen_bench.suites.instdiff_bench import COLORS, TEXTURES

    words = {e.prompt.split(" ")[0] for layout in run.suite.layouts for e in layout.entities}
    if words and words <= set(COLORS):
        return "color"
    if words and words <= set(TEXTURES):
        return "texture"
    return "none" if not words & (set(COLORS) | set(TEXTURES)) else "mixed"


def instdiff_table(runs: Mapping[str, Path]) -> tuple[pd.DataFrame, list[str]]:
    """One row per generator, Table 3's columns; `runs` maps 'color' / 'texture' / 'ap' to run
    folders (any may be missing: its columns stay empty). Returns the table and warnings."""
    import pandas as pd

    from eligen_bench.report.data import load_run
    from eligen_bench.report.stats import summarize

    values: dict[str, dict[str, float]] = {}
    warnings: list[str] = []
    for role, path in runs.items():
        run = load_run(path)
        attribute = suite_attribute(run)
        expected = {"color": "color", "texture": "texture", "ap": "none"}[role]
        if attribute != expected:
            message = f"{path}: its suite's instance captions are {attribute!r}, the {role} columns expect {expected!r}"
            if role != "ap":
                raise InputError(message, field=f"--{role}")
            warnings.append(message)  # AP on an attribute suite is a deviation, not an error
        warnings += [f"{path}: {w}" for w in run.warnings]
        summary = summarize(run)
        found = False
        for record in summary.itertuples(index=False):
            info = run.metrics.get(record.metric)
            column = column_of(info, attribute if role != "ap" else "none") if info is not None else None
            if column is None or (role == "ap") != column.startswith("ap"):
                continue
            values.setdefault(record.generator, {})[column] = float(record.mean)
            found = True
        if not found:
            warnings.append(f"{path}: no metric of the {role} columns (instdiff_attribute_acc, "
                            "instdiff_regional_clip or instdiff_ap) was scored")
    table = pd.DataFrame.from_records(
        [{"model": g, **{c: v.get(c, math.nan) for c in COLUMNS}} for g, v in values.items()],
        columns=["model", *COLUMNS])
    return table, warnings


def markdown(table: pd.DataFrame, reference: pd.DataFrame | None = None) -> str:
    """Table 3 as Markdown: this run's rows, then the published ones (if given)."""
    header = "| model | Acc colour (%) | CLIP colour | Acc texture (%) | CLIP texture | AP | AP50 |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]

    def line(name: str, row: Mapping[str, float]) -> str:
        cells = ["" if not math.isfinite(row[c]) else f"{row[c]:.{DIGITS[c]}f}" for c in COLUMNS]
        return f"| {name} | " + " | ".join(cells) + " |"

    for record in table.to_dict("records"):
        lines.append(line(f"{record['model']} (this run)", record))
    if reference is not None:
        for name, record in reference.iterrows():
            lines.append(line(f"{name} (published)", {c: float(record.get(c, math.nan)) for c in COLUMNS}))
    return "\n".join(lines) + "\n"
