"""The worked example of docs/architecture.md runs as written, by its module:Class targets."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from eligen_bench.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_worked_example_generates_and_scores(tmp_path: Path, monkeypatch) -> None:
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    package = tmp_path / "red_example"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "red.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    assert main(["run", "--profile", "tiny", "--limit", "8", "--out", str(out), "--no-progress",
                 "--generators", "red_example.red:RedBoxes", "--metrics", "red_example.red:RedFraction"]) == 0
    table = pd.read_parquet(out / "scores.parquet")
    entities = table[table["entity_index"] >= 0]
    assert len(entities) > 0 and (entities["value"] == 1.0).all()
