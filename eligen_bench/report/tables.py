"""Tables in the layout of the EliGen paper's Table 1, rendered as Markdown, LaTeX and HTML.

One cell model (`Cell`: text, optional interval, best/second mark) feeds all three renderers,
so the three files always agree on which value is bold and which underlined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eligen_bench import escape

if TYPE_CHECKING:
    import pandas as pd

    from eligen_bench.report.data import MetricInfo
    from eligen_bench.report.names import Presentation

BEST, SECOND = "best", "second"


@dataclass(frozen=True)
class Cell:
    """One table cell: the value text, an optional interval text, and its rank mark."""

    text: str
    extra: str = ""
    mark: str | None = None


@dataclass
class Table:
    """Header, a row label column and cells; `notes` go below the table."""

    corner: str
    headers: list[str]
    rows: list[tuple[str, list[Cell]]]
    notes: list[str] = field(default_factory=list)


def fmt(value: float, decimals: int) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{decimals}f}"


def rank_marks(values: Sequence[float], *, higher_is_better: bool, decimals: int) -> list[str | None]:
    """Best and second best per column, compared at the shown precision (equal shown, equal mark)."""
    shown = [round(v, decimals) if v is not None and math.isfinite(v) else None for v in values]
    distinct = sorted({v for v in shown if v is not None}, reverse=higher_is_better)
    marks: dict[float, str] = {}
    if distinct:
        marks[distinct[0]] = BEST
    if len(distinct) > 1:
        marks[distinct[1]] = SECOND
    return [marks.get(v) if v is not None else None for v in shown]


def header_text(info: MetricInfo, suffix: str = "", name: str | None = None) -> str:
    from eligen_bench.report.names import header

    return header(info, name or info.label, suffix)


STRICT_METRICS = ("vlm_success",)
"""Metrics whose unreadable answers get a second, strict column (unparsed counted as failures)."""
INTERVAL_STYLES = ("none", "pm", "brackets")
"""How a table shows a value's interval: not at all, '± half its width', or '[low, high]'."""


def main_table(summary: pd.DataFrame, metrics: dict[str, MetricInfo], generators: Sequence[str], *,
               decimals: int = 2, intervals: str = "brackets", names: Presentation | None = None) -> Table:
    """Generators x metric labels (in the given orders): mean, its interval, best bold and
    second underlined per column by the metric's direction.

    A VLM success rate takes two columns: the rate over parsed answers, then the strict rate."""
    if intervals not in INTERVAL_STYLES:
        raise ValueError(f"intervals must be one of {INTERVAL_STYLES}, got {intervals!r}")
    by_key = {(r.generator, r.metric): r for r in summary.itertuples(index=False)}
    columns: list[list[Cell]] = []
    headers: list[str] = []
    for label, info in metrics.items():
        fields = [("mean", "ci_low", "ci_high", "")]
        if info.name in STRICT_METRICS:
            fields = [("mean", "ci_low", "ci_high", " parsed"), ("strict_mean", "strict_ci_low", "strict_ci_high",
                                                                 " strict")]
        for value_field, low_field, high_field, suffix in fields:
            columns.append(_column(by_key, label, info, generators, (value_field, low_field, high_field),
                                   decimals=decimals, intervals=intervals))
            headers.append(header_text(info, suffix, names.metric(label) if names else None))
    rows = [(names.generator(g) if names else g, [column[i] for column in columns]) for i, g in enumerate(generators)]
    notes = ["parsed: yes / (yes + no); strict: yes / all entities (unparsed answers count as failures)."] \
        if any(info.name in STRICT_METRICS for info in metrics.values()) else []
    return Table("Model", headers, rows, notes)


def _column(by_key: dict, label: str, info: MetricInfo, generators: Sequence[str], fields: tuple[str, str, str],
            *, decimals: int, intervals: str) -> list[Cell]:
    value_field, low_field, high_field = fields
    values = [getattr(by_key[(g, label)], value_field) if (g, label) in by_key else math.nan for g in generators]
    marks = rank_marks(values, higher_is_better=info.higher_is_better, decimals=decimals)
    cells = []
    for generator, value, mark in zip(generators, values, marks, strict=True):
        row = by_key.get((generator, label))
        low, high = (getattr(row, low_field), getattr(row, high_field)) if row is not None else (math.nan, math.nan)
        cells.append(Cell(fmt(value, decimals), interval_text(low, high, intervals, decimals), mark))
    return cells


def interval_text(low: float, high: float, style: str, decimals: int) -> str:
    """'[low, high]', '± half-width', or '' (style 'none', or no finite interval)."""
    if style == "none" or low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return ""
    if style == "pm":
        return f"± {fmt((high - low) / 2, decimals)}"
    return f"[{fmt(low, decimals)}, {fmt(high, decimals)}]"


def counts_table(summary: pd.DataFrame, metrics: dict[str, MetricInfo], generators: Sequence[str],
                 names: Presentation | None = None) -> Table:
    """Per generator and metric: valid values n, and rows excluded / unparsed / otherwise invalid."""
    by_key = {(r.generator, r.metric): r for r in summary.itertuples(index=False)}
    rows = []
    for generator in generators:
        cells = []
        for label in metrics:
            row = by_key.get((generator, label))
            if row is None:
                cells.append(Cell("–"))
                continue
            text = f"{row.n} / {row.n_excluded} / {row.n_unparsed}"
            if row.n_other_invalid:
                text += f" (+{row.n_other_invalid} other)"
            if row.n_rows < row.n_expected:
                text += f" ({row.n_rows} of {row.n_expected} rows)"
            cells.append(Cell(text))
        rows.append((names.generator(generator) if names else generator, cells))
    return Table("Model", [names.metric(m) if names else m for m in metrics], rows,
                 notes=["Cells: valid values n / excluded / unparsed. Excluded and unparsed rows are "
                        "not averaged."])


def frame_table(frame: pd.DataFrame, *, decimals: int = 2) -> Table:
    """Any data frame as a plain table (first column as row labels), floats rounded."""
    def text(value: object) -> str:
        if isinstance(value, float):
            return fmt(value, decimals)
        return "" if value is None else str(value)

    columns = [str(c) for c in frame.columns]
    rows = [(text(values[0]), [Cell(text(v)) for v in values[1:]])
            for values in frame.itertuples(index=False, name=None)]
    return Table(columns[0] if columns else "", columns[1:], rows)


def to_markdown(table: Table) -> str:
    def cell(c: Cell) -> str:
        text = escape.markdown_text(c.text)
        text = {BEST: f"**{text}**", SECOND: f"<u>{text}</u>"}.get(c.mark or "", text)
        return f"{text} {escape.markdown_text(c.extra)}" if c.extra else text

    md = escape.markdown_text
    lines = ["| " + " | ".join(md(h) for h in [table.corner, *table.headers]) + " |",
             "|" + "|".join(["---"] + [":---:"] * len(table.headers)) + "|"]
    lines += ["| " + " | ".join([md(name), *(cell(c) for c in cells)]) + " |"
              for name, cells in table.rows]
    if table.notes:
        lines += ["", *(md(n) for n in table.notes)]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    return escape.latex_text(text)


LATEX_LAYOUTS = ("column", "wide")
"""`column`: a `table` that fits one column of a two-column paper; `wide`: a `table*` across both."""


def to_latex(table: Table, *, caption: str = "", label: str = "tab:eligen-bench", comments: Sequence[str] = (),
             notes: Sequence[str] = (), layout: str = "column") -> str:
    """A booktabs table: the caption above, the table shrunk to the column (or page) width only
    when it is wider, the table's and the given `notes` below it in small print; `comments`
    become % lines at the top."""
    if layout not in LATEX_LAYOUTS:
        raise ValueError(f"layout must be one of {LATEX_LAYOUTS}, got {layout!r}")
    environment, width = ("table*", r"\textwidth") if layout == "wide" else ("table", r"\columnwidth")

    def cell(c: Cell) -> str:
        text = latex_escape(c.text)
        text = {BEST: rf"\textbf{{{text}}}", SECOND: rf"\underline{{{text}}}"}.get(c.mark or "", text)
        return rf"{text}\,{{\scriptsize {latex_escape(c.extra)}}}" if c.extra else text

    lines = [escape.latex_comment(line) for line in comments]
    lines += [r"% requires \usepackage{booktabs} and \usepackage{graphicx}", rf"\begin{{{environment}}}[t]",
              r"\centering"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    # Shrunk only when wider than the column; the tabular starts on the same line (no stray space).
    lines += [rf"\label{{{label}}}", rf"\resizebox{{\ifdim\width>{width}{width}\else\width\fi}}{{!}}{{"
              + r"\begin{tabular}{l" + "c" * len(table.headers) + "}", r"\toprule",
              " & ".join(latex_escape(h) for h in [table.corner, *table.headers]) + r" \\", r"\midrule"]
    lines += [" & ".join([latex_escape(name), *(cell(c) for c in cells)]) + r" \\" for name, cells in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}}"]
    below = [*table.notes, *notes]
    if below:
        lines += [r"\par\smallskip", rf"\parbox{{{width}}}{{\footnotesize\raggedright",
                  *(latex_escape(n) + r"\par" for n in below), "}"]
    lines.append(rf"\end{{{environment}}}")
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    def cell(c: Cell) -> str:
        text = escape.html_text(c.text)
        text = {BEST: f"<b>{text}</b>", SECOND: f"<u>{text}</u>"}.get(c.mark or "", text)
        extra = f' <span class="ci">{escape.html_text(c.extra)}</span>' if c.extra else ""
        return f"<td>{text}{extra}</td>"

    head = "".join(f"<th>{escape.html_text(h)}</th>" for h in [table.corner, *table.headers])
    body = "".join(f"<tr><th>{escape.html_text(name)}</th>{''.join(cell(c) for c in cells)}</tr>"
                   for name, cells in table.rows)
    notes = "".join(f'<p class="note">{escape.html_text(n)}</p>' for n in table.notes)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}"


def win_rate_table(wins: pd.DataFrame, label: str, generators: Sequence[str], *, decimals: int = 2,
                   names: Presentation | None = None) -> Table:
    """Row vs column for one metric label: 'win rate / preference' in %, each labelled below."""
    rates = {(r.generator, r.opponent): r for r in wins[wins["metric"] == label].itertuples()}
    with_preference = bool(len(wins)) and bool(wins.loc[wins["metric"] == label, "preference"].notna().any())
    body = []
    for g in generators:
        cells = []
        for o in generators:
            r = rates.get((g, o))
            text = "–" if r is None else fmt(100 * r.win_rate, decimals)
            if with_preference and r is not None:
                text += f" / {fmt(100 * r.preference, decimals)}"
            cells.append(Cell(text))
        body.append((names.generator(g) if names else g, cells))
    notes = [f"{names.metric(label) if names else label}: win rate = share of (layout, seed) pairs where the row's value is strictly better, "
             "ties count half."]
    corner = "win rate (%) of row vs column"
    if with_preference:
        corner = "win rate / preference (%) of row vs column"
        notes.append("preference = mean of softmax(row score, column score) over the same pairs, as "
                     "PickScore's and MPS's code turn two scores into a preference probability. The "
                     "EliGen paper's Table 2 caption names its values win rates; its text describes a "
                     "preference probability.")
    return Table(corner, [names.generator(g) if names else g for g in generators], body, notes)


def text_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A plain-text table: columns padded to their widest cell."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]
