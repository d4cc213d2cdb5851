"""A LayoutSAM-Eval run end to end: fixture files -> suite -> two generators -> four scores -> report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from eligen_bench.cli import main
from eligen_bench.metrics.layoutsam import judge as jd
from eligen_bench.suite import read_suite

import layoutsam_script as script
from layoutsam_fixture import HashJudge, write_layoutsam_fixture

REFERENCE = Path(__file__).parents[1] / "results" / "reference" / "contextgen_table2_layoutsam.csv"
GENERATORS = "short=harness_plugins:BoxPainter,detail=harness_plugins:BoxPainter[entity_text=description]"
METRICS = "layoutsam_spatial,layoutsam_color,layoutsam_texture,layoutsam_shape"
ASPECTS = ("spatial", "color", "texture", "shape")


def build_suite(tmp_path: Path) -> Path:
    write_layoutsam_fixture(tmp_path / "src")
    assert main(["suite", "build", "layoutsam", "--dir", str(tmp_path / "src"), "--out", str(tmp_path / "s.jsonl")]) == 0
    return tmp_path / "s.jsonl"


def run(tmp_path: Path, suite: Path, out: Path) -> pd.DataFrame:
    assert main(["run", "--profile", "tiny", "--suite", str(suite), "--generators", GENERATORS, "--metrics", METRICS,
                 "--out", str(out), "--no-progress", "--reference", str(REFERENCE)]) == 0
    return pd.read_csv(out / "report" / "summary.csv")


def test_report_values_are_the_scripts_aggregate(tmp_path, monkeypatch) -> None:
    judge = HashJudge()  # the test double stands in for the tiny judge; the report does the rest
    monkeypatch.setattr(jd, "load_tiny_judge", lambda *args: judge)
    suite = build_suite(tmp_path)
    summary = run(tmp_path, suite, tmp_path / "run").set_index(["generator", "metric"])
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["entity_text"] == {"short": "prompt", "detail": "description"}
    layouts = read_suite(suite).layouts
    for generator in ("short", "detail"):
        stats = {}
        for layout in layouts:
            png = tmp_path / "run" / "images" / generator / f"{layout.id}_0.png"
            jpg = tmp_path / f"{generator}-{layout.id}.jpg"
            Image.open(png).convert("RGB").save(jpg)
            crops = tmp_path / f"crops-{generator}-{layout.id}"
            crops.mkdir()
            stats[layout.id] = script.score_image(
                str(jpg), [list(e.bbox) for e in layout.entities], [e.prompt for e in layout.entities],
                [e.description for e in layout.entities], HashJudge().reply, 64, str(crops))
        expected = script.aggregate(stats)
        for aspect in ASPECTS:
            assert summary.loc[(generator, f"layoutsam_{aspect}"), "mean"] == pytest.approx(100 * expected[aspect])
            assert summary.loc[(generator, f"layoutsam_{aspect}"), "n"] == 5


@pytest.mark.slow
def test_tiny_profile_run_gives_four_scores_per_generator(tmp_path) -> None:
    summary = run(tmp_path, build_suite(tmp_path), tmp_path / "run")
    table = summary.pivot(index="generator", columns="metric", values="mean")
    assert sorted(table.index) == ["detail", "short"]
    assert sorted(table.columns) == sorted(METRICS.split(","))
    assert table.notna().all().all() and ((table >= 0) & (table <= 100)).all().all()
    report = (tmp_path / "run" / "report" / "table.md").read_text()
    assert "Shape (LayoutSAM)" in report and "tiny profile" in report


def test_contextgen_reference_rows_meet_our_generator_names() -> None:
    from eligen_bench.report.data import MetricInfo
    from eligen_bench.report.reference import compare_with_reference, read_reference

    metrics = {label: MetricInfo(label=label, name=name, key="k") for label, name in
               (("color", "layoutsam_color"), ("CLIP", "clip_global"), ("Pick", "pickscore"))}
    summary = pd.DataFrame([{"generator": g, "metric": m, "mean": 50.0, "ci_low": 40.0, "ci_high": 60.0}
                            for g in ("eligen", "instancediffusion", "flux") for m in metrics])
    table = compare_with_reference(summary, metrics, read_reference(REFERENCE)).set_index(["generator", "metric"])
    assert table.loc[("instancediffusion", "color"), "reference_model"] == "InstanceDiffusion"
    assert table.loc[("instancediffusion", "color"), "published"] == pytest.approx(71.39)
    assert table.loc[("eligen", "CLIP"), "published"] == pytest.approx(26.89)
    assert table.loc[("eligen", "Pick"), "published"] == pytest.approx(22.27)
    assert "flux" not in table.index.get_level_values(0)
