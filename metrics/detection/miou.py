"""Spatial accuracy: per-entity IoU between the layout and YOLO11 detections on the image.

``miou`` is the EliGen paper's Spatial Accuracy (Sec. 5.1, Table 1): YOLOv11x
(``yolo11x.pt``, ultralytics) detects objects on the generated image; each ground-truth entity
scores the IoU of its box with the best-matching detected box of its class, 0 when there is
none; the mean over entities is reported x100. The paper fixes neither the matching rule, the
confidence threshold nor the detector's input size; this module makes each an option that is
recorded in every row's metric key:

- ``matching="best"``: per-entity best IoU over same-class detections, detections may be shared;
  ``"greedy"`` is one-to-one (see `detection` for both rules).
- ``conf=0.25``: ultralytics' own prediction default; lower thresholds give "best" matching
  more candidates and so raise mIoU.
- ``imgsz=640``: YOLO11's training resolution; images are letterboxed to it (aspect kept).
- ``iou=0.7`` (NMS), ``max_det=300``: ultralytics' prediction defaults.
- Boxes: `Entity.bbox` is normalised xyxy and detections are normalised by the generated
  image's size (``box_format`` in the identity).
- Entities with no category or a category outside the detector's 80 COCO classes (COCO stuff
  like "sky") give rows with status 'excluded' and a NaN value: counted, never averaged.

``mask_iou`` is the same with ``yolo11x-seg.pt`` and masks: entities that carry a mask are
compared (mask IoU at the generated image's resolution, the layout mask resized to it) with
the best same-class predicted instance mask; entities without a mask are 'excluded'.

``miou`` and ``coco_ap`` read the same detections: one detector pass per image at COCO AP's
threshold (0.001, 300 boxes), memoised in the run's model cache, from which each metric keeps
what its own ``conf`` and ``max_det`` give (identical to a direct call with them).

Checkpoints load with ``torch.load(weights_only=True)`` through ultralytics' allow-list;
``allow_pickle=True`` opts into full unpickling for checkpoints that need it.

The ``tiny`` profile builds a random YOLO11n(-seg) from its YAML (no download) and defaults to
``conf=1e-5`` (a random detector has no confident boxes, and the matching code must still run),
``imgsz=320`` and ``max_det=100`` to stay cheap. Its numbers are meaningless.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from eligen_bench.api.metric import Metric, ScoreItem, ScoreRow, row
from eligen_bench.errors import InputError
from eligen_bench.metrics.detection import detector as det
from eligen_bench.tiny import TINY_WARNING

TINY_OVERRIDES = {"conf": 1e-5, "imgsz": 320, "max_det": 100}
# The box detectors of a run (miou, coco_ap) share one pass per image at COCO AP's threshold
# and cap; each metric then keeps what its own `conf` and `max_det` would have given.
SHARED_CONF, SHARED_MAX_DET = 0.001, 300
# Options that change how a model is loaded but never the numbers it gives.
_NOT_IN_IDENTITY = ("allow_pickle",)


class YoloMetric(Metric):
    """Shared options, loading and inference of the detector-based metrics."""

    task: ClassVar[str] = "detect"
    # Prediction defaults (conf 0.25, iou 0.7, max_det 300, imgsz 640) of the installed release.
    reference: ClassVar[str] = "ultralytics/ultralytics@v8.4.190: ultralytics/cfg/default.yaml, yolo11x.pt"
    defaults: ClassVar[dict[str, Any]] = {
        "weights": "yolo11x.pt",
        "imgsz": 640,
        "conf": 0.25,
        "iou": 0.7,
        "max_det": 300,
        "matching": "best",
        "allow_pickle": False,
    }

    def __init__(self, profile: str = "full", model: Any = None, **kwargs: Any):
        if profile == "tiny":
            kwargs = {**{k: v for k, v in TINY_OVERRIDES.items() if k in self.defaults}, **kwargs}
        super().__init__(profile=profile, model=model, **kwargs)
        self._check_options()

    def _check_options(self) -> None:
        o = self.options
        if "matching" in o and o["matching"] not in det.MATCHING_RULES:
            raise InputError(f"must be one of {det.MATCHING_RULES}, got {o['matching']!r}",
                             where=f"metric {self.name!r}", field="matching")
        if not (isinstance(o["imgsz"], int) and 32 <= o["imgsz"] <= 4096 and o["imgsz"] % 32 == 0):
            raise InputError(f"must be a multiple of 32 in [32, 4096], got {o['imgsz']!r}",
                             where=f"metric {self.name!r}", field="imgsz")
        if not 0.0 <= float(o["conf"]) < 1.0:
            raise InputError(f"must be in [0, 1), got {o['conf']!r}", where=f"metric {self.name!r}", field="conf")

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["options"] = {k: v for k, v in ident["options"].items() if k not in _NOT_IN_IDENTITY}
        ident["box_format"] = det.BOX_FORMAT
        return ident

    def model_ids(self) -> dict[str, str]:
        weights = f"{'yolo11n-seg' if self.task == 'segment' else 'yolo11n'}.yaml (random, seed 0)" \
            if self.profile == "tiny" else str(self.options["weights"])
        return {"detector": weights, "ultralytics": det.ultralytics_version()}

    def load(self) -> Any:
        device = self.resolve_device()
        if self.profile == "tiny":
            key = ("yolo", "tiny", self.task, device)
            self._model_key = key
            return self.cache.get(key, lambda: det.tiny_yolo(self.task).to(device))
        weights = str(self.options["weights"])
        key = ("yolo", weights, self.profile, device)
        self._model_key = key
        model = self.cache.get(key, lambda: det.load_yolo(
            weights, allow_pickle=bool(self.options["allow_pickle"]), device=device))
        if model.task != self.task:
            raise InputError(f"{weights} is a {model.task!r} model; {self.name} needs a {self.task!r} one",
                             where=f"metric {self.name!r}", field="weights")
        return model

    _model_key: tuple | None = None

    def run_detector(self, items: Sequence[ScoreItem]) -> list[det.Detections]:
        """The items' detections at this metric's threshold and cap, from one batched call.

        Box detections come from a pass shared with the run's other box metrics (memoised per
        image in the run's model cache); instance masks are too large to keep and are not shared.
        """
        o = self.options
        conf, max_det = float(o["conf"]), int(o["max_det"])
        if self.task == "segment":
            return self._detect(items, conf, max_det)
        shared_conf, shared_max = min(SHARED_CONF, conf), max(SHARED_MAX_DET, max_det)
        model_key = self._model_key or ("injected", id(self.model))
        memo = self.cache.get(("yolo-detections", model_key, int(o["imgsz"]), float(o["iou"]), shared_conf,
                               shared_max), dict)
        # Keyed by the file's content: two images never share a result, whatever their recorded hash.
        keys = [item.content_sha256() for item in items]
        missing = {key: item for key, item in zip(keys, items, strict=True) if key not in memo}
        found = self._detect(list(missing.values()), shared_conf, shared_max) if missing else []
        memo.update(zip(missing, found, strict=True))
        return [memo[key].top(conf, max_det) for key in keys]

    def _detect(self, items: Sequence[ScoreItem], conf: float, max_det: int) -> list[det.Detections]:
        o = self.options
        return det.detect(
            self.model, [item.load_image() for item in items], imgsz=int(o["imgsz"]), conf=conf,
            iou=float(o["iou"]), max_det=max_det, device=self.resolve_device(), masks=self.task == "segment",
        )

    def _extra(self) -> dict[str, Any]:
        return {"warning": TINY_WARNING} if self.profile == "tiny" else {}

    def _entity_rows(self, item: ScoreItem, found: det.Detections, reasons: list[str | None],
                     iou: np.ndarray, same: np.ndarray, eligible: list[int]) -> list[ScoreRow]:
        """Match eligible entities, then one row per entity (excluded ones with NaN)."""
        matches = det.match(iou, same, found.scores, self.options["matching"])
        by_entity = dict(zip(eligible, matches, strict=True))
        rows = []
        for i, entity in enumerate(item.layout.entities):
            if reasons[i] is not None:
                rows.append(row(self, item, math.nan, i, status="excluded", reason=reasons[i],
                                category=entity.category))
                continue
            m = by_entity[i]
            detail: dict[str, Any] = {"category": det.normalize_category(entity.category),
                                      "candidates": m.candidates, **self._extra()}
            if m.detection is not None:
                detail["box"] = [round(float(v), 4) for v in found.boxes[m.detection]]
                detail["conf"] = round(float(found.scores[m.detection]), 4)
            rows.append(row(self, item, m.iou, i, **detail))
        return rows

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        rows: list[ScoreRow] = []
        for item, found in zip(items, self.run_detector(items), strict=True):
            rows.extend(self.rows_for(item, found))
        return rows

    def rows_for(self, item: ScoreItem, found: det.Detections) -> list[ScoreRow]:
        """Rows of one image from its detections (also for re-scoring stored detections)."""
        raise NotImplementedError


def _same_class(categories: list[str | None], labels: Sequence[str]) -> np.ndarray:
    """(E, N) bool: entity category equals detection label."""
    return np.array([[c == label for label in labels] for c in categories], dtype=bool).reshape(len(categories), len(labels))


class MIoU(YoloMetric):
    """Per-entity box IoU with the matched YOLO detection (the paper's Spatial Accuracy)."""

    name = "miou"
    display_name = "mIoU"
    level = "entity"
    scale = 100.0
    description = "Spatial accuracy: IoU of each entity's box with the matched YOLO11x detection (x100)"

    def rows_for(self, item: ScoreItem, found: det.Detections) -> list[ScoreRow]:
        entities = item.layout.entities
        reasons = det.eligibility([e.category for e in entities], det.class_names(self.model))
        eligible = [i for i, r in enumerate(reasons) if r is None]
        gt = np.array([entities[i].bbox for i in eligible], dtype=float).reshape(-1, 4)
        same = _same_class([det.normalize_category(entities[i].category) for i in eligible], found.labels)
        return self._entity_rows(item, found, reasons, det.box_iou(gt, found.boxes), same, eligible)


class MaskIoU(YoloMetric):
    """Per-entity mask IoU with the matched YOLO11x-seg instance, for entities with masks."""

    name = "mask_iou"
    display_name = "Mask IoU"
    level = "entity"
    scale = 100.0
    task = "segment"
    defaults: ClassVar[dict[str, Any]] = {**YoloMetric.defaults, "weights": "yolo11x-seg.pt"}
    description = "Mask IoU of each masked entity with the matched YOLO11x-seg instance mask (x100)"

    def rows_for(self, item: ScoreItem, found: det.Detections) -> list[ScoreRow]:
        entities = item.layout.entities
        reasons = det.eligibility([e.category for e in entities], det.class_names(self.model))
        reasons = [r if r is not None or e.mask is not None else "no_mask"
                   for r, e in zip(reasons, entities, strict=True)]
        eligible = [i for i, r in enumerate(reasons) if r is None]
        masks = found.masks if found.masks is not None else np.zeros((0, 1, 1), dtype=bool)
        height, width = masks.shape[1:]
        same = _same_class([det.normalize_category(entities[i].category) for i in eligible], found.labels)
        iou = np.zeros(same.shape)
        for k, i in enumerate(eligible):
            columns = np.flatnonzero(same[k])
            if columns.size:  # only same-class instances are compared, at the image's resolution
                iou[k, columns] = det.mask_iou(entities[i].region(height, width), masks[columns])
        return self._entity_rows(item, found, reasons, iou, same, eligible)
