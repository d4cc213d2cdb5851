"""InstDiff-Bench end to end on the tiny profile: the three suites built from a COCO fixture,
scored by the three metrics, and laid out as the DEIG paper's Table 3."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from eligen_bench.cli import main
from eligen_bench.coco_classes import COCO_THING_CLASSES
from eligen_bench.errors import InputError
from eligen_bench.report.instdiff_table import COLUMNS, instdiff_table

REFERENCE = Path(__file__).parents[1] / "results" / "reference" / "deig_table3.csv"


@pytest.fixture(scope="module")
def annotations(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("coco") / "annotations"
    folder.mkdir()
    images = [{"id": 1, "width": 64, "height": 48}, {"id": 2, "width": 64, "height": 64}]
    anns = [{"id": 8 + k, "image_id": 1 + k % 2, "category_id": 18, "bbox": [4 * k, 4, 24, 20], "area": 480.0,
             "iscrowd": 0, "segmentation": [[4 * k, 4, 4 * k + 24, 4, 4 * k + 24, 24, 4 * k, 24]]} for k in range(3)]
    (folder / "instances_val2017.json").write_text(json.dumps({
        "images": images, "annotations": anns,
        "categories": [{"id": 18, "name": "dog"}] + [{"id": 100 + k, "name": n} for k, n in
                                                     enumerate(COCO_THING_CLASSES) if n != "dog"]}))
    (folder / "captions_val2017.json").write_text(json.dumps({"annotations": [
        {"id": 1, "image_id": 1, "caption": "Dogs. "}, {"id": 2, "image_id": 2, "caption": "A dog. "}]}))
    return folder


def _run(tmp: Path, annotations: Path, attribute: str, metrics: str) -> Path:
    suite = tmp / f"{attribute}.jsonl"
    assert main(["suite", "build", "instdiff-bench", "--annotations", str(annotations), "--attribute", attribute,
                 "--size", "64", "--out", str(suite)]) == 0
    out = tmp / f"run-{attribute}"
    assert main(["run", "--profile", "tiny", "--suite", str(suite), "--generators", "flux", "--metrics", metrics,
                 "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    return out


@pytest.mark.slow
def test_table3_from_three_tiny_runs(tmp_path: Path, annotations: Path, capsys: pytest.CaptureFixture) -> None:
    attributes = "instdiff_attribute_acc,instdiff_regional_clip"
    runs = {
        "color": _run(tmp_path, annotations, "color", attributes),
        "texture": _run(tmp_path, annotations, "texture", attributes),
        "ap": _run(tmp_path, annotations, "none",
                   f"instdiff_ap[annotations={annotations}],instdiff_ap[annotations={annotations},stat=AP50]"),
    }
    table, warnings = instdiff_table(runs)
    assert list(table.columns) == ["model", *COLUMNS] and table["model"].tolist() == ["flux"]
    row = table.iloc[0]
    scores = pd.read_parquet(runs["color"] / "scores.parquet")
    acc = scores[scores["metric"] == "instdiff_attribute_acc"]
    assert row["acc_color"] == pytest.approx(acc["value"].mean() * 100)  # images' means, averaged, in %
    assert 0 <= row["acc_texture"] <= 100 and -1 <= row["clip_texture"] <= 1
    assert 0 <= row["ap"] <= row["ap50"] <= 1
    assert not any("no metric" in w for w in warnings)

    out = tmp_path / "table3.csv"
    capsys.readouterr()
    assert main(["instdiff-table", "--color", str(runs["color"]), "--texture", str(runs["texture"]),
                 "--ap", str(runs["ap"]), "--reference", str(REFERENCE), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| flux (this run) |" in printed and "| InstanceDiffusion (published) | 53.4 | 0.252 | 25.9 | 0.227 | 0.40 | 0.57 |" in printed
    assert list(pd.read_csv(out).columns) == ["model", *COLUMNS]

    with pytest.raises(InputError, match="expect 'texture'"):
        instdiff_table({"texture": runs["color"]})
    _, swapped = instdiff_table({"ap": runs["color"]})
    assert any("the ap columns expect 'none'" in w for w in swapped)
    assert any("no metric of the ap columns" in w for w in swapped)
    assert main(["instdiff-table"]) == 2


def test_columns_and_markdown_without_runs() -> None:
    from eligen_bench.report.data import MetricInfo
    from eligen_bench.report.instdiff_table import column_of, markdown
    from eligen_bench.report.reference import read_reference

    def info(name: str, **options) -> MetricInfo:
        return MetricInfo(label=name, name=name, key="k", options=options, level="image")

    assert column_of(info("instdiff_attribute_acc"), "texture") == "acc_texture"
    assert column_of(info("instdiff_regional_clip"), "color") == "clip_color"
    assert column_of(info("instdiff_regional_clip"), "none") is None
    assert column_of(info("instdiff_ap"), "none") == "ap"
    assert column_of(info("instdiff_ap", stat="AP50"), "none") == "ap50"
    assert column_of(info("instdiff_ap", iou_type="segm"), "none") is None  # Table 3's AP is the box AP
    table = pd.DataFrame([{"model": "eligen", "acc_color": 61.234, "clip_color": 0.26012, "acc_texture": float("nan"),
                           "clip_texture": float("nan"), "ap": 0.3456, "ap50": 0.5}])
    text = markdown(table, read_reference(REFERENCE))
    assert "| eligen (this run) | 61.2 | 0.260 |  |  | 0.35 | 0.50 |" in text
    assert "| DEIG (published) | 58.8 | 0.258 | 26.1 | 0.228 | 0.34 | 0.57 |" in text
