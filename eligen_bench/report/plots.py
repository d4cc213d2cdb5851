"""Figures: one bar chart per metric (CI error bars), one metric-vs-entity-count chart per metric.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no global
backend switch) and rendered to PNG (for the page), PDF and SVG (for papers), written
atomically by the caller. Warnings and notes belong to the page that shows the figures, once;
a figure carries only the tiny-profile mark, so that a figure copied out of the report cannot
be mistaken for real results. Renders are reproducible: no dates in the PDF or SVG metadata.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from eligen_bench.report.data import MetricInfo

FORMATS = ("png", "pdf", "svg")
_METADATA = {"png": {}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}


def plot_name(prefix: str, label: str, extension: str = "png") -> str:
    """A safe file name for a metric label, e.g. 'bar_vlm_success_judge_qwen2vl_.png'."""
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9._-]', '_', label)}.{extension}"


def _figure(mark: str = "", width: float = 6.0, height: float = 4.0):  # -> Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    if mark:
        figure.text(0.5, 0.005, mark, ha="center", va="bottom", fontsize=7, color="darkred")
    return figure


def render(figure, extension: str) -> bytes:  # noqa: ANN001 - a matplotlib Figure
    """The figure as PNG, PDF or SVG bytes (the same bytes for the same figure)."""
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "eligen-bench", "svg.fonttype": "none", "pdf.fonttype": 42}):
        figure.savefig(buffer, format=extension, metadata=_METADATA[extension])
    return buffer.getvalue()


def text(value: str) -> str:
    """A label as matplotlib shows it literally: a '$' would start math mode."""
    return str(value).replace("$", r"\$")


def _ylabel(info: MetricInfo, name: str) -> str:
    return text(f"{name}{' (%)' if info.scale == 100 and '%' not in name else ''} {info.arrow}")


def bar_chart(summary: pd.DataFrame, info: MetricInfo, generators: Sequence[str], *, mark: str = "",
              names: Sequence[str] | None = None, title: str | None = None, confidence: float = 0.95):
    """Mean per generator with its bootstrap interval as error bars; returns the figure."""
    rows = summary[summary["metric"] == info.label].set_index("generator").reindex(list(generators))
    means = rows["mean"].to_numpy(dtype=float)
    low = (means - rows["ci_low"].to_numpy(dtype=float))
    high = (rows["ci_high"].to_numpy(dtype=float) - means)
    errors = [[x if math.isfinite(x) else 0.0 for x in low], [x if math.isfinite(x) else 0.0 for x in high]]
    figure = _figure(mark)
    axes = figure.add_subplot(1, 1, 1)
    positions = list(range(len(generators)))
    axes.bar(positions, [m if math.isfinite(m) else 0.0 for m in means], yerr=errors, capsize=4,
             color="#4c72b0")
    axes.set_xticks(positions, [text(n) for n in names or generators], rotation=20, ha="right")
    name = title or info.label
    axes.set_ylabel(_ylabel(info, name))
    axes.set_title(text(f"{name} ({confidence:.0%} bootstrap CI over layouts)"), fontsize=9)
    figure.tight_layout(rect=(0, 0.03 if mark else 0, 1, 1))
    return figure


def entity_count_chart(breakdown: pd.DataFrame, info: MetricInfo, generators: Sequence[str], *, mark: str = "",
                       names: Sequence[str] | None = None, title: str | None = None):
    """Mean per number of entities in the layout, one line per generator; returns the figure."""
    rows = breakdown[breakdown["metric"] == info.label]
    figure = _figure(mark)
    axes = figure.add_subplot(1, 1, 1)
    for generator, shown in zip(generators, names or generators, strict=True):
        line = rows[rows["generator"] == generator].sort_values("n_entities")
        if len(line):
            axes.plot(line["n_entities"], line["mean"], marker="o", label=text(shown))
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("entities in the layout")
    name = title or info.label
    axes.set_ylabel(_ylabel(info, name))
    axes.set_title(text(f"{name} by number of entities"), fontsize=9)
    if len(rows):
        axes.legend(fontsize=7)
    figure.tight_layout(rect=(0, 0.03 if mark else 0, 1, 1))
    return figure
