"""InstDiff-Bench AP: ``yolo val`` (ultralytics 8.0.119) geometry, NMS and masks, the scaled
ground truth, COCOeval as its eval_json runs it, and the metric on a random YOLOv8n-seg."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from eligen_bench.api.metric import ModelCache, ScoreItem
from eligen_bench.coco_classes import COCO_THING_CLASSES
from eligen_bench.errors import InputError
from eligen_bench.hashing import file_sha256
from eligen_bench.layout import Entity, Layout
from eligen_bench.metrics.instdiff_bench import yolo_val as yv
from eligen_bench.metrics.instdiff_bench.ap import InstDiffAP, coco_image_id
from eligen_bench.metrics.instdiff_bench.ground_truth import (
    EvalImage,
    coco_eval,
    load_instances,
    scaled_ground_truth,
)

COCO91 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31,
          32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
          58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87,
          88, 89, 90]


@pytest.mark.parametrize(("height", "width", "resized", "canvas", "pad"), [
    (512, 512, (640, 640), (672, 672), (16.0, 16.0)),  # InstDiff-Bench's samples
    (300, 500, (384, 640), (416, 672), (16.0, 16.0)),
    (640, 427, (640, 427), (672, 448), (10.5, 16.0)),  # odd padding: 10 left, 11 right
    (1024, 1024, (640, 640), (672, 672), (16.0, 16.0)),  # shrunk with INTER_AREA
])
def test_val_geometry(height, width, resized, canvas, pad) -> None:
    """Load resize to 640 on the long side, rect batch shape ceil(s * 640 / 32 + 0.5) * 32."""
    g = yv.val_geometry(height, width, 640)
    assert (g.resized, g.canvas, g.pad) == (resized, canvas, pad)
    assert g.gain == resized[0] / height


def test_letterbox_places_the_image_on_a_grey_canvas() -> None:
    import cv2

    image = np.full((640, 427, 3), 7, dtype=np.uint8)
    g = yv.val_geometry(640, 427)
    canvas = yv.letterbox(image, g)
    assert canvas.shape == (672, 448, 3)
    assert (canvas[:16] == 114).all() and (canvas[-16:] == 114).all()
    assert (canvas[:, :10] == 114).all() and (canvas[:, -11:] == 114).all()  # round(10.4), round(10.6)
    assert (canvas[16:-16, 10:-11] == 7).all()
    square = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    expected = cv2.copyMakeBorder(cv2.resize(square, (640, 640), interpolation=cv2.INTER_LINEAR),
                                  16, 16, 16, 16, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    assert np.array_equal(yv.letterbox(square, yv.val_geometry(512, 512)), expected)
    tensor = yv.to_tensor([expected], "cpu")
    assert tensor.shape == (1, 3, 672, 672) and tensor[0, 0, 100, 100] == expected[100, 100, 2] / 255  # RGB


def _raw(boxes_xywh, scores, coefficients=None) -> torch.Tensor:
    """A (4 + nc + nm, anchors) prediction from per-anchor boxes and class scores."""
    parts = [torch.tensor(boxes_xywh, dtype=torch.float32).T, torch.tensor(scores, dtype=torch.float32).T]
    if coefficients is not None:
        parts.append(torch.tensor(coefficients, dtype=torch.float32).T)
    return torch.cat(parts, 0)


def test_multi_label_nms_hand_worked() -> None:
    raw = _raw([[50, 50, 20, 20], [51, 50, 20, 20], [200, 200, 10, 10], [300, 300, 10, 10]],
               [[0.9, 0.6, 0.0], [0.8, 0.0, 0.0], [0.0005, 0.0, 0.002], [0.0, 0.0, 0.0009]])
    kept = yv.multi_label_nms(raw, 3, conf=0.001, iou=0.7, max_det=300)
    # anchor 0 twice (classes 0 and 1: multi-label); anchor 1 suppressed by anchor 0 in class 0;
    # anchor 2 only as class 2 (0.0005 < conf); anchor 3 below conf
    assert kept[:, 4].tolist() == pytest.approx([0.9, 0.6, 0.002])
    assert kept[:, 5].tolist() == [0, 1, 2]
    assert kept[0, :4].tolist() == [40, 40, 60, 60]
    assert yv.multi_label_nms(raw, 3, 0.001, 0.7, max_det=2).shape[0] == 2


def test_multi_label_nms_matches_the_installed_ultralytics() -> None:
    from ultralytics.utils.nms import non_max_suppression

    g = torch.Generator().manual_seed(0)
    raw = torch.rand(2, 4 + 5 + 3, 400, generator=g)
    raw[:, :2] *= 100
    raw[:, 2:4] = raw[:, 2:4] * 30 + 1
    raw[:, 4:9] = raw[:, 4:9] ** 3  # distinct scores, no ties
    library = non_max_suppression(raw, 0.01, 0.5, multi_label=True, max_det=50, nc=5)
    for k in range(2):
        assert torch.equal(yv.multi_label_nms(raw[k], 5, 0.01, 0.5, 50), library[k])


def test_boxes_back_to_the_image_as_predictions_json() -> None:
    g = yv.val_geometry(512, 512)
    boxes = torch.tensor([[16.0, 16.0, 656.0, 656.0], [0.0, 36.0, 141.0, 100.0]])
    back = yv.boxes_to_image(boxes, g)
    np.testing.assert_allclose(back, [[0, 0, 512, 512], [0, 16, 100, 67.2]], rtol=1e-6)  # (x - 16) / 1.25, clipped
    assert yv.coco_boxes(back) == [[0, 0, 512, 512], [0, 16, 100, 51.2]]  # x, y, w, h to 3 decimals


def reference_masks(protos, coefficients, boxes, canvas, original, pad):
    """8.0.119 process_mask_upsample + scale_image (ops.py:541-578, 307-342), transcribed."""
    import cv2
    import torch.nn.functional as F

    c, mh, mw = protos.shape
    masks = (coefficients @ protos.float().view(c, -1)).sigmoid().view(-1, mh, mw)
    masks = F.interpolate(masks[None], canvas, mode="bilinear", align_corners=False)[0]
    n, h, w = masks.shape
    x1, y1, x2, y2 = torch.chunk(boxes[:, :, None], 4, 1)
    r = torch.arange(w, dtype=x1.dtype)[None, None, :]
    col = torch.arange(h, dtype=x1.dtype)[None, :, None]
    masks = (masks * ((r >= x1) * (r < x2) * (col >= y1) * (col < y2))).gt_(0.5)
    array = torch.as_tensor(masks, dtype=torch.uint8).permute(1, 2, 0).contiguous().numpy()
    top, left = int(pad[1]), int(pad[0])
    bottom, right = int(array.shape[0] - pad[1]), int(array.shape[1] - pad[0])
    array = array[top:bottom, left:right]
    return np.stack([cv2.resize(np.ascontiguousarray(array[:, :, k]), (original[1], original[0]))
                     for k in range(array.shape[2])], axis=2)  # OpenCV 4.7 took all channels at once


def test_masks_match_the_transcription_also_past_128_channels() -> None:
    g = torch.Generator().manual_seed(1)
    protos = torch.randn(32, 104, 112, generator=g)
    n = 150  # more than one cv2.resize block
    coefficients = torch.randn(n, 32, generator=g)
    corner = torch.rand(n, 2, generator=g) * 300
    boxes = torch.cat([corner, corner + 40 + torch.rand(n, 2, generator=g) * 100], 1)
    geometry = yv.val_geometry(640, 427)
    ours = yv.masks_to_image(yv.masks_on_canvas(protos, coefficients, boxes, geometry.canvas), geometry)
    expected = reference_masks(protos, coefficients, boxes, geometry.canvas, (640, 427), geometry.pad)
    assert ours.shape == (640, 427, n) and ours.any()
    assert np.array_equal(ours, expected)
    rles = yv.encode_masks(ours[:, :, :3])
    from pycocotools import mask as mask_utils

    decoded = mask_utils.decode({"size": [640, 427], "counts": rles[1]})
    assert np.array_equal(decoded, ours[:, :, 1])


def _instances(folder: Path) -> Path:
    """Two images: 100 (640x480) with a dog, a person and a crowd region; 200 (320x320) empty."""
    from pycocotools import mask as mask_utils

    crowd = np.zeros((480, 640), dtype=np.uint8)
    crowd[100:200, 300:400] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    anns = [
        {"id": 1, "image_id": 100, "category_id": 18, "bbox": [64, 48, 128, 96], "area": 10000.0, "iscrowd": 0,
         "segmentation": [[64, 48, 192, 48, 192, 144, 64, 144]]},
        {"id": 2, "image_id": 100, "category_id": 1, "bbox": [320, 240, 64, 96], "area": 5000.0, "iscrowd": 0,
         "segmentation": [[320, 240, 384, 240, 384, 336, 320, 336]]},
        {"id": 3, "image_id": 100, "category_id": 1, "bbox": [300, 100, 100, 100], "area": 10000.0, "iscrowd": 1,
         "segmentation": {"size": [480, 640], "counts": rle["counts"].decode()}},
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "instances_val2017.json").write_text(json.dumps({
        "images": [{"id": 100, "width": 640, "height": 480}, {"id": 200, "width": 320, "height": 320}],
        "annotations": anns,
        "categories": [{"id": i, "name": n} for i, n in zip(COCO91, COCO_THING_CLASSES, strict=True)],
    }))
    return folder


def test_ground_truth_scaled_to_the_sample(tmp_path: Path) -> None:
    instances = load_instances(_instances(tmp_path / "ann"))
    gt = scaled_ground_truth(instances, 100, 512, 512, segm=True)
    assert gt[0][:7] == pytest.approx([51.2, 51.2, 102.4, 102.4, 18, 0, 10000.0 * 0.8 * (512 / 480)])
    assert gt[0][7] == [pytest.approx([51.2, 51.2, 153.6, 51.2, 153.6, 153.6, 51.2, 153.6])]
    from pycocotools import mask as mask_utils

    crowd = mask_utils.decode(gt[2][7])
    assert crowd.shape == (512, 512) and gt[2][5] == 1
    rows, cols = np.nonzero(crowd)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (240, 319, 107, 212)  # PIL-nearest: floor((i + 0.5) * 480 / 512)
    assert scaled_ground_truth(instances, 200, 512, 512, segm=False) == []
    with pytest.raises(InputError, match="not in the instances file"):
        scaled_ground_truth(instances, 300, 512, 512, segm=False)


def eval_json_reference(anno_file: Path, predictions: list[dict], image_ids: list[int], iou_type: str) -> list[float]:
    """8.0.119 eval_json (segment/val.py:229-241): COCO(file), loadRes, imgIds, stats[:2]."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        anno = COCO(str(anno_file))
        pred = anno.loadRes(predictions)
        evaluator = COCOeval(anno, pred, iou_type)
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[:2].tolist()


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_coco_eval_equals_eval_json_on_the_annotation_file(tmp_path: Path, iou_type: str) -> None:
    """Our in-memory evaluation (rows' ground truth, categories seen) vs pycocotools on the files."""
    from pycocotools import mask as mask_utils

    folder = _instances(tmp_path / "ann")
    instances = load_instances(folder)

    def det(image_id, box, score, category, size):
        mask = np.zeros(size, dtype=np.uint8)
        x, y, w, h = (int(v) for v in box)
        mask[y : y + h, x : x + w] = 1
        counts = mask_utils.encode(np.asfortranarray(mask))["counts"].decode()
        return {"image_id": image_id, "category_id": category, "bbox": box, "score": score,
                "segmentation": {"size": list(size), "counts": counts}}

    predictions = [det(100, [66, 50, 120, 90], 0.9, 18, (480, 640)), det(100, [10, 10, 50, 50], 0.8, 18, (480, 640)),
                   det(100, [322, 238, 60, 100], 0.7, 1, (480, 640)), det(100, [310, 110, 60, 60], 0.6, 1, (480, 640)),
                   det(100, [0, 0, 40, 40], 0.5, 3, (480, 640)), det(200, [5, 5, 50, 50], 0.95, 18, (320, 320))]
    expected = eval_json_reference(folder / "instances_val2017.json", json.loads(json.dumps(predictions)),
                                   [100, 200], iou_type)
    images = []
    for image_id, (w, h) in ((100, (640, 480)), (200, (320, 320))):
        mine = [p for p in predictions if p["image_id"] == image_id]
        images.append(EvalImage(w, h, scaled_ground_truth(instances, image_id, w, h, iou_type == "segm"),
                                [[*p["bbox"], p["score"], p["category_id"]] for p in mine],
                                [p["segmentation"]["counts"] for p in mine]))
    stats = coco_eval(images, iou_type)
    assert [stats["AP"], stats["AP50"]] == pytest.approx(expected, abs=1e-12)
    assert 0.1 < stats["AP"] < 0.9


def _png(path: Path, size: int = 512) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_cache() -> ModelCache:
    return ModelCache()


def test_metric_end_to_end_on_a_random_yolov8n_seg(tmp_path: Path, tiny_cache: ModelCache) -> None:
    folder = _instances(tmp_path / "ann")
    png = _png(tmp_path / "sample.png")
    layouts = [Layout("coco-100", "p", (Entity("dog", (0.1, 0.1, 0.3, 0.3), category="dog"),), 512, 512,
                      source="coco2017val:100"),
               Layout("coco-200", "p", (), 512, 512, source="coco2017val:200")]
    items = [ScoreItem("g", layout, 0, 0, png, file_sha256(png)) for layout in layouts]
    ap = InstDiffAP(profile="tiny", device="cpu", cache=tiny_cache, annotations=str(folder))
    ap50 = InstDiffAP(profile="tiny", device="cpu", cache=tiny_cache, annotations=str(folder), stat="AP50")
    rows = ap.score(items)
    assert [r.status for r in rows] == ["ok", "excluded"]  # image 200 has no ground truth
    detail = rows[0].detail
    assert detail["size"] == [512, 512] and len(detail["gt"]) == 3 and 0 < len(detail["detections"]) <= 100
    assert {d[5] for d in detail["detections"]} <= set(COCO91)
    assert ap50.score(items)[1].detail["detections"] == rows[1].detail["detections"]  # one pass, shared
    frame = pd.DataFrame([r.to_record() for r in rows])
    run = InstDiffAP.aggregate(frame, {})
    images = [EvalImage(*r.detail["size"], r.detail["gt"], r.detail["detections"]) for r in rows]
    assert run == coco_eval(images)["AP"] and not math.isnan(run)
    ap.update(items)
    assert ap.compute() == run
    assert ap.identity()["models"]["detector"] == "yolov8n-seg.yaml (random, seed 0)"
    full = InstDiffAP()
    assert full.options["weights"] == "yolov8m-seg.pt" and full.options["conf"] == 0.001
    assert full.options["max_det"] == 300 and full.options["jpeg_quality"] == 75


def test_segm_rows_keep_the_masks(tmp_path: Path, tiny_cache: ModelCache) -> None:
    folder = _instances(tmp_path / "ann")
    png = _png(tmp_path / "sample.png")
    layout = Layout("coco-100", "p", (), 512, 512, source="coco2017val:100")
    metric = InstDiffAP(profile="tiny", device="cpu", cache=tiny_cache, annotations=str(folder), iou_type="segm",
                        max_det=20)
    [r] = metric.score([ScoreItem("g", layout, 0, 0, png, file_sha256(png))])
    assert len(r.detail["masks"]) == len(r.detail["detections"]) == 20
    assert len(r.detail["gt"][0]) == 8  # with its segmentation


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="source"):
        coco_image_id(Layout("x", "p", (), 64, 64, source="somewhere:1"))
    for bad in ({"stat": "AP75"}, {"iou_type": "keypoints"}, {"imgsz": 100}, {"jpeg_quality": -1}):
        with pytest.raises(InputError):
            InstDiffAP(**bad)
    with pytest.raises(InputError, match="annotation file not found"):
        load_instances(tmp_path)


@pytest.mark.weights
def test_real_yolov8m_seg_loads_and_scores(tmp_path: Path) -> None:
    """yolov8m-seg.pt as ultralytics downloads it, read with weights_only=True, on one sample."""
    folder = _instances(tmp_path / "ann")
    png = _png(tmp_path / "sample.png")
    layout = Layout("coco-100", "p", (), 512, 512, source="coco2017val:100")
    metric = InstDiffAP(annotations=str(folder), device="cuda" if torch.cuda.is_available() else "cpu")
    [r] = metric.score([ScoreItem("g", layout, 0, 0, png, file_sha256(png))])
    assert metric.model.task == "segment" and len(metric.model.names) == 80
    assert r.status == "ok" and len(r.detail["detections"]) <= 300
