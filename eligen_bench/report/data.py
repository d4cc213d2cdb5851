"""Reading a finished (or still running) run folder into one validated object.

A run folder holds `manifest.json`, `suite.jsonl`, `images/<generator>/<layout>_<seed>.png`
and `scores.parquet`. Problems that do not stop a report (rows of an unknown metric, a label
scored under two metric keys) become warnings; problems that do (a missing manifest, a field
of the wrong type, a score table without its columns) raise `InputError` naming the file and
the field. The manifest and the score table are read through `run_records`, which checks
every field and opens only regular files inside the run (the run may be someone else's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eligen_bench.errors import InputError
from eligen_bench.run_records import SCORE_COLUMNS, read_manifest, read_score_table
from eligen_bench.rundir import RunDir
from eligen_bench.suite import Suite
from eligen_bench.tiny import TINY_WARNING

if TYPE_CHECKING:
    import pandas as pd

IMAGE_LEVEL = -1


@dataclass(frozen=True)
class MetricInfo:
    """How one metric label of a run is reported."""

    label: str
    """The label used as column name, e.g. 'miou' or 'vlm_success[judge=qwen2vl]'."""
    name: str
    """The registered metric name, e.g. 'vlm_success'."""
    key: str
    """Hash of the metric identity; equal keys mean comparable numbers."""
    identity: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    higher_is_better: bool = True
    level: str = "entity"
    """'entity' (one value per entity) or 'image' (one per image)."""
    scale: float = 1.0
    """Reported value = mean x scale (100 for rates and IoUs shown in %)."""

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @classmethod
    def from_config(cls, label: str, data: Any, *, where: str) -> MetricInfo:
        if not isinstance(data, dict):
            raise InputError("expected an object", where=where, field=f"config.metrics[{label!r}]")
        level = data.get("level", "entity")
        if level not in ("entity", "image"):
            raise InputError(f"level must be 'entity' or 'image', got {level!r}", where=where,
                             field=f"config.metrics[{label!r}].level")
        scale = data.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale == 0:
            raise InputError(f"scale must be a non-zero number, got {scale!r}", where=where,
                             field=f"config.metrics[{label!r}].scale")
        return cls(
            label=label,
            name=str(data.get("name", label.split("[", 1)[0])),
            key=str(data.get("key", "")),
            identity=dict(data.get("identity") or {}),
            options=dict(data.get("options") or {}),
            higher_is_better=bool(data.get("higher_is_better", True)),
            level=level,
            scale=float(scale),
        )


@dataclass
class Run:
    """A run folder, loaded: manifest, suite and the score rows the report uses."""

    path: Path
    manifest: dict[str, Any]
    suite: Suite
    scores: pd.DataFrame
    """Score rows of known metric labels, one metric key per label."""
    metrics: dict[str, MetricInfo]
    """Metric labels in the manifest's order."""
    generators: list[str]
    """Generators in the manifest's order, then any others found in the scores."""
    warnings: list[str]
    """The manifest's warnings (the tiny-profile one first) and problems found while loading."""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.get("config", {})

    @property
    def profile(self) -> str:
        return str(self.manifest.get("profile", "full"))

    @property
    def seeds(self) -> int:
        return int(self.config.get("seeds", 1))

    @property
    def base_seed(self) -> Any:
        """The base seed, or 'listed a,b,...' when every layout used the same listed seeds (so
        runs with other lists, or with derived seeds, never compare as equal)."""
        listed = self.config.get("seed_list")
        if listed:
            return "listed " + ",".join(str(seed) for seed in listed)
        return self.config.get("base_seed")

    @property
    def suite_hash(self) -> str:
        return str(self.config.get("suite", {}).get("hash") or self.suite.hash)

    def entity_counts(self) -> dict[str, int]:
        """Number of entities of each layout, by layout id."""
        return {layout.id: len(layout.entities) for layout in self.suite.layouts}

    def image_path(self, generator: str, layout_id: str, seed_index: int) -> Path:
        return self.path / "images" / generator / f"{layout_id}_{seed_index}.png"


def load_run(path: str | Path) -> Run:
    """Load and check a run folder; see the module docstring for what is fatal."""
    path = Path(path)
    if not path.is_dir():
        raise InputError("no such run folder", where=str(path))
    manifest = read_manifest(path)
    if manifest is None:
        raise InputError("missing manifest.json (not a run folder?)", where=str(path / "manifest.json"))
    suite = RunDir(path).read_suite()
    where = str(path / "manifest.json")
    raw_metrics = manifest.get("config", {}).get("metrics", {})
    if not isinstance(raw_metrics, dict):
        raise InputError("expected an object", where=where, field="config.metrics")
    metrics = {label: MetricInfo.from_config(label, data, where=where) for label, data in raw_metrics.items()}
    warnings = _manifest_warnings(manifest)
    recorded = manifest.get("config", {}).get("suite", {}).get("hash")
    if recorded and recorded != suite.hash:
        warnings.append(f"suite.jsonl hashes to {suite.hash}, the manifest records {recorded}")
    scores = _read_scores(path)
    scores = _known_rows(scores, metrics, suite, warnings)
    scores = _one_key_per_label(scores, metrics, warnings, run=path.name)
    generators = [str(g) for g in manifest.get("config", {}).get("generators", {})]
    generators += sorted(set(scores["generator"]) - set(generators))
    return Run(path, manifest, suite, scores, metrics, generators, warnings)


def _manifest_warnings(manifest: dict[str, Any]) -> list[str]:
    warnings = [str(w) for w in manifest.get("warnings", []) or []]
    if manifest.get("profile") == "tiny" and TINY_WARNING not in warnings:
        warnings.insert(0, TINY_WARNING)
    return warnings


def _read_scores(run: Path) -> pd.DataFrame:
    import pandas as pd

    scores = read_score_table(run, run / "scores.parquet")  # checked: types, ranges, safe names
    if scores is None:
        # A run that has generated but not yet scored still gets a report (image grid).
        return pd.DataFrame({column: pd.Series(dtype=_dtype(column)) for column in SCORE_COLUMNS})
    for column in SCORE_COLUMNS:
        if column not in scores.columns:
            scores[column] = pd.Series([None] * len(scores), dtype="object")  # optional: detail, image_sha256, seed
    scores = scores.astype({"metric": str, "generator": str, "layout_id": str, "status": str,
                            "metric_key": str, "seed_index": "int64", "entity_index": "int64",
                            "value": "float64"})
    return scores.reset_index(drop=True)


def _dtype(column: str) -> str:
    if column in ("seed_index", "seed", "entity_index"):
        return "int64"
    return "float64" if column == "value" else "object"


def _known_rows(scores: pd.DataFrame, metrics: dict[str, MetricInfo], suite: Suite,
                warnings: list[str]) -> pd.DataFrame:
    """Drop (and report) rows the report cannot place: unknown metric label or layout id."""
    unknown = sorted(set(scores["metric"]) - set(metrics))
    if unknown:
        warnings.append(f"scores.parquet holds rows of metric label(s) {unknown} that the manifest "
                        "does not describe; they are left out")
    layout_ids = {layout.id for layout in suite.layouts}
    stray = ~scores["layout_id"].isin(layout_ids)
    if stray.any():
        warnings.append(f"{int(stray.sum())} score row(s) name layouts that are not in suite.jsonl; "
                        "they are left out")
    return scores[scores["metric"].isin(list(metrics)) & ~stray].reset_index(drop=True)


def _one_key_per_label(scores: pd.DataFrame, metrics: dict[str, MetricInfo], warnings: list[str],
                       *, run: str) -> pd.DataFrame:
    """Keep one metric key per label: the manifest's when present; say so when several exist."""
    keep = []
    for label, group in scores.groupby("metric", sort=False):
        keys = sorted(set(group["metric_key"]))
        expected = metrics[str(label)].key
        if len(keys) == 1 and expected and keys[0] and keys[0] != expected:
            warnings.append(f"run {run}: metric {label!r} rows carry metric key {keys[0]}, the "
                            f"manifest records {expected}")
        if len(keys) > 1:
            counts = group["metric_key"].value_counts().to_dict()
            text = ", ".join(f"{k or '(empty)'}: {counts[k]} rows" for k in keys)
            if expected in keys:
                warnings.append(f"run {run}: metric {label!r} was scored under {len(keys)} metric keys "
                                f"({text}); only rows with the manifest's key {expected} are used")
                group = group[group["metric_key"] == expected]
            else:
                warnings.append(f"run {run}: metric {label!r} was scored under {len(keys)} metric keys "
                                f"({text}), none equal to the manifest's {expected or '(none)'}; "
                                "all rows are used and the numbers may mix metric versions")
        keep.append(group)
    if not keep:
        return scores
    import pandas as pd

    return pd.concat(keep).sort_index().reset_index(drop=True)
