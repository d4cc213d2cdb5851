"""One validating reader for what a run folder records: `manifest.json` and score tables.

A run folder may come from someone else, so every field a command uses is checked for its
type and range before use, and anything wrong is one InputError naming the file and the field
(`run/manifest.json: config.base_seed: must be an integer in [0, 9223372036854775807], got nan`).
Generator labels, layout ids and metric keys, which become folder and file names, must be
safe names (`layout.check_id`); every text must be valid Unicode without control characters;
every number finite. Files are opened through `run_files`, so none outside the run is read
and none that is not a regular file is opened.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eligen_bench.arguments import MAX_SEED, MAX_SEEDS, MAX_SHARD
from eligen_bench.errors import PROFILES, InputError
from eligen_bench.layout import check_id, check_text, short_repr
from eligen_bench.run_files import open_run_file

if TYPE_CHECKING:
    import pandas as pd

MAX_MANIFEST_BYTES = 256 << 20
"""Largest manifest read (a full COCO run's manifest is a few MB)."""
MAX_DEPTH = 32
"""Deepest nesting of a manifest's JSON (the project writes at most 6 levels)."""
MAX_SCORE = 1e15
"""Largest magnitude of a score value. No metric comes near it, and sums of a billion values
stay finite, so a report's means and intervals never overflow."""
MAX_ENTITY_INDEX = 1_000_000
"""Largest entity index of a score row (more entities than any layout holds)."""
FORMAT = 1
SCORE_COLUMNS = ("metric", "generator", "layout_id", "seed_index", "seed", "entity_index",
                 "value", "status", "detail", "image_sha256", "metric_key")
OPTIONAL_COLUMNS = ("detail", "image_sha256", "seed")


class _Fields:
    """Checks of one file's fields; every failure names the file and the field."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, field: str, message: str) -> InputError:
        return InputError(message, where=self.where, field=field)

    def mapping(self, value: Any, field: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(field, f"must be an object, got {short_repr(value)}")
        return value

    def items(self, value: Any, field: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(field, f"must be a list, got {short_repr(value)}")
        return value

    def integer(self, value: Any, field: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(field, f"must be an integer in [{low}, {high}], got {short_repr(value)}")
        return value

    def number(self, value: Any, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(field, f"must be a finite number, got {short_repr(value)}")
        return float(value)

    def boolean(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(field, f"must be true or false, got {short_repr(value)}")
        return value

    def string(self, value: Any, field: str) -> str:
        """Any string, empty included, that prints on one line."""
        if not isinstance(value, str):
            raise self.fail(field, f"must be a string, got {short_repr(value)}")
        if value:
            check_text(value, where=self.where, what=field)
        return value

    def text(self, value: Any, field: str) -> str:
        check_text(value, where=self.where, what=field)
        return value

    def name(self, value: Any, field: str) -> str:
        """A safe file name: it becomes a folder or file of the run or of a site."""
        check_id(value, where=self.where, what=field)
        return value

    def texts(self, value: Any, field: str) -> list[str]:
        return [self.text(item, f"{field}[{i}]") for i, item in enumerate(self.items(value, field))]

    def scan(self, value: Any, field: str, depth: int = 0) -> None:
        """Anywhere in the file: no NaN or infinity, no lone surrogate, bounded nesting."""
        if depth > MAX_DEPTH:
            raise self.fail(field, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(field, f"must be a finite number, got {value}")
        if isinstance(value, str):
            _unicode(value, self, field)
        elif isinstance(value, dict):
            for key, item in value.items():
                _unicode(key, self, field)
                self.scan(item, f"{field}.{key}" if field else str(key), depth + 1)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.scan(item, f"{field}[{i}]", depth + 1)


def _unicode(text: str, fields: _Fields, field: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise fields.fail(field or "(top level)", "holds a lone surrogate (not valid Unicode text)") from None


# manifest.json ------------------------------------------------------------------------
def read_manifest(root: Path) -> dict[str, Any] | None:
    """The checked manifest of the run folder `root`, or None when it has none."""
    path = root / "manifest.json"
    if not path.exists() and not path.is_symlink():
        return None
    with open_run_file(root, path, limit=MAX_MANIFEST_BYTES) as handle:
        data = handle.read()
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"corrupt manifest ({exc})", where=str(path)) from None
    except RecursionError:
        raise InputError("corrupt manifest (nested too deeply)", where=str(path)) from None
    return check_manifest(manifest, str(path))


def check_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """`manifest` when every field the commands use has its type and range; InputError naming
    the first field that does not."""
    fields = _Fields(where)
    fields.mapping(manifest, "(top level)")
    fields.scan(manifest, "")
    if "format" in manifest and fields.integer(manifest["format"], "format", 0, 2**31) != FORMAT:
        raise fields.fail("format", f"format {manifest['format']} is not {FORMAT}, the one this version reads")
    if "config" not in manifest:
        raise fields.fail("config", "missing (not a run manifest)")
    _check_config(fields.mapping(manifest["config"], "config"), fields)
    if "profile" in manifest and manifest["profile"] not in PROFILES:
        raise fields.fail("profile", f"must be one of {PROFILES}, got {short_repr(manifest['profile'])}")
    if "seeds" in manifest:
        _check_seeds(manifest["seeds"], fields)
    fields.texts(manifest.get("warnings", []), "warnings")
    for key in ("created", "updated", "code_version", "eligen_bench_version", "config_hash", "seed_source"):
        if key in manifest:
            fields.string(manifest[key], key)
    _check_per_generator(manifest, fields)
    for key, value in fields.mapping(manifest.get("inputs", {}), "inputs").items():
        fields.name(key, "inputs")
        record = fields.mapping(value, f"inputs.{key}")
        fields.text(record.get("path"), f"inputs.{key}.path")
        fields.name(record.get("sha256"), f"inputs.{key}.sha256")
    for key in ("workers", "provenance", "packages", "load_notes"):
        fields.mapping(manifest.get(key, {}), key)
    for key in ("executions", "history"):
        for i, item in enumerate(fields.items(manifest.get(key, []), key)):
            fields.mapping(item, f"{key}[{i}]")
    return manifest


def _check_config(config: dict[str, Any], fields: _Fields) -> None:
    suite = fields.mapping(config.get("suite", {}), "config.suite")
    for key in ("suite", "name"):
        if key in suite:
            fields.name(suite[key], f"config.suite.{key}")
    for key in ("version", "hash", "description"):
        if key in suite:
            fields.string(suite[key], f"config.suite.{key}")
    if "count" in suite:
        fields.integer(suite["count"], "config.suite.count", 0, 2**63 - 1)
    fields.texts(suite.get("notes", []), "config.suite.notes")
    if "generators" not in config:
        raise fields.fail("config.generators", "missing (not a run manifest)")
    for label, identity in fields.mapping(config["generators"], "config.generators").items():
        fields.name(label, "config.generators")
        fields.mapping(identity, f"config.generators.{label}")
    for label, record in fields.mapping(config.get("metrics", {}), "config.metrics").items():
        _check_metric(label, record, fields)
    if "seeds" in config:
        fields.integer(config["seeds"], "config.seeds", 1, MAX_SEEDS)
    if config.get("base_seed") is not None:  # null when the seeds are listed
        fields.integer(config["base_seed"], "config.base_seed", 0, MAX_SEED)
    if "seed_list" in config:
        listed = fields.items(config["seed_list"], "config.seed_list")
        if not 1 <= len(listed) <= MAX_SEEDS:
            raise fields.fail("config.seed_list", f"must hold 1 to {MAX_SEEDS} seeds, holds {len(listed)}")
        for i, value in enumerate(listed):
            fields.integer(value, f"config.seed_list[{i}]", 0, MAX_SEED)
    if "profile" in config and config["profile"] not in PROFILES:
        raise fields.fail("config.profile", f"must be one of {PROFILES}, got {short_repr(config['profile'])}")


def _check_metric(label: Any, record: Any, fields: _Fields) -> None:
    fields.text(label, "config.metrics")
    field = f"config.metrics[{label!r}]"
    record = fields.mapping(record, field)
    if record.get("key", ""):
        fields.name(record["key"], f"{field}.key")
    if "shard_size" in record:
        fields.integer(record["shard_size"], f"{field}.shard_size", 1, MAX_SHARD)
    if "name" in record:
        fields.text(record["name"], f"{field}.name")
    if "level" in record and record["level"] not in ("entity", "image"):
        raise fields.fail(f"{field}.level", f"must be 'entity' or 'image', got {short_repr(record['level'])}")
    if "scale" in record and fields.number(record["scale"], f"{field}.scale") == 0:
        raise fields.fail(f"{field}.scale", "must be a non-zero number, got 0")
    if "higher_is_better" in record:
        fields.boolean(record["higher_is_better"], f"{field}.higher_is_better")
    for key in ("identity", "options"):
        fields.mapping(record.get(key) or {}, f"{field}.{key}")
    if "reference" in record:
        fields.string(record["reference"], f"{field}.reference")


def _check_seeds(seeds: Any, fields: _Fields) -> None:
    for layout_id, values in fields.mapping(seeds, "seeds").items():
        fields.name(layout_id, "seeds")
        values = fields.items(values, f"seeds.{layout_id}")
        if not 1 <= len(values) <= MAX_SEEDS:
            raise fields.fail(f"seeds.{layout_id}", f"must hold 1 to {MAX_SEEDS} seeds, holds {len(values)}")
        for i, value in enumerate(values):
            fields.integer(value, f"seeds.{layout_id}[{i}]", 0, MAX_SEED)


def _check_per_generator(manifest: dict[str, Any], fields: _Fields) -> None:
    """The records kept per generator label: notes, references, prompt truncation."""
    for label, notes in fields.mapping(manifest.get("adapt_notes", {}), "adapt_notes").items():
        fields.name(label, "adapt_notes")
        if isinstance(notes, dict):  # note -> number of layouts it applies to
            for note, count in notes.items():
                fields.text(note, f"adapt_notes.{label}")
                fields.integer(count, f"adapt_notes.{label}.{note}", 0, 2**63 - 1)
        else:
            fields.texts(notes, f"adapt_notes.{label}")
    for key in ("references", "entity_text"):
        for label, text in fields.mapping(manifest.get(key, {}), key).items():
            fields.name(label, key)
            fields.string(text, f"{key}.{label}")
    truncation = fields.mapping(manifest.get("prompt_truncation", {}), "prompt_truncation")
    for label, encoders in truncation.items():
        fields.name(label, "prompt_truncation")
        for encoder, record in fields.mapping(encoders, f"prompt_truncation.{label}").items():
            field = f"prompt_truncation.{label}.{encoder}"
            record = fields.mapping(record, field)
            for key in ("max_tokens", "truncated"):
                if key in record:
                    fields.integer(record[key], f"{field}.{key}", 0, 2**63 - 1)
            fields.texts(record.get("prompts", []), f"{field}.prompts")


def seed_table(manifest: Mapping[str, Any], layout_ids: list[str], where: str) -> dict[str, list[int]]:
    """The manifest's seeds (checked by `check_manifest`), which must cover every layout of the
    run's suite with `config.seeds` seeds each."""
    fields = _Fields(where)
    if "seeds" not in manifest:
        raise fields.fail("seeds", "missing: the manifest records no seeds (not a generated run?)")
    seeds = manifest["seeds"]
    count = manifest["config"].get("seeds")
    for layout_id in layout_ids:
        if layout_id not in seeds:
            raise fields.fail("seeds", f"no seeds for layout {layout_id!r} of suite.jsonl")
        if count is not None and len(seeds[layout_id]) != count:
            raise fields.fail(f"seeds.{layout_id}", f"holds {len(seeds[layout_id])} seed(s); config.seeds is {count}")
    return dict(seeds)


def metric_shards(manifest: Mapping[str, Any], where: str) -> dict[str, tuple[str, int]]:
    """Per metric label of the manifest: its key and shard size, which name its score shards."""
    fields = _Fields(where)
    found = {}
    for label, record in manifest["config"].get("metrics", {}).items():
        field = f"config.metrics[{label!r}]"
        if not record.get("key"):
            raise fields.fail(f"{field}.key", "missing: the metric's score shards cannot be found without it")
        if "shard_size" not in record:
            raise fields.fail(f"{field}.shard_size", "missing: the metric's score shards cannot be found without it")
        found[label] = (record["key"], record["shard_size"])
    return found


# score tables -------------------------------------------------------------------------
def read_score_table(root: Path, path: Path) -> pd.DataFrame | None:
    """The checked score table (`scores.parquet` or a score shard) at `path` of the run `root`;
    None when there is none."""
    import pandas as pd

    if not path.exists() and not path.is_symlink():
        return None
    with open_run_file(root, path) as handle:
        try:
            table = pd.read_parquet(handle)
        except Exception as exc:  # pyarrow raises several types on a damaged file
            raise InputError(f"cannot read score table ({type(exc).__name__}: {_first_line(exc)})",
                             where=str(path)) from None
    return check_score_table(table, str(path))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return short_repr(text.splitlines()[0] if text else "", 120)


def check_score_table(table: pd.DataFrame, where: str) -> pd.DataFrame:
    """`table` when its columns have the types and ranges of a score table; InputError naming
    the file and the first column that does not."""
    fields = _Fields(where)
    missing = [c for c in SCORE_COLUMNS if c not in table.columns and c not in OPTIONAL_COLUMNS]
    if missing:
        raise fields.fail("columns", f"missing column(s) {missing}")
    for column, check in (("metric", fields.text), ("generator", fields.name), ("layout_id", fields.name),
                          ("status", fields.text), ("metric_key", fields.string)):
        _strings(table[column], column, fields, check, optional=False)
    for column in ("detail", "image_sha256"):
        if column in table.columns:
            _strings(table[column], column, fields, fields.string, optional=True)
    keys = [key for key in table["metric_key"].unique() if key]
    for key in keys:
        fields.name(key, "metric_key")
    _integers(table["seed_index"], "seed_index", fields, 0, MAX_SEEDS - 1)
    _integers(table["entity_index"], "entity_index", fields, -1, MAX_ENTITY_INDEX)
    if "seed" in table.columns and not table["seed"].isna().all():
        _integers(table["seed"], "seed", fields, 0, MAX_SEED)
    _values(table["value"], fields)
    return table


def _strings(column: pd.Series, name: str, fields: _Fields, check: Any, *, optional: bool) -> None:
    from pandas.api.types import infer_dtype

    kind = infer_dtype(column, skipna=optional)
    if kind not in ("string", "empty"):
        example = next((v for v in column if not isinstance(v, str) and not (optional and _null(v))), None)
        raise fields.fail(name, f"must hold strings, found {kind} values (e.g. {short_repr(example)})")
    for value in column.dropna().unique() if optional else column.unique():
        check(value, name)


def _null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _integers(column: pd.Series, name: str, fields: _Fields, low: int, high: int) -> None:
    from pandas.api.types import is_bool_dtype, is_integer_dtype

    if not len(column):  # an empty shard's columns have no type to check
        return
    if is_bool_dtype(column) or not is_integer_dtype(column):
        example = column.iloc[0]
        raise fields.fail(name, f"must hold integers, found {column.dtype} values (e.g. {short_repr(example)})")
    if column.isna().any():
        raise fields.fail(name, f"must hold integers, found {int(column.isna().sum())} missing value(s)")
    if not (low <= column.min() and column.max() <= high):
        bad = column[(column < low) | (column > high)].iloc[0]
        raise fields.fail(name, f"must hold integers in [{low}, {high}], found {bad}")


def _values(column: pd.Series, fields: _Fields) -> None:
    import numpy as np
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    if not len(column):
        return
    if is_bool_dtype(column) or not is_numeric_dtype(column):
        example = column.iloc[0]
        raise fields.fail("value", f"must hold numbers, found {column.dtype} values (e.g. {short_repr(example)})")
    values = column.to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isnan(values) & ~(np.abs(values) <= MAX_SCORE)
    if bad.any():
        raise fields.fail("value", f"{int(bad.sum())} value(s) outside [-{MAX_SCORE:g}, {MAX_SCORE:g}] "
                          f"(e.g. {values[bad][0]:g}); no metric gives such values")
