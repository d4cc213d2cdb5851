"""Figures: one bar chart per metric (CI error bars), one metric-vs-entity-count chart per metric.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no global
backend switch), rendered to PNG bytes, and written atomically by the caller. Warnings (the
tiny-profile one) are printed into every figure so a plot cannot be mistaken for real results.
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


def plot_name(prefix: str, label: str) -> str:
    """A safe file name for a metric label, e.g. 'bar_vlm_success_judge_qwen2vl_.png'."""
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9._-]', '_', label)}.png"


def _figure(warnings: Sequence[str], width: float = 6.0, height: float = 4.0):  # -> Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    if warnings:
        figure.text(0.5, 0.99, "WARNING: " + "; ".join(warnings), ha="center", va="top", fontsize=7,
                    color="darkred", wrap=True)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def bar_chart(summary: pd.DataFrame, info: MetricInfo, generators: Sequence[str],
              warnings: Sequence[str] = ()) -> bytes:
    """Mean per generator with its bootstrap interval as error bars."""
    rows = summary[summary["metric"] == info.label].set_index("generator").reindex(list(generators))
    means = rows["mean"].to_numpy(dtype=float)
    low = (means - rows["ci_low"].to_numpy(dtype=float))
    high = (rows["ci_high"].to_numpy(dtype=float) - means)
    errors = [[x if math.isfinite(x) else 0.0 for x in low], [x if math.isfinite(x) else 0.0 for x in high]]
    figure = _figure(warnings)
    axes = figure.add_subplot(1, 1, 1)
    positions = list(range(len(generators)))
    axes.bar(positions, [m if math.isfinite(m) else 0.0 for m in means], yerr=errors, capsize=4,
             color="#4c72b0")
    axes.set_xticks(positions, list(generators), rotation=20, ha="right")
    axes.set_ylabel(f"{info.label}{' (%)' if info.scale == 100 else ''} {info.arrow}")
    axes.set_title(f"{info.label} (95% bootstrap CI over layouts)", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.93 if warnings else 1))
    return _png(figure)


def entity_count_chart(breakdown: pd.DataFrame, info: MetricInfo, generators: Sequence[str],
                       warnings: Sequence[str] = ()) -> bytes:
    """Mean per number of entities in the layout, one line per generator."""
    rows = breakdown[breakdown["metric"] == info.label]
    figure = _figure(warnings)
    axes = figure.add_subplot(1, 1, 1)
    for generator in generators:
        line = rows[rows["generator"] == generator].sort_values("n_entities")
        if len(line):
            axes.plot(line["n_entities"], line["mean"], marker="o", label=generator)
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("entities in the layout")
    axes.set_ylabel(f"{info.label}{' (%)' if info.scale == 100 else ''} {info.arrow}")
    axes.set_title(f"{info.label} by number of entities", fontsize=9)
    if len(rows):
        axes.legend(fontsize=7)
    figure.tight_layout(rect=(0, 0, 1, 0.93 if warnings else 1))
    return _png(figure)
