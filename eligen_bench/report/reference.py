"""Comparison with published numbers (EliGen paper, Table 1; ContextGen, Table 2).

The only place that maps our generator names and metric labels onto the rows and columns of
a reference CSV (`results/reference/eligen_table1.csv`, `contextgen_table2_layoutsam.csv`: a
`model` column, one column per metric, values in the paper's units). Model names match when
they agree in letters and digits ('Instance Diffusion' = 'InstanceDiffusion'). Names that cannot
be mapped are simply not compared.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

from eligen_bench.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from eligen_bench.report.data import MetricInfo

REFERENCE_MODELS: dict[str, str] = {
    "multidiffusion": "Multi-Diffusion",
    "gligen": "GLIGEN",
    "migc": "MIGC",
    "instancediffusion": "Instance Diffusion",
    "eligen": "EliGen",
}
"""Our generator name -> the reference CSV's `model` value."""

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
    """The reference table indexed by model name; numbers as floats."""
    import pandas as pd

    path = Path(path)
    try:
        table = pd.read_csv(path)
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


def compare_with_reference(summary: pd.DataFrame, metrics: dict[str, MetricInfo],
                           reference: pd.DataFrame) -> pd.DataFrame:
    """Ours vs published for every (generator, metric) both sides have.

    Columns: generator, metric, reference_model, reference_column, ours, ci_low, ci_high,
    published, delta (ours - published), published_in_ci.
    """
    import pandas as pd

    records = []
    by_name = {_normal(str(name)): name for name in reference.index}
    for row in summary.itertuples(index=False):
        model = by_name.get(_normal(REFERENCE_MODELS.get(row.generator, "")))
        column = reference_column(metrics[row.metric]) if row.metric in metrics else None
        if model is None or column is None or model not in reference.index or column not in reference.columns:
            continue
        published = float(reference.at[model, column])
        if not math.isfinite(published):
            continue
        inside = bool(row.ci_low <= published <= row.ci_high) if math.isfinite(row.ci_low) else False
        records.append({"generator": row.generator, "metric": row.metric, "reference_model": model,
                        "reference_column": column, "ours": row.mean, "ci_low": row.ci_low,
                        "ci_high": row.ci_high, "published": published, "delta": row.mean - published,
                        "published_in_ci": inside})
    return pd.DataFrame.from_records(records, columns=[
        "generator", "metric", "reference_model", "reference_column", "ours", "ci_low", "ci_high",
        "published", "delta", "published_in_ci"])
