"""Detector metrics: IoU and matching on hand-made detections, COCO AP on known cases, and
miou / mask_iou / coco_ap end to end on randomly initialised YOLO11n models (no download)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from eligen_bench.api.metric import ModelCache, ScoreItem
from eligen_bench.errors import InputError
from eligen_bench.hashing import file_sha256
from eligen_bench.layout import Entity, Layout, Mask
from eligen_bench.metrics.detection import detector as det
from eligen_bench.metrics.detection.coco_ap import (
    CocoAP,
    ap_by_generator,
    coco_ap,
    detections_from_detail,
)
from eligen_bench.metrics.detection.miou import MaskIoU, MIoU

FAKE_YOLO = SimpleNamespace(names=dict(enumerate(det.COCO80)), task="detect")


def _item(layout: Layout, path: Path = Path("unused.png"), seed_index: int = 0, generator: str = "g") -> ScoreItem:
    sha = file_sha256(path) if path.exists() else ""
    return ScoreItem(generator, layout, seed_index, seed_index, path, sha)


def _layout(*entities: Entity, size: int = 100, layout_id: str = "l0") -> Layout:
    return Layout(layout_id, "a scene", tuple(entities), width=size, height=size)


# ------------------------------------------------------------------ IoU and matching

def test_box_iou_known_values() -> None:
    a = np.array([[0.0, 0.0, 0.5, 0.5]])
    b = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.25, 0.0, 0.75, 0.5]])
    np.testing.assert_allclose(det.box_iou(a, b), [[1.0, 0.0, 1 / 3]])
    assert det.box_iou(a, np.zeros((0, 4))).shape == (1, 0)


def test_miou_perfect_disjoint_and_class_mismatch() -> None:
    layout = _layout(
        Entity("a dog", (0.1, 0.1, 0.4, 0.4), category="dog"),
        Entity("a cat", (0.6, 0.6, 0.9, 0.9), category="cat"),
        Entity("a car", (0.1, 0.6, 0.4, 0.9), category="car"),
    )
    found = det.Detections.from_lists(
        [[0.1, 0.1, 0.4, 0.4], [0.0, 0.0, 0.05, 0.05], [0.1, 0.6, 0.4, 0.9]],
        [0.9, 0.8, 0.7],
        ["dog", "cat", "truck"],  # cat far away; the car's box is right but called a truck
    )
    metric = MIoU(model=FAKE_YOLO)
    rows = metric.rows_for(_item(layout), found)
    assert [r.value for r in rows] == [1.0, 0.0, 0.0]
    assert [r.status for r in rows] == ["ok"] * 3
    assert rows[0].detail["box"] == [0.1, 0.1, 0.4, 0.4] and rows[0].detail["conf"] == 0.9
    assert rows[1].detail["candidates"] == 1 and "box" not in rows[1].detail
    assert rows[2].detail["candidates"] == 0


def test_duplicates_best_shares_greedy_does_not() -> None:
    # Two "dog" entities over one detected dog, and a second weaker dog detection.
    layout = _layout(
        Entity("a dog", (0.0, 0.0, 0.5, 0.5), category="dog"),
        Entity("another dog", (0.0, 0.0, 0.5, 0.4), category="dog"),
    )
    found = det.Detections.from_lists([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.2]], [0.9, 0.5], ["dog", "dog"])
    best = [r.value for r in MIoU(model=FAKE_YOLO).rows_for(_item(layout), found)]
    greedy = [r.value for r in MIoU(model=FAKE_YOLO, matching="greedy").rows_for(_item(layout), found)]
    assert best == pytest.approx([1.0, 0.8])  # both use detection 0
    # one-to-one: entity 0 takes detection 0 (IoU 1), entity 1 is left with detection 1 (0.2/0.4)
    assert greedy == pytest.approx([1.0, 0.5])


def test_greedy_without_second_detection_scores_zero() -> None:
    iou = np.array([[0.9], [0.7]])
    same = np.ones((2, 1), dtype=bool)
    matches = det.match(iou, same, np.array([0.5]), "greedy")
    assert [(m.iou, m.detection) for m in matches] == [(0.9, 0), (0.0, None)]
    assert [m.iou for m in det.match(iou, same, np.array([0.5]), "best")] == [0.9, 0.7]


def test_excluded_categories_are_counted_not_averaged() -> None:
    layout = _layout(
        Entity("a dog", (0.1, 0.1, 0.4, 0.4), category="dog"),
        Entity("blue sky", (0.0, 0.0, 1.0, 0.3), category="sky"),
        Entity("something", (0.5, 0.5, 0.9, 0.9)),
        Entity("a motorbike", (0.5, 0.1, 0.9, 0.4), category="Motorbike"),
    )
    found = det.Detections.from_lists([[0.1, 0.1, 0.4, 0.4], [0.5, 0.1, 0.9, 0.4]], [0.9, 0.9], ["dog", "motorcycle"])
    metric = MIoU(model=FAKE_YOLO)
    rows = metric.rows_for(_item(layout), found)
    assert len(rows) == 4
    assert [r.status for r in rows] == ["ok", "excluded", "excluded", "ok"]
    assert rows[1].detail["reason"] == "not_a_detector_class" and rows[2].detail["reason"] == "no_category"
    assert math.isnan(rows[1].value) and math.isnan(rows[2].value)
    assert rows[3].value == 1.0  # alias mapped onto the COCO name
    metric._rows = rows
    assert metric.compute() == 1.0


def test_options_are_checked_and_recorded() -> None:
    with pytest.raises(InputError, match="matching"):
        MIoU(model=FAKE_YOLO, matching="hungarian")
    with pytest.raises(InputError, match="imgsz"):
        MIoU(model=FAKE_YOLO, imgsz=100)
    with pytest.raises(InputError, match="unknown option"):
        MIoU(model=FAKE_YOLO, threshold=0.3)
    ident = MIoU(profile="tiny").identity()
    assert ident["options"]["conf"] == 1e-5 and ident["options"]["matching"] == "best"
    assert "allow_pickle" not in ident["options"] and "normalised" in ident["box_format"]
    assert MIoU().identity()["options"]["conf"] == 0.25
    assert MIoU(matching="greedy").key != MIoU().key
    assert MIoU(allow_pickle=True).key == MIoU().key  # loading permission does not change values


def test_mask_iou_on_hand_made_masks() -> None:
    gt = np.zeros((20, 20), dtype=bool)
    gt[0:10, 0:10] = True
    half = np.zeros((20, 20), dtype=bool)
    half[0:10, 0:5] = True
    layout = Layout("m0", "a scene", (
        Entity("a dog", (0.0, 0.0, 0.5, 0.5), mask=Mask.from_array(gt), category="dog"),
        Entity("a cat", (0.5, 0.5, 1.0, 1.0), category="cat"),  # no mask: excluded
    ), width=20, height=20)
    masks = np.stack([gt, half])
    found = det.Detections.from_lists([[0, 0, 0.5, 0.5], [0, 0, 0.25, 0.5]], [0.5, 0.9], ["dog", "dog"], masks)
    rows = MaskIoU(model=SimpleNamespace(names=FAKE_YOLO.names, task="segment")).rows_for(_item(layout), found)
    assert rows[0].value == 1.0 and rows[0].detail["conf"] == 0.5
    assert rows[1].status == "excluded" and rows[1].detail["reason"] == "no_mask"
    np.testing.assert_allclose(det.mask_iou(gt, masks), [1.0, 0.5])


# ------------------------------------------------------------------ COCO AP (pycocotools)

def _dets(boxes, scores, labels) -> det.Detections:
    return det.Detections.from_lists(boxes, scores, labels)


def test_coco_ap_known_values() -> None:
    layout = _layout(Entity("a dog", (0.1, 0.1, 0.5, 0.5), category="dog"),
                     Entity("a cat", (0.6, 0.6, 0.9, 0.9), category="cat"),
                     Entity("the sky", (0.0, 0.0, 1.0, 0.2), category="sky"))
    perfect = _dets([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]], [0.9, 0.8], ["dog", "cat"])
    assert coco_ap([(layout, perfect)])["AP"] == pytest.approx(1.0)
    # A higher-scoring false positive before the true positive: precision 1/2 at recall 1 -> AP 0.5
    with_fp = _dets([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9], [0.0, 0.6, 0.3, 0.9]],
                    [0.9, 0.8, 0.95], ["dog", "cat", "cat"])
    stats = coco_ap([(layout, with_fp)])
    assert stats["AP"] == pytest.approx((1.0 + 0.5) / 2)  # dog 1.0, cat 0.5, averaged over classes
    # Two dogs, one found: precision 1 up to recall 0.5 -> 51 of COCO's 101 recall points
    two_dogs = _layout(Entity("a dog", (0.0, 0.0, 0.4, 0.4), category="dog"),
                       Entity("a dog", (0.5, 0.5, 0.9, 0.9), category="dog"))
    one = _dets([[0.0, 0.0, 0.4, 0.4]], [0.9], ["dog"])
    assert coco_ap([(two_dogs, one)])["AP"] == pytest.approx(51 / 101)
    assert coco_ap([(two_dogs, det.Detections.empty())])["AP"] == 0.0
    assert math.isnan(coco_ap([(_layout(Entity("sky", (0, 0, 1, 1), category="sky")), one)])["AP"])


def test_report_uses_run_level_ap_not_the_mean_of_image_aps() -> None:
    import json

    import pandas as pd

    two_dogs = _layout(Entity("a dog", (0.0, 0.0, 0.4, 0.4), category="dog"),
                       Entity("a dog", (0.5, 0.5, 0.9, 0.9), category="dog"))
    two_dogs = Layout("two", two_dogs.prompt, two_dogs.entities, two_dogs.width, two_dogs.height)
    found = _dets([[0.0, 0.0, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]], [0.9, 0.8], ["dog", "dog"])
    missed = _layout(Entity("a dog", (0.1, 0.1, 0.6, 0.6), category="dog"))
    missed = Layout("one", missed.prompt, missed.entities, missed.width, missed.height)
    rows = pd.DataFrame({"layout_id": ["two", "one"], "detail": [
        json.dumps(CocoAP._detail(found)), json.dumps(CocoAP._detail(det.Detections.empty()))]})
    layouts = {"two": two_dogs, "one": missed}
    run_level = CocoAP.aggregate(rows, layouts)
    # Pooled: 2 of 3 dogs found at top scores -> precision 1 up to recall 2/3 (67 of 101 points).
    assert run_level == pytest.approx(67 / 101)
    assert run_level != pytest.approx((1.0 + 0.0) / 2)


# ------------------------------------------------------------------ end to end, random YOLO11n

@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for k, (h, w) in enumerate([(128, 128), (96, 160)]):
        path = folder / f"img{k}.png"
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


def _scene() -> Layout:
    mask = np.zeros((64, 64), dtype=bool)
    mask[8:40, 4:30] = True
    return Layout("scene", "people and a dog", (
        Entity("a person", (0.0, 0.0, 0.9, 0.9), category="person", mask=Mask.from_array(mask)),
        Entity("a person", (0.2, 0.1, 1.0, 1.0), category="person"),
        Entity("a dog", (0.5, 0.5, 0.9, 0.9), category="dog"),
        Entity("grass", (0.0, 0.8, 1.0, 1.0), category="grass"),
    ), width=64, height=64)


def test_miou_end_to_end_matches_independent_computation(images: list[Path], cache: ModelCache) -> None:
    metric = MIoU(profile="tiny", cache=cache, device="cpu", batch_size=2)
    items = [_item(_scene(), p, k) for k, p in enumerate(images)]
    rows = metric.score(items)
    assert len(rows) == 8 and all(r.metric_key == metric.key for r in rows)
    o = metric.options
    found = det.detect(metric.model, [it.load_image() for it in items], imgsz=o["imgsz"], conf=o["conf"],
                       iou=o["iou"], max_det=o["max_det"], device="cpu")
    assert sum(len(f.labels) for f in found) > 0  # conf=1e-5 lets the random detector return boxes
    for r in rows:
        entity = items[r.seed_index].layout.entities[r.entity_index]
        if entity.category == "grass":
            assert r.status == "excluded" and math.isnan(r.value)
            continue
        f = found[r.seed_index]
        same = [i for i, label in enumerate(f.labels) if label == entity.category]
        expected = det.box_iou([entity.bbox], f.boxes[same]).max() if same else 0.0
        assert r.value == pytest.approx(expected) and 0.0 <= r.value <= 1.0
        assert r.detail["warning"].startswith("tiny profile")


def test_box_metrics_share_one_detector_pass_with_direct_call_results(images: list[Path]) -> None:
    shared = ModelCache()
    miou = MIoU(profile="tiny", cache=shared, device="cpu")
    miou.ensure_loaded()
    calls: list[int] = []
    predict = miou.model.predict
    miou.model.predict = lambda sources, **kw: calls.append(len(sources)) or predict(sources, **kw)
    items = [_item(_scene(), p, k) for k, p in enumerate(images)]
    miou.score(items)
    CocoAP(profile="tiny", cache=shared, device="cpu").score(items)
    assert calls == [len(images)]  # one pass serves both metrics
    # A stricter threshold and cap from the shared pass equal a direct call with them.
    floor = miou.run_detector(items[:1])[0]
    threshold = float(np.median(floor.scores))
    direct = det.detect(miou.model, [items[0].load_image()], imgsz=320, conf=threshold, iou=0.7, max_det=5,
                        device="cpu")[0]
    kept = floor.top(threshold, 5)
    assert kept.labels == direct.labels
    np.testing.assert_allclose(kept.boxes, direct.boxes, atol=1e-6)
    np.testing.assert_allclose(kept.scores, direct.scores, atol=1e-6)


def test_yolo_checkpoint_roundtrip_and_pickle_opt_in(tmp_path: Path, images: list[Path], cache: ModelCache) -> None:
    import torch

    tiny = MIoU(profile="tiny", cache=cache, device="cpu")
    tiny.ensure_loaded()
    path = tmp_path / "yolo_tiny.pt"
    tiny.model.save(path)
    options = {k: tiny.options[k] for k in ("conf", "imgsz", "max_det")}
    loaded = MIoU(weights=str(path), device="cpu", **options)  # full profile, weights_only load
    items = [_item(_scene(), images[0])]
    assert [r.value for r in loaded.score(items)] == pytest.approx([r.value for r in tiny.score(items)], nan_ok=True)
    assert loaded.model_ids()["detector"] == str(path)

    ckpt = torch.load(path, weights_only=False)
    ckpt["note"] = _Opaque()  # a type outside ultralytics' allow-list
    unsafe = tmp_path / "unsafe.pt"
    torch.save(ckpt, unsafe)
    with pytest.raises(InputError, match="allow_pickle"):
        MIoU(weights=str(unsafe), device="cpu").ensure_loaded()
    MIoU(weights=str(unsafe), device="cpu", allow_pickle=True).ensure_loaded()


class _Opaque:
    """Pickled into a checkpoint to make it need full unpickling."""


def test_mask_iou_end_to_end(images: list[Path], cache: ModelCache) -> None:
    metric = MaskIoU(profile="tiny", cache=cache, device="cpu")
    rows = metric.score([_item(_scene(), p, k) for k, p in enumerate(images)])
    by_entity = {(r.seed_index, r.entity_index): r for r in rows}
    for k in range(2):
        assert by_entity[(k, 0)].status == "ok" and 0.0 <= by_entity[(k, 0)].value <= 1.0
        assert by_entity[(k, 1)].detail["reason"] == "no_mask"
        assert by_entity[(k, 3)].detail["reason"] == "not_a_detector_class"
    wrong = MaskIoU(weights="x.pt", cache=_cache_with(cache, "x.pt"), device="cpu")
    with pytest.raises(InputError, match="segment"):
        wrong.load()


def _cache_with(source: ModelCache, weights: str) -> ModelCache:
    """A cache whose entry for `weights` is the tiny *detection* model (wrong task)."""
    fresh = ModelCache()
    fresh.get(("yolo", weights, "full", "cpu"), lambda: source.get(("yolo", "tiny", "detect", "cpu"), det.tiny_yolo))
    return fresh


def test_coco_ap_end_to_end(images: list[Path], cache: ModelCache) -> None:
    metric = CocoAP(profile="tiny", cache=cache, device="cpu")
    items = [_item(_scene(), p, k) for k, p in enumerate(images)]
    metric.update(items)
    rows = metric._rows
    assert len(rows) == 2 and all(r.entity_index == -1 for r in rows)
    for r in rows:
        assert 0.0 <= r.value <= 1.0
        assert len(detections_from_detail(r.detail).labels) == len(r.detail["detections"]) > 0
    pairs = [(it.layout, detections_from_detail(r.detail)) for it, r in zip(items, rows, strict=True)]
    run_ap = coco_ap(pairs)["AP"]
    assert metric.compute() == pytest.approx(run_ap)
    assert ap_by_generator(rows, {"scene": _scene()})["g"]["AP"] == pytest.approx(run_ap)


# ------------------------------------------------------------------ detection memo (issue 8.15)

def test_detection_memo_is_keyed_by_image_content_not_by_recorded_hash(tmp_path: Path) -> None:
    # Two different images whose items carry no hash (an empty image_sha256) must not share one
    # detection result; the same image under two items is detected once.
    from PIL import Image

    calls: list[int] = []

    class CountingMIoU(MIoU):
        def _detect(self, items, conf, max_det):  # noqa: ANN001, ANN202 - the overridden signature
            calls.append(len(items))
            return [det.Detections.from_lists([[0.0, 0.0, 0.1 * (k + 1), 0.1 * (k + 1)]], [0.9], ["dog"])
                    for k, _ in enumerate(items)]

    paths = []
    for k, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        paths.append(tmp_path / f"{k}.png")
        Image.new("RGB", (32, 32), colour).save(paths[-1])
    layout = _layout(Entity("a dog", (0.0, 0.0, 0.2, 0.2), category="dog"))
    metric = CountingMIoU(model=FAKE_YOLO, cache=ModelCache())
    items = [ScoreItem("g", layout, k, k, path, "") for k, path in enumerate(paths)]
    first, second = metric.run_detector(items)
    assert first.boxes.tolist() != second.boxes.tolist()
    again = metric.run_detector([ScoreItem("h", layout, 0, 0, paths[1], "")])
    assert again[0].boxes.tolist() == second.boxes.tolist() and calls == [2]
