"""Comparison with published numbers (`results/reference/*.csv`).

The only place that maps a run's generator labels and metric labels onto the rows and columns of
a reference CSV (a `model` column, one column per metric, values in the paper's units; lines
starting with '#' say where the numbers come from). A label compares with the row named like its
generator (`eligen` -> 'EliGen', `instancediffusion` -> 'InstanceDiffusion' or 'Instance
Diffusion': names are matched without case, spaces or punctuation), unless `--reference-map
LABEL=ROW` names the row (for checkpoint labels such as `mine=eligen[lora=...]`). A file that
matches no label, or whose matched rows share no column with the run, is reported as a warning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eligen_bench.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from eligen_bench.report.data import MetricInfo, Run

REFERENCE_MODELS: dict[str, str] = {
    "multidiffusion": "Multi-Diffusion",
    "gligen": "GLIGEN",
    "migc": "MIGC",
    "instancediffusion": "Instance Diffusion",
    "eligen": "EliGen",
}
"""Generator name -> a reference CSV's `model` value, where the names differ beyond case/punctuation."""

REFERENCE_METRICS: dict[tuple[str, str | None], str] = {
    ("vlm_success", "qwen2vl"): "success_qwen2vl",
    ("vlm_success", "internvl2"): "success_internvl2",
    ("vlm_success", "cogvlm2"): "success_cogvlm2",
    ("miou", None): "miou",
    ("clip_entity", None): "clip_entity",
    ("clip_global", None): "clip_global",
    ("aesthetic", None): "aesthetic",
    ("pickscore", None): "pickscore",
    ("layoutsam_spatial", None): "layoutsam_spatial",
    ("layoutsam_color", None): "layoutsam_color",
    ("layoutsam_texture", None): "layoutsam_texture",
    ("layoutsam_shape", None): "layoutsam_shape",
}
"""(registered metric name, VLM judge family or None) -> the reference CSV's column."""

LEVEL_COLUMNS = {"isr": "mig_isr", "miou": "mig_miou", "sr": "mig_sr"}
"""MIG-Bench measures (`levels` frame) -> reference columns: `mig_isr` / `mig_miou` / `mig_sr` for
the average over levels, `mig_isr_l2` ... for a level (results/reference/deig_table2.csv,
contextgen_table2_cocomig.csv); prefixed so they never meet another benchmark's `miou`."""

COLUMNS = ["reference", "generator", "metric", "reference_model", "reference_column", "published", "ours",
           "delta", "ci_low", "ci_high", "published_in_ci"]

_JUDGE_OPTIONS = ("judge", "preset", "model")


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def judge_family(info: MetricInfo) -> str | None:
    """The judge family ('qwen2vl', 'internvl2', 'cogvlm2') of a VLM metric, else None.

    Read from the metric's options, or from a label like 'vlm_success[judge=qwen2vl]'.
    """
    candidates = [str(info.options[k]) for k in _JUDGE_OPTIONS if k in info.options]
    found = re.search(r"\[(.*)\]", info.label)
    if found:
        candidates += [part.split("=", 1)[-1] for part in found.group(1).split(",")]
    for candidate in candidates:
        normal = _normal(candidate.rsplit("/", 1)[-1])
        for family in ("qwen2vl", "internvl2", "cogvlm2"):
            if normal.startswith(family):
                return family
    return None


def reference_column(info: MetricInfo) -> str | None:
    """The reference CSV column a metric label compares with, if any."""
    if info.name == "vlm_success":
        return REFERENCE_METRICS.get((info.name, judge_family(info)))
    return REFERENCE_METRICS.get((info.name, None))


def read_reference(path: str | Path) -> pd.DataFrame:
    """The reference table indexed by model name; numbers as floats ('#' lines are comments)."""
    import pandas as pd

    path = Path(path)
    try:
        table = pd.read_csv(path, comment="#")
    except FileNotFoundError:
        raise InputError("no such reference file", where=str(path)) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read reference CSV ({exc})", where=str(path)) from None
    if "model" not in table.columns:
        raise InputError("expected a 'model' column", where=str(path))
    table = table.set_index("model")
    try:
        return table.astype(float)
    except ValueError as exc:
        raise InputError(f"non-numeric value ({exc})", where=str(path)) from None


def reference_source(path: str | Path) -> str:
    """The file's first '#' line (its source), else its name."""
    try:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
            if line.strip():
                break
    except (OSError, UnicodeDecodeError):
        pass
    return Path(path).name


def parse_reference_map(text: str | None) -> dict[str, str]:
    """'LABEL=ROW,LABEL=ROW' (from --reference-map) -> {label: row}."""
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        label, sep, model = part.partition("=")
        if not sep or not label.strip() or not model.strip():
            raise InputError(f"expected LABEL=ROW, got {part.strip()!r}", field="--reference-map")
        mapping[label.strip()] = model.strip()
    return mapping


def match_rows(names: Mapping[str, str], rows: Sequence[str], mapping: Mapping[str, str]) -> dict[str, str]:
    """{generator label: reference row}: the row `mapping` names, else the row named like the
    label's generator (its alias in REFERENCE_MODELS first). Labels without a row are left out."""
    by_normal = {_normal(str(row)): str(row) for row in rows}
    matched = {}
    for label, name in names.items():
        if label in mapping:
            wanted = [mapping[label]]
        else:
            wanted = [REFERENCE_MODELS[name]] if name in REFERENCE_MODELS else []
            wanted.append(name)
        for candidate in wanted:
            if _normal(candidate) in by_normal:
                matched[label] = by_normal[_normal(candidate)]
                break
    return matched


def generator_names(run: Run) -> dict[str, str]:
    """Each generator label's registered generator name (the label itself when unrecorded)."""
    generators = run.config.get("generators", {}) or {}
    return {label: str((generators.get(label) or {}).get("name") or label) for label in run.generators}


def our_values(summary: pd.DataFrame, metrics: Mapping[str, MetricInfo],
               levels: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """(generator, metric label, reference column, ours, interval) of every number a reference
    CSV can hold: the summary's means (REFERENCE_METRICS) and MIG-Bench's per-level measures."""
    found = []
    intervals = {}
    for row in summary.itertuples(index=False):
        info = metrics.get(row.metric)
        intervals[(row.generator, row.metric)] = (row.ci_low, row.ci_high)
        column = reference_column(info) if info is not None else None
        if column is not None:
            found.append({"generator": row.generator, "metric": row.metric, "reference_column": column,
                          "ours": row.mean, "ci_low": row.ci_low, "ci_high": row.ci_high})
    for row in (levels.itertuples(index=False) if levels is not None else ()):
        suffix = "" if row.level == "AVG" else "_" + str(row.level).lower()
        for measure, column in LEVEL_COLUMNS.items():
            # The I-SR average is the metric's mean: it has the summary's interval.
            low, high = intervals.get((row.generator, row.metric), (math.nan, math.nan)) \
                if measure == "isr" and not suffix else (math.nan, math.nan)
            found.append({"generator": row.generator, "metric": row.metric, "reference_column": column + suffix,
                          "ours": float(getattr(row, measure)), "ci_low": low, "ci_high": high})
    return found


def compare_with_reference(summary: pd.DataFrame, metrics: Mapping[str, MetricInfo], reference: pd.DataFrame, *,
                           rows: Mapping[str, str] | None = None, levels: pd.DataFrame | None = None,
                           name: str = "") -> pd.DataFrame:
    """Published vs ours for every (generator, column) both sides have; `rows` maps generator
    labels to reference rows (default: the label's own name, matched as in `match_rows`)."""
    import pandas as pd

    values = our_values(summary, metrics, levels)
    if rows is None:
        rows = match_rows({v["generator"]: v["generator"] for v in values}, list(reference.index), {})
    records = []
    for v in values:
        model = rows.get(v["generator"])
        if model is None or v["reference_column"] not in reference.columns:
            continue
        published = float(reference.at[model, v["reference_column"]])
        if not math.isfinite(published) or not math.isfinite(v["ours"]):
            continue
        inside = bool(v["ci_low"] <= published <= v["ci_high"]) if math.isfinite(v["ci_low"]) else False
        records.append({"reference": name, "generator": v["generator"], "metric": v["metric"],
                        "reference_model": model, "reference_column": v["reference_column"],
                        "published": published, "ours": v["ours"], "delta": v["ours"] - published,
                        "ci_low": v["ci_low"], "ci_high": v["ci_high"], "published_in_ci": inside})
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def compare_files(run: Run, summary: pd.DataFrame, paths: Sequence[str | Path], *,
                  mapping: Mapping[str, str] | None = None,
                  levels: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Every reference file against the run: (comparison, warnings, one source line per file)."""
    import pandas as pd

    mapping = dict(mapping or {})
    names = generator_names(run)
    unknown = sorted(set(mapping) - set(names))
    warnings = [f"--reference-map names generator label(s) {unknown} that this run does not have "
                f"(its labels: {sorted(names)})"] if unknown else []
    parts, sources = [], []
    for path in paths:
        table = read_reference(path)
        rows = match_rows(names, list(table.index), mapping)
        for label in sorted(set(mapping) & set(names) - set(rows)):
            warnings.append(f"reference {Path(path).name}: --reference-map row {mapping[label]!r} for {label!r} is "
                            f"not in the file (rows: {', '.join(map(str, table.index))})")
        part = compare_with_reference(summary, run.metrics, table, rows=rows, levels=levels, name=Path(path).name)
        warnings += _match_warnings(Path(path).name, names, rows, table, part)
        parts.append(part)
        sources.append(f"{Path(path).name}: {reference_source(path)}")
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    return frame, warnings, sources


def _match_warnings(name: str, names: Mapping[str, str], rows: Mapping[str, str], table: pd.DataFrame,
                    compared: pd.DataFrame) -> list[str]:
    listed = ", ".join(f"{label} ({generator})" if label != generator else label for label, generator in names.items())
    if not rows:
        return [f"reference {name}: no row matches a generator of this run (run: {listed}; file rows: "
                f"{', '.join(map(str, table.index))}); name the rows with --reference-map LABEL=ROW"]
    if not len(compared):
        matched = ", ".join(f"{label} -> {row}" for label, row in rows.items())
        return [f"reference {name}: rows matched ({matched}) but none of its columns "
                f"({', '.join(map(str, table.columns))}) is a number this run scored"]
    return []
