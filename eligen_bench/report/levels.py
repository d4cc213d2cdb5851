"""MIG-Bench per level: I-SR, SR and mIoU for L2-L6 and their average, as the benchmark reports them.

From the `mig_bench` metric's instance rows (value 1 = position and colour passed; `miou` in the
detail = the instance's term of the script's mIoU). The level of an image is its number of
instances (eval_mig.py:452). Per level and over all levels (LeyRio/MIG_Bench@063ec45:
eval_mig.py:474-491, :518-545):
- I-SR = successful instances / instances; mIoU = sum of the instances' terms / instances, so
  the average over levels is weighted by instance count (the DEIG paper's Table 2 AVG columns
  match this weighting to its printed rounding);
- SR = images whose every instance succeeded / images, so its average is weighted by images.
Only 'ok' rows count; an image with an excluded instance is left out of SR.
With several seeds every image counts once, which equals the mean over seeds when each seed
covers the same layouts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from eligen_bench import escape

if TYPE_CHECKING:
    import pandas as pd

    from eligen_bench.report.data import Run

METRIC = "mig_bench"
AVERAGE = "AVG"
MEASURES = (("isr", "I-SR"), ("miou", "mIoU"), ("sr", "SR"))
COLUMNS = ["metric", "generator", "level", "images", "instances", "isr", "miou", "sr"]


def level_frame(run: Run) -> pd.DataFrame | None:
    """One row per (metric label, generator, level) plus an AVG row each; values in %. None when
    the run has no `mig_bench` metric."""
    import pandas as pd

    labels = [label for label, info in run.metrics.items() if info.name == METRIC]
    if not labels:
        return None
    counts = run.entity_counts()
    records = []
    for label in labels:
        rows = run.scores[run.scores["metric"] == label]
        for generator in run.generators:
            mine = rows[rows["generator"] == generator]
            if len(mine):
                records += levels_of(instance_records(mine, counts), label, generator)
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def instance_records(rows: pd.DataFrame, counts: dict[str, int]) -> list[dict[str, Any]]:
    """(image, level, ok, success, miou) of every instance row."""
    found = []
    for r in rows.itertuples(index=False):
        detail = json.loads(r.detail) if isinstance(r.detail, str) and r.detail else {}
        ok = r.status == "ok"
        found.append({"image": (r.layout_id, int(r.seed_index)), "level": counts.get(r.layout_id, 0), "ok": ok,
                      "success": ok and float(r.value) == 1.0, "miou": float(detail.get("miou", 0.0)) if ok else 0.0})
    return found


def levels_of(instances: Sequence[dict[str, Any]], label: str, generator: str) -> list[dict[str, Any]]:
    """Per-level and AVG records (values in %) from instance records."""
    levels = sorted({i["level"] for i in instances})
    return [_record(label, generator, level, [i for i in instances if i["level"] == level]) for level in levels] + \
        [_record(label, generator, AVERAGE, list(instances))]


def _record(label: str, generator: str, level: Any, instances: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [i for i in instances if i["ok"]]
    images: dict[tuple, list[dict[str, Any]]] = {}
    for i in instances:
        images.setdefault(i["image"], []).append(i)
    whole = [members for members in images.values() if all(m["ok"] for m in members)]
    return {
        "metric": label, "generator": generator, "level": level if level == AVERAGE else f"L{level}",
        "images": len(whole), "instances": len(ok),
        "isr": _percent(sum(i["success"] for i in ok), len(ok)),
        "miou": _percent(sum(i["miou"] for i in ok), len(ok)),
        "sr": _percent(sum(all(m["success"] for m in members) for members in whole), len(whole)),
    }


def _percent(part: float, whole: int) -> float:
    return 100.0 * part / whole if whole else float("nan")


def wide(frame: pd.DataFrame, label: str) -> tuple[list[str], list[str], dict[str, dict[tuple[str, str], float]]]:
    """(generators, levels in order, {generator: {(measure, level): value}}) of one metric label."""
    part = frame[frame["metric"] == label]
    generators = list(dict.fromkeys(part["generator"]))
    levels = list(dict.fromkeys(part["level"]))
    levels = sorted((lv for lv in levels if lv != AVERAGE), key=lambda lv: int(lv[1:])) + [AVERAGE]
    values = {g: {} for g in generators}
    for r in part.itertuples(index=False):
        for key, _ in MEASURES:
            values[r.generator][(key, r.level)] = float(getattr(r, key))
    return generators, levels, values


def as_table(frame: pd.DataFrame, label: str, decimals: int = 2) -> Any:
    """A `tables.Table` of one label: generators x (measure, level), best bold, second underlined."""
    import eligen_bench.report.tables as tables

    generators, levels, values = wide(frame, label)
    columns = []
    for key, _ in MEASURES:
        for level in levels:
            column = [values[g].get((key, level), float("nan")) for g in generators]
            marks = tables.rank_marks(column, higher_is_better=True, decimals=decimals)
            columns.append([tables.Cell(tables.fmt(v, decimals), mark=m) for v, m in zip(column, marks, strict=True)])
    headers = [f"{name} {level}" for _, name in MEASURES for level in levels]
    return tables.Table("Method", headers, [(g, [c[i] for c in columns]) for i, g in enumerate(generators)], [NOTE])


def to_markdown(frame: pd.DataFrame, decimals: int = 2) -> str:
    """Per metric label: generators x (I-SR, mIoU, SR) x (L2..L6, AVG), values in %."""
    import eligen_bench.report.tables as tables

    return "\n".join(f"### {escape.markdown_text(label)}\n\n" + tables.to_markdown(as_table(frame, label, decimals))
                     for label in dict.fromkeys(frame["metric"]))


def to_html(frame: pd.DataFrame, decimals: int = 2) -> str:
    import eligen_bench.report.tables as tables

    return "".join(f"<h3>{escape.html_text(label)}</h3>" + tables.to_html(as_table(frame, label, decimals))
                   for label in dict.fromkeys(frame["metric"]))


NOTE = ("I-SR: instances whose position (best GroundingDINO box IoU >= 0.5 with the layout box) and colour "
        "(>= 20% of the SAM mask in the colour's HSV range) both pass; mIoU: the script's per-instance term "
        "(the IoU when both pass, the raw IoU when the position fails, 0 when the colour fails or nothing "
        "is detected); SR: images whose instances all pass. L<n>: images with n instances; AVG over all, "
        "I-SR and mIoU weighted by instances, SR by images. Values in %.")


def to_latex(frame: pd.DataFrame, decimals: int = 2) -> str:
    """The paper's layout: a two-row header (measure, then levels), one table per metric label."""
    import eligen_bench.report.tables as tables

    tex = escape.latex_text
    mark = {tables.BEST: r"\textbf{{{}}}", tables.SECOND: r"\underline{{{}}}"}
    out = []
    for label in dict.fromkeys(frame["metric"]):
        table = as_table(frame, label, decimals)
        levels = wide(frame, label)[1]
        n = len(levels)
        out += [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering",
                r"\begin{tabular}{l" + "|".join(["c" * n] * len(MEASURES)) + "}", r"\toprule",
                "Method & " + " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{tex(name)} (\%)}}" for _, name in MEASURES)
                + r" \\",
                "Level & " + " & ".join(tex(level) for _ in MEASURES for level in levels) + r" \\", r"\midrule"]
        out += [" & ".join([tex(name), *(mark.get(c.mark or "", "{}").format(tex(c.text)) for c in cells)]) + r" \\"
                for name, cells in table.rows]
        out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{MIG-Bench per level ({tex(label)}). {tex(NOTE)}}}",
                rf"\label{{tab:mig-bench-levels-{_label_id(label)}}}", r"\end{table}"]
    return "\n".join(out) + "\n"


def _label_id(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label)


def text_tables(frame: pd.DataFrame, decimals: int = 1) -> list[tuple[str, list[str], list[list[str]]]]:
    """The per-level tables for the terminal: (title, headers, rows) per metric label."""
    found = []
    for label in dict.fromkeys(frame["metric"]):
        table = as_table(frame, label, decimals)
        found.append((f"{label} per level (%):", [table.corner, *table.headers],
                      [[name, *(c.text for c in cells)] for name, cells in table.rows]))
    return found


def add_files(frame: pd.DataFrame | None, files: dict[str, Any], *, banner: str, csv_text: Any,
              decimals: int = 2) -> None:
    """levels.csv and levels.md, and the table at the end of table.md and table.tex (the report's hook)."""
    if frame is None or not len(frame):
        return
    files["levels.csv"] = csv_text(frame)
    files["levels.md"] = banner + "# MIG-Bench per level\n\n" + to_markdown(frame, decimals)
    files["table.md"] = files.get("table.md", "") + "\n## MIG-Bench per level\n\n" + to_markdown(frame, decimals)
    files["table.tex"] = files.get("table.tex", "") + "\n" + to_latex(frame, decimals)
