"""Fuzzing the reader of received run folders: any value anywhere in a manifest, any column
content in a score table, gives a loaded run or one InputError line naming the file, never
another exception, in the reader itself, in the report's loader and in `status`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from eligen_bench.cli import main
from eligen_bench.errors import InputError
from eligen_bench.report.data import load_run
from eligen_bench.rundir import RunDir
from eligen_bench.status import run_status

from fixtures import write_small_suite

SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e308, -1e308, 2**63, -1])
           | st.text(max_size=12) | st.sampled_from(["\ud800", "../../x", "a\nb", "", "painter", "plain"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    suite = write_small_suite(root / "s.jsonl")
    assert main(["run", "--suite", str(suite), "--generators", "painter=harness_plugins:BoxPainter",
                 "--metrics", "harness_plugins:RegionFill", "--out", str(root / "run"), "--no-progress"]) == 0
    return root / "run"


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON value, as key/index paths."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:2]):
            found += paths(item, (*prefix, index))
    return found


def replaced(data: Any, path: tuple, value: Any, delete: bool) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy = dict(data) if isinstance(data, dict) else list(data)
    if delete and not rest and isinstance(copy, dict):
        del copy[head]
    else:
        copy[head] = replaced(copy[head], rest, value, delete)
    return copy


def loads_or_one_line(run: Path, file: str) -> None:
    """Reader, report loader and status: each succeeds or raises one InputError naming `file`."""
    for read in (RunDir(run).read_manifest, lambda: load_run(run), lambda: run_status(RunDir(run))):
        try:
            read()
        except InputError as exc:
            text = str(exc)
            assert "\n" not in text and file in text, text
            text.encode("utf-8")  # printable: no lone surrogate reaches the terminal


@FUZZ
@given(data=st.data(), value=VALUES, delete=st.booleans())
def test_any_manifest_value_anywhere_loads_or_is_one_line(made: Path, data, value, delete) -> None:
    manifest = json.loads((made / "manifest.json").read_text())
    place = data.draw(st.sampled_from(paths(manifest)))
    changed = replaced(manifest, place, value, delete)
    original = (made / "manifest.json").read_text()
    try:
        (made / "manifest.json").write_text(json.dumps(changed, ensure_ascii=True))
        loads_or_one_line(made, "manifest.json")
    finally:
        (made / "manifest.json").write_text(original)


COLUMN_VALUES = st.lists(SCALARS.filter(lambda v: not isinstance(v, str) or v.isascii()), min_size=1, max_size=7)


@FUZZ
@given(column=st.sampled_from(["metric", "generator", "layout_id", "seed_index", "seed", "entity_index",
                               "value", "status", "detail", "image_sha256", "metric_key"]),
       values=COLUMN_VALUES, drop=st.booleans())
def test_any_score_column_content_loads_or_is_one_line(made: Path, column, values, drop) -> None:
    original = (made / "scores.parquet").read_bytes()
    table = pd.read_parquet(made / "scores.parquet")
    if drop:
        table = table.drop(columns=[column])
    else:
        cells = [values[i % len(values)] for i in range(len(table))]
        table[column] = pd.Series(cells, dtype="object")
    try:
        try:
            table.to_parquet(made / "scores.parquet")
        except Exception:  # a mix pyarrow cannot store is no file anyone could send
            assume(False)
        loads_or_one_line(made, "scores.parquet")
    finally:
        (made / "scores.parquet").write_bytes(original)


def test_the_fuzzed_run_is_still_whole(made: Path) -> None:
    """The fuzz tests restore every file: the run still loads with all its rows."""
    run = load_run(made)
    assert len(run.scores) == 7 and not math.isnan(run.scores["value"].mean())
