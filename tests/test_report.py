"""The report stage on hand-built run folders with known numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eligen_bench.errors import InputError
from eligen_bench.escape import markdown_text
from eligen_bench.layout import Entity, Layout
from eligen_bench.report import (
    ReportOptions,
    build_report,
    load_run,
    summarize,
    win_rates,
    write_report,
)
from eligen_bench.report.reference import reference_column
from eligen_bench.report.stats import BootstrapOptions, breakdown_by_category, breakdown_by_entities
from eligen_bench.report.tables import BEST, SECOND, rank_marks
from eligen_bench.suite import Suite, read_suite
from eligen_bench.tiny import TINY_WARNING

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "reference" / "eligen_table1.csv"
GENERATORS = ("eligen", "gligen", "migc")
VLM = "vlm_success[judge=qwen2vl]"
FAST = ReportOptions(bootstrap_resamples=200, plot_formats=("png",))

# Entity-level values per generator, per layout (L0: 1 entity, L1: 2, L2: 3).
# A (value, status) tuple marks an invalid row; its value must never reach a mean.
VLM_VALUES = {
    "eligen": [[1], [1, 1], [1, 0, 1]],  # 5/6
    "gligen": [[1], [0, 1], [0, 0, 1]],  # 3/6
    "migc": [[1], [1, 0], [1, (0.0, "unparsed"), 1]],  # 4/5
}
MIOU_VALUES = {
    "eligen": [[0.5], [0.6, 0.4], [0.3, 0.3, 0.3]],  # 2.4/6 = 0.4
    "gligen": [[0.9], [0.8, 0.7], [0.6, 0.5, (0.0, "excluded")]],  # 3.5/5 = 0.7
    "migc": [[0.2], [0.2, 0.2], [0.2, 0.2, 0.2]],  # 0.2
}
PICK_VALUES = {  # image level, one per layout
    "eligen": [22.0, 21.0, 20.0],
    "gligen": [21.0, 21.0, 19.0],
    "migc": [20.0, 22.0, 18.0],
}


def make_suite() -> Suite:
    def entity(prompt: str, category: str, x: float) -> Entity:
        return Entity(prompt=prompt, bbox=(x, 0.1, x + 0.2, 0.5), category=category)

    layouts = (
        Layout("L0", "a dog on grass", (entity("a dog", "dog", 0.1),), 64, 64),
        Layout("L1", "a cat and a dog", (entity("a cat", "cat", 0.1), entity("a dog", "dog", 0.5)), 64, 64),
        Layout("L2", "two cats and a person",
               (entity("a cat", "cat", 0.1), entity("a cat", "cat", 0.4), entity("a person", "person", 0.7)),
               64, 64),
    )
    return Suite("testsuite", "1", layouts, notes=("hand-made test suite",))


def metric_config(miou_key: str) -> dict:
    return {
        VLM: {"name": "vlm_success", "options": {"judge": "qwen2vl"}, "identity": {"judge": "qwen2vl"},
              "key": "k_vlm", "higher_is_better": True, "level": "entity", "scale": 100},
        "miou": {"name": "miou", "options": {}, "identity": {"model": "yolo11x", "v": miou_key},
                 "key": miou_key, "higher_is_better": True, "level": "entity", "scale": 100},
        "pickscore": {"name": "pickscore", "options": {}, "identity": {}, "key": "k_pick",
                      "higher_is_better": True, "level": "image", "scale": 1},
    }


def score_rows(label: str, key: str, values: dict, *, entity_level: bool, shift: float = 0.0,
               shift_generator: str = "") -> list[dict]:
    rows = []
    for generator, per_layout in values.items():
        for layout_index, layout_values in enumerate(per_layout):
            items = list(enumerate(layout_values)) if entity_level else [(-1, layout_values)]
            for entity_index, item in items:
                value, status = item if isinstance(item, tuple) else (float(item), "ok")
                if status == "ok" and generator == shift_generator:
                    value += shift
                rows.append({"metric": label, "generator": generator, "layout_id": f"L{layout_index}",
                             "seed_index": 0, "seed": 1000 + layout_index, "entity_index": entity_index,
                             "value": value, "status": status, "detail": "{}", "image_sha256": "x",
                             "metric_key": key})
    return rows


def make_run(root: Path, name: str = "run_a", *, profile: str = "tiny", miou_key: str = "k_miou",
             miou_shift: float = 0.0, extra_rows: list[dict] | None = None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    suite = make_suite()
    suite.write(run / "suite.jsonl")
    manifest = {
        "format": 1, "eligen_bench_version": "0.1.0", "created": "2026-01-01T00:00:00Z",
        "code_version": "abc123", "packages": {"numpy": np.__version__}, "profile": profile,
        "warnings": [TINY_WARNING] if profile == "tiny" else [],
        "config": {"suite": {"name": suite.name, "version": suite.version, "hash": suite.hash,
                             "count": 3, "notes": list(suite.notes)},
                   "generators": {g: {"name": g} for g in GENERATORS},
                   "metrics": metric_config(miou_key), "seeds": 1, "base_seed": 0},
        "adapt_notes": {"gligen": ["masks replaced by their bounding boxes"]},
    }
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    for generator in GENERATORS:
        folder = run / "images" / generator
        folder.mkdir(parents=True)
        for layout in suite.layouts:
            Image.new("RGB", (8, 8), (40, 80, 120)).save(folder / f"{layout.id}_0.png")
    rows = score_rows(VLM, "k_vlm", VLM_VALUES, entity_level=True)
    rows += score_rows("miou", miou_key, MIOU_VALUES, entity_level=True, shift=miou_shift,
                       shift_generator="eligen")
    rows += score_rows("pickscore", "k_pick", PICK_VALUES, entity_level=False)
    rows += extra_rows or []
    pd.DataFrame(rows).to_parquet(run / "scores.parquet")
    return run


def cell(summary: pd.DataFrame, generator: str, metric: str) -> pd.Series:
    return summary[(summary["generator"] == generator) & (summary["metric"] == metric)].iloc[0]


def test_means_exclude_invalid_rows_and_count_them(tmp_path: Path) -> None:
    summary = summarize(load_run(make_run(tmp_path)), BootstrapOptions(resamples=200))
    assert cell(summary, "eligen", VLM)["mean"] == pytest.approx(500 / 6)
    assert cell(summary, "gligen", VLM)["mean"] == pytest.approx(50.0)
    assert cell(summary, "migc", VLM)["mean"] == pytest.approx(80.0)  # the unparsed 0.0 is not averaged
    assert cell(summary, "eligen", "miou")["mean"] == pytest.approx(40.0)
    assert cell(summary, "gligen", "miou")["mean"] == pytest.approx(70.0)  # the excluded 0.0 neither
    assert cell(summary, "gligen", "pickscore")["mean"] == pytest.approx(61 / 3)
    migc = cell(summary, "migc", VLM)
    assert (migc["n"], migc["n_rows"], migc["n_unparsed"], migc["n_excluded"]) == (5, 6, 1, 0)
    gligen = cell(summary, "gligen", "miou")
    assert (gligen["n"], gligen["n_excluded"], gligen["n_expected"]) == (5, 1, 6)


def test_bootstrap_is_deterministic_and_contains_the_mean(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path))
    first = summarize(run, BootstrapOptions(resamples=300, seed=7))
    second = summarize(run, BootstrapOptions(resamples=300, seed=7))
    pd.testing.assert_frame_equal(first, second)
    assert ((first["ci_low"] <= first["mean"]) & (first["mean"] <= first["ci_high"])).all()
    # eligen miou: per-layout means 0.5, 0.5, 0.3, so any resample lies in [30, 50].
    eligen = cell(first, "eligen", "miou")
    assert 30.0 - 1e-9 <= eligen["ci_low"] < eligen["ci_high"] <= 50.0 + 1e-9
    # migc miou is 0.2 everywhere: the interval collapses onto the mean.
    migc = cell(first, "migc", "miou")
    assert migc["ci_low"] == pytest.approx(20.0) and migc["ci_high"] == pytest.approx(20.0)


def test_table_marks_best_and_second_in_markdown_and_latex(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    write_report(run, options=FAST)
    markdown = (run / "report" / "table.md").read_text(encoding="utf-8")
    latex = (run / "report" / "table.tex").read_text(encoding="utf-8")
    eligen_row = next(line for line in markdown.splitlines() if line.startswith("| eligen |"))
    migc_row = next(line for line in markdown.splitlines() if line.startswith("| migc |"))
    gligen_row = next(line for line in markdown.splitlines() if line.startswith("| gligen |"))
    assert "**83.33**" in eligen_row and "<u>40.00</u>" in eligen_row and "**21.00**" in eligen_row
    assert "<u>80.00</u>" in migc_row and "20.00" in migc_row
    assert "**70.00**" in gligen_row and "<u>20.33</u>" in gligen_row
    assert r"\textbf{83.33}" in latex and r"\underline{80.00}" in latex and r"\textbf{70.00}" in latex
    assert r"\toprule" in latex and r"\bottomrule" in latex and r"vlm\_success" in latex
    # Counts table: the unparsed and excluded rows are shown.
    assert "5 / 0 / 1" in markdown
    assert "5 / 1 / 0" in markdown


def test_rank_marks_respect_direction_and_ties() -> None:
    assert rank_marks([1.0, 3.0, 2.0], higher_is_better=True, decimals=2) == [None, BEST, SECOND]
    assert rank_marks([1.0, 3.0, 2.0], higher_is_better=False, decimals=2) == [BEST, None, SECOND]
    assert rank_marks([5.001, 5.0, 4.0, math.nan], higher_is_better=True, decimals=2) == [BEST, BEST, SECOND, None]


def test_win_rates_count_ties_as_half() -> None:
    rows = []
    for generator, values in PICK_VALUES.items():
        for i, value in enumerate(values):
            rows.append({"metric": "pickscore", "generator": generator, "layout_id": f"L{i}",
                         "seed_index": 0, "entity_index": -1, "value": value, "status": "ok"})
    rows.append({"metric": "pickscore", "generator": "gligen", "layout_id": "L9", "seed_index": 0,
                 "entity_index": -1, "value": 99.0, "status": "ok"})  # no opponent: not compared
    table = win_rates(pd.DataFrame(rows), "pickscore").set_index(["generator", "opponent"])
    assert table.loc[("eligen", "gligen"), "win_rate"] == pytest.approx(2.5 / 3)
    assert table.loc[("gligen", "eligen"), "win_rate"] == pytest.approx(0.5 / 3)
    assert tuple(table.loc[("eligen", "gligen"), ["wins", "ties", "losses", "n"]]) == (2, 1, 0, 3)
    assert table.loc[("eligen", "migc"), "win_rate"] == pytest.approx(2 / 3)
    lower = win_rates(pd.DataFrame(rows), "pickscore", higher_is_better=False).set_index(["generator", "opponent"])
    assert lower.loc[("eligen", "gligen"), "win_rate"] == pytest.approx(0.5 / 3)


def test_breakdowns_by_entity_count_and_category(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path))
    by_count = breakdown_by_entities(run).set_index(["metric", "generator", "n_entities"])
    assert by_count.loc[("miou", "eligen", 1), "mean"] == pytest.approx(50.0)
    assert by_count.loc[("miou", "eligen", 3), "mean"] == pytest.approx(30.0)
    assert by_count.loc[("miou", "gligen", 3), "mean"] == pytest.approx(55.0)
    assert by_count.loc[("miou", "gligen", 3), "n"] == 2
    assert by_count.loc[("pickscore", "migc", 2), "mean"] == pytest.approx(22.0)
    by_category = breakdown_by_category(run).set_index(["metric", "generator", "category"])
    # eligen miou cats: 0.6 (L1), 0.3, 0.3 (L2) -> 40; dogs: 0.5, 0.4 -> 45
    assert by_category.loc[("miou", "eligen", "cat"), "mean"] == pytest.approx(40.0)
    assert by_category.loc[("miou", "eligen", "dog"), "mean"] == pytest.approx(45.0)
    assert ("pickscore", "eligen", "cat") not in by_category.index


def test_written_files_warnings_and_html(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    written = write_report(run, reference=REFERENCE, options=FAST)
    names = {p.relative_to(run / "report").as_posix() for p in written}
    expected = {"table.md", "table.tex", "summary.csv", "breakdown_entities.csv", "breakdown_entities.md",
                "breakdown_category.csv", "win_rates.md", "win_rates.csv", "index.html", "reference.csv",
                "reference.md", "warnings.txt", "plots/bar_miou.png", "plots/entities_miou.png"}
    assert expected <= names
    assert all(p.exists() for p in written)
    assert not list((run / "report").rglob(".*.tmp"))
    with Image.open(run / "report" / "plots" / "bar_miou.png") as image:
        assert image.size[0] > 100
    markdown = (run / "report" / "table.md").read_text(encoding="utf-8")
    assert markdown.startswith(f"> **WARNING:** {TINY_WARNING}")
    for name in ("win_rates.md", "breakdown_entities.md", "reference.md"):
        assert TINY_WARNING in (run / "report" / name).read_text(encoding="utf-8").split("#", 1)[0]
    assert TINY_WARNING in (run / "report" / "table.tex").read_text(encoding="utf-8")
    page = (run / "report" / "index.html").read_text(encoding="utf-8")
    assert page.index(TINY_WARNING) < page.index("<h1>")
    assert 'src="../images/eligen/L0_0.png"' in page and "<svg" in page and "<rect" in page
    assert "a person" in page and "two cats and a person" in page
    assert "masks replaced by their bounding boxes" in page
    assert "<script" not in page
    wins = pd.read_csv(run / "report" / "win_rates.csv").set_index(["generator", "opponent"])
    assert wins.loc[("eligen", "gligen"), "win_rate"] == pytest.approx(2.5 / 3)
    assert "83.33" in (run / "report" / "win_rates.md").read_text(encoding="utf-8")
    summary = pd.read_csv(run / "report" / "summary.csv")
    assert set(summary["profile"]) == {"tiny"}


def test_reference_comparison_picks_published_numbers(tmp_path: Path) -> None:
    report = build_report(make_run(tmp_path), reference_csv=REFERENCE, options=FAST)
    table = report.reference.set_index(["generator", "metric"])
    assert len(table) == 6  # 3 generators x (qwen2vl success, miou); pickscore has no published column
    assert table.loc[("eligen", VLM), "published"] == pytest.approx(88.41)
    assert table.loc[("migc", VLM), "published"] == pytest.approx(77.01)
    assert table.loc[("gligen", "miou"), "published"] == pytest.approx(59.48)
    assert table.loc[("gligen", "miou"), "delta"] == pytest.approx(70.0 - 59.48)
    assert table.loc[("eligen", "miou"), "reference_model"] == "EliGen"


def test_reference_column_mapping() -> None:
    from eligen_bench.report.data import MetricInfo

    def info(label: str, name: str, **options: str) -> MetricInfo:
        return MetricInfo(label=label, name=name, key="k", options=options)

    assert reference_column(info("vlm_success[judge=internvl2]", "vlm_success")) == "success_internvl2"
    assert reference_column(info("judge_b", "vlm_success", judge="THUDM/cogvlm2-llama3-chat-19B")) == "success_cogvlm2"
    assert reference_column(info("vlm_success[judge=llava]", "vlm_success")) is None
    assert reference_column(info("clip_global", "clip_global")) == "clip_global"
    assert reference_column(info("pickscore", "pickscore")) == "pickscore"
    assert reference_column(info("color", "layoutsam_color")) == "layoutsam_color"


def test_comparison_warns_on_mismatched_metric_keys_and_reports_deltas(tmp_path: Path) -> None:
    current = make_run(tmp_path, "current", profile="full")
    other = make_run(tmp_path, "previous", profile="full", miou_key="k_miou_v2", miou_shift=0.3)
    report = build_report(current, others=[other], options=FAST)
    assert any("previous" in w and "'miou'" in w and "k_miou_v2" in w for w in report.warnings)
    assert not any(VLM in w for w in report.warnings)
    deltas = report.deltas.set_index(["generator", "metric"])
    assert deltas.loc[("eligen", "miou"), "delta"] == pytest.approx(40.0 - 70.0)
    assert bool(deltas.loc[("eligen", "miou"), "exceeds_ci"])
    assert deltas.loc[("gligen", "miou"), "delta"] == pytest.approx(0.0)
    assert not bool(deltas.loc[("gligen", "miou"), "exceeds_ci"])
    assert not bool(deltas.loc[("gligen", "miou"), "comparable"])
    assert bool(deltas.loc[("gligen", VLM), "comparable"])
    written = write_report(current, others=[other], options=FAST)
    assert current / "report" / "deltas.csv" in written
    assert "k_miou_v2" in (current / "report" / "deltas.md").read_text(encoding="utf-8")
    assert TINY_WARNING not in (current / "report" / "table.md").read_text(encoding="utf-8")


def test_paired_interval_flags_a_small_consistent_drop(tmp_path: Path) -> None:
    from eligen_bench.report.compare import regressions

    current = make_run(tmp_path, "current", profile="full")
    previous = make_run(tmp_path, "previous", profile="full", miou_shift=0.01)
    report = build_report(current, others=[previous], options=FAST)
    row = report.deltas.set_index(["generator", "metric"]).loc[("eligen", "miou")]
    assert row["delta"] == pytest.approx(-1.0)
    # Every layout dropped by one point, so every paired resample differs by exactly -1.
    assert row["delta_ci_low"] == pytest.approx(-1.0) and row["delta_ci_high"] == pytest.approx(-1.0)
    # This run's own interval is wide enough to hide the drop; the paired one is not.
    assert row["ci_low"] <= row["other_mean"] <= row["ci_high"]
    assert bool(row["exceeds_ci"])
    worse = regressions(report.deltas, report.run.metrics)
    assert list(zip(worse["generator"], worse["metric"], strict=True)) == [("eligen", "miou")]
    unchanged = report.deltas.set_index(["generator", "metric"]).loc[("gligen", "miou")]
    assert unchanged["delta_ci_low"] == 0.0 == unchanged["delta_ci_high"] and not bool(unchanged["exceeds_ci"])


def test_comparison_warns_on_suite_and_seed_changes(tmp_path: Path) -> None:
    current = make_run(tmp_path, "current", profile="full")
    other = make_run(tmp_path, "older", profile="full")
    manifest = json.loads((other / "manifest.json").read_text(encoding="utf-8"))
    manifest["config"]["suite"]["hash"] = "0123456789abcdef"
    manifest["config"]["base_seed"] = 5
    (other / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    report = build_report(current, others=[other], options=FAST)
    assert any("older" in w and "suite hash 0123456789abcdef" in w for w in report.warnings)
    assert any("older" in w and "seeds differ" in w for w in report.warnings)
    assert not report.deltas["comparable"].any()


def test_warns_when_one_label_has_several_metric_keys(tmp_path: Path) -> None:
    stale = score_rows("miou", "k_old", {"eligen": [[0.0], [0.0, 0.0], [0.0, 0.0, 0.0]]}, entity_level=True)
    report = build_report(make_run(tmp_path, extra_rows=stale), options=FAST)
    assert any("'miou'" in w and "2 metric keys" in w and "k_old" in w for w in report.warnings)
    # Only the manifest's key counts: the stale zeros do not pull eligen's mean down.
    assert cell(report.summary, "eligen", "miou")["mean"] == pytest.approx(40.0)


def test_incomplete_run_and_bad_folder(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    scores = pd.read_parquet(run / "scores.parquet")
    scores = scores[~((scores["generator"] == "migc") & (scores["layout_id"] == "L2"))]
    scores.to_parquet(run / "scores.parquet")
    report = build_report(run, options=FAST)
    assert any("incomplete run" in w and "migc/miou 3 of 6" in w for w in report.warnings)
    with pytest.raises(InputError, match="manifest"):
        load_run(_empty_folder(tmp_path))


def _empty_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_win_rates_report_binary_rate_and_mean_preference_probability() -> None:
    # Independent transcription of how PickScore (yuvalkirstain/PickScore@f79607f, README.md
    # calc_probs) and MPS (Kwai-Kolors/MPS@be9027f, eval_overall_mps_on_hpdv2.py infer_example)
    # turn two images' scores into preferences: torch.softmax over the pair, first entry.
    import torch

    rows = [{"metric": "pickscore", "generator": g, "layout_id": f"L{i}", "seed_index": 0, "entity_index": -1,
             "value": v, "status": "ok"} for g, values in PICK_VALUES.items() for i, v in enumerate(values)]
    table = win_rates(pd.DataFrame(rows), "pickscore", preference=True).set_index(["generator", "opponent"])
    for generator in PICK_VALUES:
        for opponent in PICK_VALUES:
            if generator == opponent:
                continue
            pairs = torch.tensor(list(zip(PICK_VALUES[generator], PICK_VALUES[opponent], strict=True)))
            expected = torch.softmax(pairs, dim=-1)[:, 0].mean().item()
            assert table.loc[(generator, opponent), "preference"] == pytest.approx(expected)
    # a 1-point margin gives a strict win (rate 1) but a preference of about 0.73, not 1
    assert table.loc[("eligen", "migc"), "win_rate"] == pytest.approx(2 / 3)
    assert table.loc[("eligen", "migc"), "preference"] != pytest.approx(table.loc[("eligen", "migc"), "win_rate"])
    plain = win_rates(pd.DataFrame(rows), "pickscore").set_index(["generator", "opponent"])
    assert plain["preference"].isna().all()  # only preference models' scores are logits


def test_win_rate_files_show_both_rates_labelled(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    write_report(run, options=FAST)
    wins = pd.read_csv(run / "report" / "win_rates.csv").set_index(["generator", "opponent"])
    pref = wins.loc[("eligen", "gligen"), "preference"]
    assert pref == pytest.approx(np.mean(1 / (1 + np.exp(-(np.array([22.0, 21.0, 20.0]) - [21.0, 21.0, 19.0])))))
    text = (run / "report" / "win_rates.md").read_text(encoding="utf-8")
    assert "win rate / preference (%)" in text and f"83.33 / {100 * pref:.2f}" in text
    assert "Table 2" in text


def test_vlm_success_shows_strict_rate_beside_parsed_rate(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    summary = summarize(load_run(run), BootstrapOptions(resamples=50)).set_index(["generator", "metric"])
    # migc: 4 yes of 5 parsed answers, 1 unparsed of 6 entities
    assert summary.loc[("migc", VLM), "mean"] == pytest.approx(80.0)
    assert summary.loc[("migc", VLM), "strict_mean"] == pytest.approx(100 * 4 / 6)
    assert summary.loc[("eligen", VLM), "strict_mean"] == pytest.approx(summary.loc[("eligen", VLM), "mean"])
    write_report(run, options=FAST)
    markdown = (run / "report" / "table.md").read_text(encoding="utf-8")
    header = next(line for line in markdown.splitlines() if line.startswith("| Model"))
    label = markdown_text(VLM)  # Markdown escapes the label's brackets
    assert f"{label} parsed (%) ↑" in header and f"{label} strict (%) ↑" in header
    migc = next(line for line in markdown.splitlines() if line.startswith("| migc"))
    assert "80.00" in migc and "66.67" in migc
    assert "unparsed answers count as failures" in markdown


def _coco_rows(generator: str, detections: dict[str, list]) -> list[dict]:
    rows = []
    for i, layout_id in enumerate(("L0", "L1", "L2")):
        status = "excluded" if layout_id == "L2" else "ok"  # a 'person' layout: give it no class entity below
        rows.append({"metric": "coco_ap", "generator": generator, "layout_id": layout_id, "seed_index": 0,
                     "seed": 1000 + i, "entity_index": -1, "value": math.nan if status == "excluded" else 1.0,
                     "status": status, "detail": json.dumps({"detections": detections[layout_id]}),
                     "image_sha256": "x", "metric_key": "k_ap"})
    return rows


def test_coco_ap_is_the_run_level_ap_over_every_image(tmp_path: Path) -> None:
    # Reference: pycocotools COCOeval (cocodataset/cocoapi@8c9bcc3, PythonAPI/pycocotools/cocoeval.py):
    # one evaluation over all images of the run; an image without ground truth keeps its
    # detections, which then count as false positives of their category.
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    suite = make_suite()
    layouts = {layout.id: layout for layout in suite.layouts}
    layouts["L2"] = Layout("L2", "a street", (Entity("sky", (0.1, 0.1, 0.3, 0.5), category="sky"),), 64, 64)
    dets = {"L0": [[0.1, 0.1, 0.3, 0.5, 0.6, "dog"]],
            "L1": [[0.1, 0.1, 0.3, 0.5, 0.5, "cat"], [0.5, 0.1, 0.7, 0.5, 0.4, "dog"]],
            "L2": [[0.0, 0.0, 0.5, 0.5, 0.9, "dog"]]}  # a confident dog where the layout has none
    run = make_run(tmp_path, extra_rows=_coco_rows("eligen", dets))
    Suite(suite.name, suite.version, tuple(layouts[i] for i in ("L0", "L1", "L2")), notes=suite.notes).write(
        run / "suite.jsonl")
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    manifest["config"]["suite"]["hash"] = read_suite(run / "suite.jsonl").hash
    manifest["config"]["metrics"]["coco_ap"] = {"name": "coco_ap", "options": {}, "identity": {}, "key": "k_ap",
                                                "higher_is_better": True, "level": "image", "scale": 100}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    classes = {"dog": 1, "cat": 2}
    images, gts, dts = [], [], []
    for image_id, layout_id in enumerate(("L0", "L1", "L2"), start=1):
        images.append({"id": image_id, "width": 64, "height": 64})
        for e in layouts[layout_id].entities:
            if e.category in classes:
                x1, y1, x2, y2 = (v * 64 for v in e.bbox)
                gts.append({"id": len(gts) + 1, "image_id": image_id, "category_id": classes[e.category],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        for x1, y1, x2, y2, score, label in dets[layout_id]:
            box = [x1 * 64, y1 * 64, (x2 - x1) * 64, (y2 - y1) * 64]
            dts.append({"id": len(dts) + 1, "image_id": image_id, "category_id": classes[label], "bbox": box,
                        "area": box[2] * box[3], "score": score, "iscrowd": 0})
    cats = [{"id": i, "name": n} for n, i in classes.items()]
    gt, dt = COCO(), COCO()
    gt.dataset = {"images": images, "categories": cats, "annotations": gts}
    dt.dataset = {"images": images, "categories": cats, "annotations": dts}
    gt.createIndex()
    dt.createIndex()
    evaluator = COCOeval(gt, dt, iouType="bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    expected = 100 * evaluator.stats[0]

    summary = summarize(load_run(run), BootstrapOptions(resamples=20))
    got = cell(summary, "eligen", "coco_ap")["mean"]
    assert got == pytest.approx(expected)
    assert expected < 100.0  # the false positive on L2 outranks the true dog on L0


def test_regression_interval_never_tests_the_mean_of_per_image_ap(tmp_path: Path) -> None:
    # The per-image AP mean is another quantity than the run-level AP the delta compares.
    from eligen_bench.report.stats import paired_difference_interval

    dets = {"L0": [[0.1, 0.1, 0.3, 0.5, 0.6, "dog"]], "L1": [], "L2": []}
    a = make_run(tmp_path, "a", extra_rows=_coco_rows("eligen", dets))
    for run in (a,):
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
        manifest["config"]["metrics"]["coco_ap"] = {"name": "coco_ap", "options": {}, "identity": {},
                                                    "key": "k_ap", "higher_is_better": True, "level": "image",
                                                    "scale": 100}
        (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    low, high = paired_difference_interval(load_run(a), load_run(a), "coco_ap", "eligen", BootstrapOptions(20))
    assert math.isnan(low) and math.isnan(high)


def test_a_run_level_statistic_without_interval_is_named_not_passed() -> None:
    import math

    import pandas as pd

    from eligen_bench.report.compare import delta_table, regressions, ungated

    def summary(ap: float, miou: float) -> pd.DataFrame:
        return pd.DataFrame([
            {"generator": "eligen", "metric": "coco_ap", "mean": ap, "ci_low": math.nan, "ci_high": math.nan},
            {"generator": "eligen", "metric": "miou", "mean": miou, "ci_low": miou - 1, "ci_high": miou + 1},
        ])

    deltas = delta_table(summary(20.0, 50.0), summary(30.0, 50.0), "previous")
    assert regressions(deltas, {}).empty  # a 10-point AP drop has no interval to exceed
    assert list(ungated(deltas)["metric"]) == ["coco_ap"]  # so the gate names it
