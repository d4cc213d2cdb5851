"""COCO box AP of YOLO detections against the layouts (the metric GLIGEN reported).

The EliGen paper drops this metric (Sec. 5.1: detections of background objects that the layout
does not mention count as false positives), but it is what GLIGEN-era tables report, so it is
kept for comparison. The computation is pycocotools' own ``COCOeval`` (iouType 'bbox'):

- Ground truth: every entity whose category is one of the detector's classes, its box in the
  layout's pixel units (``bbox`` normalised xyxy x width/height), ``iscrowd=0``, area = box area
  (so the small/medium/large split refers to the layout canvas). Other entities are left out.
- Detections: YOLO boxes normalised by the generated image's size, mapped onto the same canvas,
  ``conf=0.001`` and ``max_det=100`` (the usual AP-evaluation settings; COCO counts 100 per
  image). Categories that no image of the evaluated set has in its ground truth are ignored by
  COCOeval, as in COCO itself.

Rows: one per image. ``value`` is that image's own AP@[.5:.95] (NaN and status 'excluded' when
it has no detector-class entity); ``detail['detections']`` keeps the detections so that the
run-level AP, the number to report, is computed from rows without rerunning the detector:
`ap_by_generator(rows, layouts)` (or `CocoAP.compute()` after `update()`). The mean of
per-image APs is *not* COCO AP.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from eligen_bench.api.metric import ScoreItem, ScoreRow, row
from eligen_bench.layout import Layout
from eligen_bench.metrics.detection import detector as det
from eligen_bench.metrics.detection.miou import YoloMetric

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def coco_ap(images: Sequence[tuple[Layout, det.Detections]], classes: Sequence[str] = det.COCO80) -> dict[str, float]:
    """COCOeval bbox statistics over (layout, detections) pairs, one pair per image.

    Returns the 12 standard statistics by name (`STAT_NAMES`), NaN where COCOeval gives -1
    (nothing to evaluate).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    category_id = {name: k + 1 for k, name in enumerate(classes)}
    gt_images, gt_anns, dt_anns = [], [], []
    for image_id, (layout, found) in enumerate(images, start=1):
        w, h = layout.width, layout.height
        gt_images.append({"id": image_id, "width": w, "height": h})
        for entity in layout.entities:
            name = det.normalize_category(entity.category)
            if name not in category_id:
                continue
            x1, y1, x2, y2 = entity.bbox
            box = [x1 * w, y1 * h, (x2 - x1) * w, (y2 - y1) * h]
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": image_id, "category_id": category_id[name],
                            "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        for (x1, y1, x2, y2), score, label in zip(found.boxes, found.scores, found.labels, strict=True):
            if label not in category_id:
                continue
            box = [x1 * w, y1 * h, (x2 - x1) * w, (y2 - y1) * h]
            dt_anns.append({"id": len(dt_anns) + 1, "image_id": image_id, "category_id": category_id[label],
                            "bbox": box, "area": box[2] * box[3], "score": float(score), "iscrowd": 0})
    if not gt_anns:
        return dict.fromkeys(STAT_NAMES, math.nan)
    categories = [{"id": i, "name": n} for n, i in category_id.items()]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = _coco(COCO, gt_images, categories, gt_anns)
        dt = _coco(COCO, gt_images, categories, dt_anns)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {n: (math.nan if v < 0 else float(v)) for n, v in zip(STAT_NAMES, evaluator.stats, strict=True)}


def _coco(coco_class: Any, images: list, categories: list, annotations: list) -> Any:
    coco = coco_class()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    coco.createIndex()
    return coco


def detections_from_detail(detail: Mapping[str, Any]) -> det.Detections:
    """The detections a `coco_ap` row stored (inverse of `CocoAP._detail`)."""
    entries = detail.get("detections", [])
    if not entries:
        return det.Detections.empty()
    return det.Detections.from_lists([e[:4] for e in entries], [e[4] for e in entries], [e[5] for e in entries])


def ap_by_generator(rows: Iterable[ScoreRow], layouts: Mapping[str, Layout],
                    classes: Sequence[str] = det.COCO80) -> dict[str, dict[str, float]]:
    """Run-level COCO AP per generator from `coco_ap` rows and the suite's layouts by id."""
    grouped: dict[str, list[tuple[Layout, det.Detections]]] = {}
    for r in rows:
        if r.metric != CocoAP.name:
            continue
        detail = r.detail if isinstance(r.detail, Mapping) else {}
        grouped.setdefault(r.generator, []).append((layouts[r.layout_id], detections_from_detail(detail)))
    return {g: coco_ap(images, classes) for g, images in sorted(grouped.items())}


class CocoAP(YoloMetric):
    """COCO AP@[.5:.95] of YOLO11x detections vs layout boxes (GLIGEN's metric), per image and run."""

    name = "coco_ap"
    display_name = "COCO AP"
    reference: ClassVar[str] = ("cocodataset/cocoapi@8c9bcc3: PythonAPI/pycocotools/cocoeval.py (bbox); "
                                "ultralytics/ultralytics@v8.4.190 (yolo11x.pt)")
    level = "image"
    scale = 100.0
    description = "COCO box AP@[.5:.95] of YOLO11x detections against the layout boxes (the report shows the run-level AP)"
    defaults: ClassVar[dict[str, Any]] = {
        "weights": "yolo11x.pt",
        "imgsz": 640,
        "conf": 0.001,
        "iou": 0.7,
        "max_det": 100,
        "allow_pickle": False,
    }

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._layouts: dict[str, Layout] = {}

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        classes = det.class_names(self.model)
        rows = []
        for item, found in zip(items, self.run_detector(items), strict=True):
            ap = coco_ap([(item.layout, found)], classes)["AP"]
            status = "excluded" if math.isnan(ap) else "ok"
            extra = {"reason": "no_detector_class_entity"} if status == "excluded" else {}
            rows.append(row(self, item, ap, status=status, **extra, **self._detail(found), **self._extra()))
        return rows

    @staticmethod
    def _detail(found: det.Detections) -> dict[str, Any]:
        boxes = np.round(found.boxes, 4).tolist()
        scores = np.round(found.scores, 5).tolist()
        return {"detections": [[*b, s, label] for b, s, label in zip(boxes, scores, found.labels, strict=True)]}

    @classmethod
    def aggregate(cls, rows: Any, layouts: Mapping[str, Layout]) -> float | None:
        """Run-level AP@[.5:.95] from the detections stored in the rows (what the report shows).

        Every image of the run counts, also those without a detector-class entity (status
        'excluded'): their detections are false positives, as in pycocotools' COCOeval."""
        import json

        images = [(layouts[r.layout_id], detections_from_detail(json.loads(r.detail)))
                  for r in rows.itertuples()]
        return coco_ap(images)["AP"] if images else math.nan

    def update(self, items: Sequence[ScoreItem]) -> None:
        super().update(items)
        self._layouts.update({item.layout.id: item.layout for item in items})

    def compute(self) -> float:
        """Run-level COCO AP@[.5:.95] over everything `update` saw (one generator expected)."""
        per_generator = ap_by_generator(self._rows, self._layouts, det.class_names(self.model))
        if len(per_generator) > 1:
            raise ValueError(f"rows of several generators {sorted(per_generator)}; use ap_by_generator()")
        return next(iter(per_generator.values()))["AP"] if per_generator else math.nan

    def reset(self) -> None:
        super().reset()
        self._layouts.clear()
