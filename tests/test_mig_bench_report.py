"""MIG-Bench per level in the report, and published numbers beside a run's (mapping, warnings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eligen_bench.cli import main
from eligen_bench.errors import InputError
from eligen_bench.layout import Entity, Layout
from eligen_bench.report import ReportOptions, build_report, write_report
from eligen_bench.report.levels import levels_of
from eligen_bench.report.reference import match_rows, parse_reference_map
from eligen_bench.suite import Suite

FAST = ReportOptions(bootstrap_resamples=50, plots=False)
REPO = Path(__file__).resolve().parents[1]

# Per instance: (success, the script's mIoU term) or "excluded". Worked by hand:
# L2 (A, B): 3 of 4 succeed, terms 0.8 + 0.3 (position failed: raw IoU) + 0.5 (IoU exactly 0.5
# passes) + 0.9 = 2.5; one of two images has every instance right.
# L3 (C): 1 of 3 (a colour failure and a missed detection score 0).
# AVG: I-SR 4/7, mIoU 3.1/7 (by instances, not the mean of the levels' 75 and 33.3), SR 1/3 (by images).
INSTANCES = {
    "eligen": {"A": [(1, 0.8), (0, 0.3)], "B": [(1, 0.5), (1, 0.9)], "C": [(1, 0.6), (0, 0.0), (0, 0.0)]},
    "mine": {"A": [(1, 1.0), (1, 1.0)], "B": [(1, 1.0), (1, 1.0)], "C": [(1, 1.0), (1, 1.0), "excluded"]},
}
EXPECTED_ELIGEN = {
    "L2": {"isr": 75.0, "miou": 62.5, "sr": 50.0, "instances": 4, "images": 2},
    "L3": {"isr": 100 / 3, "miou": 20.0, "sr": 0.0, "instances": 3, "images": 1},
    "AVG": {"isr": 400 / 7, "miou": 310 / 7, "sr": 100 / 3, "instances": 7, "images": 3},
}


def make_run(root: Path, generators: dict[str, str]) -> Path:
    """A run folder of `mig_bench` rows for `generators` ({label: generator name})."""
    def entity(i: int) -> Entity:
        return Entity(f"a red thing{i}", (0.1 * i, 0.1, 0.1 * i + 0.05, 0.5))

    layouts = (Layout("A", "a", (entity(1), entity(2)), 64, 64), Layout("B", "b", (entity(1), entity(2)), 64, 64),
               Layout("C", "c", (entity(1), entity(2), entity(3)), 64, 64))
    suite = Suite("mig-test", "1", layouts)
    run = root / "run"
    run.mkdir()
    suite.write(run / "suite.jsonl")
    metric = {"name": "mig_bench", "key": "k", "level": "entity", "scale": 100, "higher_is_better": True}
    manifest = {"profile": "full", "config": {
        "suite": {"name": suite.name, "hash": suite.hash}, "generators": {g: {"name": n} for g, n in generators.items()},
        "metrics": {"mig_bench": metric}, "seeds": 1, "base_seed": None, "seed_list": [42]}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    rows = []
    for label in generators:
        (run / "images" / label).mkdir(parents=True)
        for layout_id, instances in INSTANCES["mine" if label != "eligen" else "eligen"].items():
            Image.new("RGB", (8, 8)).save(run / "images" / label / f"{layout_id}_0.png")
            for index, instance in enumerate(instances):
                excluded = instance == "excluded"
                value, term = (math.nan, 0.0) if excluded else instance
                rows.append({"metric": "mig_bench", "generator": label, "layout_id": layout_id, "seed_index": 0,
                             "seed": 42, "entity_index": index, "value": float(value),
                             "status": "excluded" if excluded else "ok",
                             "detail": json.dumps({} if excluded else {"miou": term}),
                             "image_sha256": "x", "metric_key": "k"})
    pd.DataFrame(rows).to_parquet(run / "scores.parquet")
    return run


def test_levels_by_hand() -> None:
    records = [{"image": (layout, 0), "level": len(instances), "ok": True, "success": bool(s), "miou": m}
               for layout, instances in INSTANCES["eligen"].items() for s, m in instances]
    found = {r["level"]: r for r in levels_of(records, "mig_bench", "eligen")}
    for level, want in EXPECTED_ELIGEN.items():
        for key, value in want.items():
            assert found[level][key] == pytest.approx(value), (level, key)


def test_report_has_the_per_level_table(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"eligen": "eligen", "mine": "eligen"})
    report = build_report(run, options=FAST)
    levels = report.levels.set_index(["generator", "level"])
    for level, want in EXPECTED_ELIGEN.items():
        assert levels.loc[("eligen", level), "isr"] == pytest.approx(want["isr"])
        assert levels.loc[("eligen", level), "miou"] == pytest.approx(want["miou"])
        assert levels.loc[("eligen", level), "sr"] == pytest.approx(want["sr"])
    # An excluded instance leaves its image out of SR and itself out of I-SR and mIoU.
    assert levels.loc[("mine", "L3"), ["instances", "images", "isr"]].tolist() == [2, 0, 100.0]
    assert levels.loc[("mine", "AVG"), ["instances", "images", "sr"]].tolist() == [6, 2, 100.0]
    # The main table's mig_bench column is the instance-weighted I-SR.
    summary = report.summary.set_index("generator")
    assert summary.loc["eligen", "mean"] == pytest.approx(400 / 7)

    write_report(run, options=FAST)
    md = (run / "report" / "levels.md").read_text()
    assert "| Method | I-SR L2 | I-SR L3 | I-SR AVG | mIoU L2 | mIoU L3 | mIoU AVG | SR L2 | SR L3 | SR AVG |" in md
    assert "| eligen | <u>75.00</u> | <u>33.33</u> | <u>57.14</u> | <u>62.50</u> | <u>20.00</u> | <u>44.29</u> |" in md
    assert "MIG-Bench per level" in (run / "report" / "table.md").read_text()
    tex = (run / "report" / "table.tex").read_text()
    assert r"\multicolumn{3}{c}{I-SR (\%)}" in tex and r"Level & L2 & L3 & AVG" in tex
    assert r"eligen & \underline{75.00} & \underline{33.33} & \underline{57.14}" in tex
    assert "MIG-Bench per level" in (run / "report" / "index.html").read_text()
    assert pd.read_csv(run / "report" / "levels.csv").shape == (6, 8)


def published(tmp_path: Path) -> Path:
    path = tmp_path / "published.csv"
    path.write_text("# Some paper, Table 9: COCO-MIG.\nmodel,mig_sr,mig_isr,mig_miou,mig_isr_l2,miou\n"
                    "EliGen,30.0,60.0,40.0,70.0,25.0\nMIGC,20.0,50.0,45.0,55.0,24.0\n")
    return path


def test_published_vs_this_run_by_generator_name_and_by_map(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"eligen": "eligen", "ckpt": "migc"})
    report = build_report(run, reference_csv=[published(tmp_path)], options=FAST)
    table = report.reference.set_index(["generator", "reference_column"])
    assert table.loc[("eligen", "mig_isr"), "reference_model"] == "EliGen"
    assert table.loc[("eligen", "mig_isr"), "delta"] == pytest.approx(400 / 7 - 60.0)
    assert table.loc[("eligen", "mig_sr"), "ours"] == pytest.approx(100 / 3)
    assert table.loc[("eligen", "mig_isr_l2"), "published"] == 70.0
    assert table.loc[("ckpt", "mig_miou"), "reference_model"] == "MIGC"  # label 'ckpt' is a migc run
    assert "miou" not in set(table.index.get_level_values(1))  # YOLO's miou: another metric
    assert report.reference_sources == ["published.csv: Some paper, Table 9: COCO-MIG."]

    mapped = build_report(run, reference_csv=[published(tmp_path)], reference_map={"ckpt": "EliGen"}, options=FAST)
    assert set(mapped.reference.loc[mapped.reference["generator"] == "ckpt", "reference_model"]) == {"EliGen"}
    assert not mapped.warnings or not any("reference" in w for w in mapped.warnings)


def test_a_reference_that_matches_no_label_warns(tmp_path: Path, caplog) -> None:
    run = make_run(tmp_path, {"flux": "flux"})
    report = build_report(run, reference_csv=published(tmp_path), options=FAST)
    assert len(report.reference) == 0
    (warning,) = [w for w in report.warnings if "published.csv" in w]
    assert "no row matches a generator of this run (run: flux" in warning and "--reference-map" in warning

    assert main(["report", "--out", str(run), "--reference", str(published(tmp_path))]) == 0
    # Logged as a warning: the terminal shows it (pytest's log capture stands in for stderr here).
    assert any(r.levelname == "WARNING" and "published.csv: no row matches" in r.getMessage() for r in caplog.records)
    assert "no row matches" in (run / "report" / "reference.md").read_text().split("#", 1)[0]
    assert "no row matches" in (run / "report" / "table.md").read_text().split("#", 1)[0]

    # Rows that match but share no column with the run: said as well.
    other = tmp_path / "other.csv"
    other.write_text("model,aesthetic\nFLUX,5.0\n")
    report = build_report(run, reference_csv=other, options=FAST)
    assert any("rows matched (flux -> FLUX) but none of its columns (aesthetic)" in w for w in report.warnings)


def test_reference_map_option(tmp_path: Path, capsys) -> None:
    assert parse_reference_map("ckpt=EliGen, b = Instance Diffusion") == {"ckpt": "EliGen", "b": "Instance Diffusion"}
    with pytest.raises(InputError, match="LABEL=ROW"):
        parse_reference_map("ckpt")
    assert match_rows({"a": "instancediffusion", "b": "roictrl", "c": "flux"},
                      ["Instance Diffusion", "ROICtrl", "DEIG (Ours)"], {}) == {"a": "Instance Diffusion", "b": "ROICtrl"}
    run = make_run(tmp_path, {"eligen": "eligen"})
    assert main(["report", "--out", str(run), "--reference", str(published(tmp_path)), "--reference-map", "x"]) == 2
    assert "--reference-map: expected LABEL=ROW" in capsys.readouterr().err
    report = build_report(run, reference_csv=published(tmp_path), reference_map={"eligen": "DEIG", "ghost": "MIGC"},
                          options=FAST)
    assert any("--reference-map row 'DEIG' for 'eligen' is not in the file" in w for w in report.warnings)
    assert any("names generator label(s) ['ghost']" in w for w in report.warnings)


def test_the_published_tables_read(tmp_path: Path) -> None:
    from eligen_bench.report.reference import read_reference

    deig = read_reference(REPO / "results" / "reference" / "deig_table2.csv")
    assert deig.loc["MIGC", "mig_isr"] == 65.84 and deig.loc["DEIG", "mig_miou_l6"] == 62.68
    weights = [320, 480, 640, 800, 960]  # instances per level: 160 images x 2..6 instances
    for model in deig.index:  # the printed AVG is the instance-weighted mean (DEIG's own I-SR excepted)
        for measure in ("mig_isr", "mig_miou"):
            mean = sum(deig.loc[model, f"{measure}_l{n}"] * w for n, w in zip(range(2, 7), weights, strict=True)) / 3200
            if (model, measure) != ("DEIG", "mig_isr"):
                assert mean == pytest.approx(deig.loc[model, measure], abs=0.011), (model, measure)
    contextgen = read_reference(REPO / "results" / "reference" / "contextgen_table2_cocomig.csv")
    assert contextgen.loc["EliGen", ["mig_sr", "mig_isr", "mig_miou"]].tolist() == [26.00, 64.12, 59.23]
    assert match_rows({"eligen": "eligen", "migc": "migc"}, list(contextgen.index), {}) == {"eligen": "EliGen",
                                                                                           "migc": "MIGC"}


MIG_DIR = Path(__file__).parents[2] / "shared" / "data" / "mig_bench"


@pytest.mark.slow
@pytest.mark.skipif(not (MIG_DIR / "mig_bench.txt").is_file(), reason="MIG-Bench files not present")
def test_tiny_mig_bench_run_prints_the_per_level_table(tmp_path: Path, monkeypatch, capsys, caplog) -> None:
    monkeypatch.setenv("ELIGEN_BENCH_MIG_BENCH_DIR", str(MIG_DIR))
    out = tmp_path / "run"
    assert main(["run", "--suite", "mig-bench", "--limit", "4", "--profile", "tiny", "--no-progress",
                 "--generators", "painter=harness_plugins:BoxPainter", "--metrics", "mig_bench",
                 "--reference", str(REPO / "results" / "reference" / "deig_table2.csv"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mig_bench per level (%):" in printed and "I-SR L2" in printed and "mIoU AVG" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["seed_list"] == [42] and manifest["seeds"]["mig-0"] == [42]
    assert "I-SR AVG" in (out / "report" / "levels.md").read_text()
    assert r"\multicolumn" in (out / "report" / "table.tex").read_text()
    assert any("deig_table2.csv: no row matches" in r.getMessage() for r in caplog.records)


# The whole chain (metric rows -> report) on a hand-worked example with the scorer's quirks.
# The two models are replaced by fixed answers (the boxes GroundingDINO finds, the mask SAM gives
# for a layout box); everything else (best-IoU position, HSV test, rule, levels) is the real code.
PINK, ORANGE, PURPLE, GREEN = (180, 105, 255), (0, 165, 255), (128, 0, 128), (0, 160, 0)  # BGR
WHITE, BLACK = (250, 250, 250), (10, 10, 10)
Q = 0.25  # a quarter of the 512 px image: 128 px, so every box is exact in pixels
HAND = {  # layout: [(prompt, box, detections of its noun, SAM mask (y0, y1, x0, x1), paint)]
    "A": [("a red car", (0, 0, Q, Q), [[300, 300, 400, 400], [0, 0, 128, 64]], (10, 60, 10, 60), [(PINK, 2500)]),
          ("a brown dog", (0.5, 0.5, 1, 1), [[256, 256, 512, 512]], (300, 310, 300, 310), [(ORANGE, 20), (GREEN, 80)])],
    "B": [("a red car", (0, 0, Q, Q), [[0, 0, 128, 128]], (10, 60, 10, 60), [(PURPLE, 2500)]),
          ("a blue dog", (0.5, 0.5, 1, 1), [], None, [])],
    "C": [("a green cup", (0, 0, Q, Q), [[0, 0, 64, 64], [256, 0, 384, 128]], None, []),
          ("a white cup", (0.5, 0, 0.75, Q), [[0, 0, 64, 64], [256, 0, 384, 128]], (20, 60, 270, 300), [(WHITE, 1200)]),
          ("a black bowl", (0.5, 0.5, 1, 1), [[256, 256, 512, 512]], (300, 310, 300, 310), [(BLACK, 19), (GREEN, 81)])],
}
# By hand: A: pink counts as red, IoU exactly 0.5 passes (term 0.5); orange counts as brown at
# exactly 20% (term 1). B: purple is not red (term 0); no dog found (0). C: the green cup's best
# IoU is 0.25 (raw term 0.25); the white cup shares the noun's detections, IoU 1, passes (1); 19%
# black fails (0). L2: 2/4 succeed, terms 1.5/4, 1 of 2 images; L3: 1/3, 1.25/3, 0 of 1.
HAND_EXPECTED = {"L2": (50.0, 37.5, 50.0), "L3": (100 / 3, 125 / 3, 0.0), "AVG": (300 / 7, 275 / 7, 100 / 3)}


class FixedModels:
    """Stands in for GroundingDINO and SAM: the detections and masks of HAND."""

    def __init__(self, layouts: list[Layout]):
        self.layouts = layouts

    def detect(self, images, captions, **options):
        from eligen_bench.metrics.mig_bench.grounding import Detections

        found = []
        for layout, wanted in zip(self.layouts, captions, strict=True):
            boxes = {f"{prompt.split(' ', 2)[2]}.": hits for prompt, _, hits, _, _ in HAND[layout.id]}
            found.append({c: Detections(np.array(boxes[c], np.float32).reshape(-1, 4), np.ones(len(boxes[c]), np.float32))
                          for c in wanted})
        return found

    def segment(self, images, boxes, **options):
        masks = []
        for layout, image_boxes in zip(self.layouts, boxes, strict=True):
            by_box = {tuple(np.array(box) * 512): region for _, box, _, region, _ in HAND[layout.id]}
            image_masks = np.zeros((len(image_boxes), 512, 512), dtype=bool)
            for k, box in enumerate(image_boxes):
                y0, y1, x0, x1 = by_box[tuple(box)]
                image_masks[k, y0:y1, x0:x1] = True
            masks.append(image_masks)
        return masks


def test_hand_worked_example_through_metric_and_report(tmp_path: Path) -> None:
    from eligen_bench.api.metric import ScoreItem
    from eligen_bench.metrics.mig_bench.metric import MigBench

    layouts, items = [], []
    for layout_id, instances in HAND.items():
        image = np.full((512, 512, 3), 90, dtype=np.uint8)
        for _, _, _, region, paint in instances:
            if region is not None:
                y0, y1, x0, x1 = region
                flat = image[y0:y1, x0:x1].reshape(-1, 3)
                start = 0
                for colour, count in paint:
                    flat[start : start + count] = colour
                    start += count
                image[y0:y1, x0:x1] = flat.reshape(y1 - y0, x1 - x0, 3)
        path = tmp_path / f"{layout_id}.png"
        Image.fromarray(image[..., ::-1]).save(path)
        layout = Layout(layout_id, layout_id, tuple(Entity(p, b) for p, b, _, _, _ in instances), 512, 512)
        layouts.append(layout)
        items.append(ScoreItem("eligen", layout, 0, 42, path, "x"))
    rows = MigBench(model=FixedModels(layouts), device="cpu").score(items)
    detail = {(r.layout_id, r.entity_index): r.detail for r in rows}
    assert detail[("A", 0)]["iou"] == 0.5 and detail[("A", 0)]["colour_ok"]
    assert (detail[("A", 1)]["colour_inside"], detail[("A", 1)]["colour_area"], detail[("A", 1)]["colour_ok"]) == (20, 100, True)
    assert (detail[("B", 0)]["position_ok"], detail[("B", 0)]["colour_ok"], detail[("B", 0)]["miou"]) == (True, False, 0.0)
    assert detail[("B", 1)]["iou"] is None and detail[("C", 0)]["miou"] == 0.25 and not detail[("C", 2)]["colour_ok"]

    run = tmp_path / "run"
    run.mkdir()
    suite = Suite("hand", "1", tuple(layouts))
    suite.write(run / "suite.jsonl")
    metric = {"name": "mig_bench", "key": rows[0].metric_key, "level": "entity", "scale": 100}
    (run / "manifest.json").write_text(json.dumps({"config": {
        "suite": {"name": "hand", "hash": suite.hash}, "generators": {"eligen": {"name": "eligen"}},
        "metrics": {"mig_bench": metric}, "seeds": 1, "base_seed": 0}}))
    pd.DataFrame([r.to_record() for r in rows]).to_parquet(run / "scores.parquet")
    levels = build_report(run, options=FAST).levels.set_index("level")
    for level, (isr, miou, sr) in HAND_EXPECTED.items():
        assert levels.loc[level, ["isr", "miou", "sr"]].tolist() == pytest.approx([isr, miou, sr]), level
