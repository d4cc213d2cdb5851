"""The main job on the embedded default: bundled mini suite, tiny profile, every built-in plugin."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from eligen_bench import registry
from eligen_bench.cli import main
from eligen_bench.suites.bundled import load_mini
from eligen_bench.tiny import TINY_WARNING

REFERENCE = Path(__file__).parents[1] / "results" / "reference" / "eligen_table1.csv"
GENERATORS = ["eligen", "flux", "gligen", "multidiffusion", "regional-flux"]


@pytest.mark.slow
def test_tiny_profile_run_generates_scores_and_reports(tmp_path) -> None:
    out = tmp_path / "run"
    layouts = load_mini().layouts[:5]
    assert main(["run", "--profile", "tiny", "--limit", "5", "--out", str(out), "--no-progress",
                 "--reference", str(REFERENCE)]) == 0

    manifest = json.loads((out / "manifest.json").read_text())
    assert TINY_WARNING in manifest["warnings"]
    assert sorted(manifest["config"]["generators"]) == GENERATORS
    for generator in GENERATORS:
        assert len(list((out / "images" / generator).glob("*.png"))) == 5
        assert manifest["config"]["generators"][generator]["profile"] == "tiny"
        assert manifest["references"][generator] == registry.get("generator", generator).reference
    assert manifest["load_notes"]["eligen"] == ["EliGen LoRA: 20 modules updated"]

    table = pd.read_parquet(out / "scores.parquet")
    entities = sum(len(layout.entities) for layout in layouts)
    for label, record in manifest["config"]["metrics"].items():
        rows = table[table["metric"] == label]
        per_generator = entities if record["level"] == "entity" else len(layouts)
        assert len(rows) == per_generator * len(GENERATORS), label
        assert set(rows["metric_key"]) == {record["key"]}
        assert record["identity"]["profile"] == "tiny"
        assert record["reference"] == registry.get("metric", record["name"]).reference
    assert "mps" not in manifest["config"]["metrics"]  # needs a checkpoint file: not in default runs

    report = (out / "report" / "table.md").read_text()
    assert TINY_WARNING in report and "| EliGen |" in report  # the method's display name
    assert TINY_WARNING in (out / "report" / "index.html").read_text()
    for name in ("table.tex", "win_rates.md", "reference.md", "breakdown_entities.md", "summary.csv"):
        assert (out / "report" / name).exists(), name

    # The same command again makes and scores nothing, and the table is unchanged.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    assert main(["run", "--profile", "tiny", "--limit", "5", "--out", str(out), "--no-progress"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == stamps
    pd.testing.assert_frame_equal(pd.read_parquet(out / "scores.parquet"), table)
