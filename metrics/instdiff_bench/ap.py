"""InstDiff-Bench AP and AP50 (the DEIG paper's Table 3, last two columns).

InstanceDiffusion's README (frank-xwang/InstanceDiffusion@722900e, README.md:240-243) scores the
samples with ``yolo val segment model=yolov8m-seg.pt data=coco.yaml`` (ultralytics==8.0.119,
requirements.txt): YOLOv8m-seg predictions (see `yolo_val`) evaluated by pycocotools against the
COCO val2017 annotations at the samples' size (see `ground_truth`). DEIG prints the two numbers
pycocotools gives, AP@[.5:.95] and AP@.5, as fractions (0.40, 0.57).

Options: ``stat`` 'AP' (default) or 'AP50'; ``iou_type`` 'bbox' (default: DEIG's text calls
them "standard object detection metrics") or 'segm' (the mask AP the same command prints beside
it); ``annotations``: the folder holding ``instances_val2017.json`` (None: the official file,
downloaded and checked as ``eligen-bench suite build`` does). Layouts must come from COCO val2017
(``source`` 'coco2017val:<id>', as the instdiff-bench builder writes it).

Rows: one per image, ``value`` = that image's own statistic (NaN, status 'excluded', when it has
no ground truth); ``detail`` keeps the scaled ground truth and every prediction, so the run-level
number, the one to report, is computed from the rows alone (`aggregate`; every image counts,
also those without ground truth, whose predictions are false positives). With several seeds each
(layout, seed) image is one evaluated image. The AP and AP50 metrics of a run share one detector
pass per image (memoised in the run's model cache). With ``iou_type='segm'`` every prediction's
mask is kept as RLE (up to 300 per image): large score tables.

The ``tiny`` profile builds a random YOLOv8n-seg from its YAML (no download), ``imgsz=320``,
``conf=1e-5``: meaningless numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from eligen_bench.api.metric import IMAGE_LEVEL, Metric, ScoreItem, ScoreRow, row
from eligen_bench.errors import InputError
from eligen_bench.layout import Layout
from eligen_bench.metrics.instdiff_bench.ground_truth import (
    IOU_TYPES,
    STAT_NAMES,
    EvalImage,
    coco_eval,
    load_instances,
    scaled_ground_truth,
)
from eligen_bench.metrics.instdiff_bench.images import JPEG_QUALITY, as_scored_bgr, check_quality
from eligen_bench.metrics.instdiff_bench.yolo_val import ValSettings, val_predictions
from eligen_bench.suites.instdiff_bench import SOURCE_PREFIX
from eligen_bench.tiny import TINY_WARNING

STATS = ("AP", "AP50")
TINY_CONFIG = "yolov8n-seg.yaml"
TINY_OVERRIDES = {"imgsz": 320, "conf": 1e-5, "max_det": 100}
_NOT_IN_IDENTITY = ("allow_pickle",)


class InstDiffAP(Metric):
    """COCO AP of YOLOv8m-seg predictions as InstanceDiffusion's ``yolo val segment`` computes it."""

    name = "instdiff_ap"
    display_name = "InstDiff-Bench"
    level = "image"
    in_default_run = False  # needs COCO val2017 layouts and the annotation file
    reference: ClassVar[str] = ("frank-xwang/InstanceDiffusion@722900e: README.md:240-243; "
                                "ultralytics 8.0.119: ultralytics/yolo/v8/segment/val.py")
    description = ("InstDiff-Bench AP: YOLOv8m-seg predictions as `yolo val segment` makes them, "
                   "pycocotools against COCO val2017 at the image size (run-level)")
    defaults: ClassVar[dict[str, Any]] = {
        "weights": "yolov8m-seg.pt",  # README.md:243
        "imgsz": 640,  # 8.0.119 yolo/cfg/default.yaml:13
        "conf": 0.001,  # default.yaml:46 (0.001 in val)
        "iou": 0.7,  # default.yaml:47
        "max_det": 300,  # default.yaml:48
        "stat": "AP",
        "iou_type": "bbox",
        "annotations": None,
        "jpeg_quality": JPEG_QUALITY,  # eval_local.py:92, 98: the samples are .jpg files
        "allow_pickle": False,
    }

    def __init__(self, profile: str = "full", model: Any = None, **kwargs: Any):
        if profile == "tiny":
            kwargs = {**TINY_OVERRIDES, **kwargs}
        super().__init__(profile=profile, model=model, **kwargs)
        where, o = f"metric {self.name!r}", self.options
        if o["stat"] not in STATS:
            raise InputError(f"must be one of {STATS}, got {o['stat']!r}", where=where, field="stat")
        if o["iou_type"] not in IOU_TYPES:
            raise InputError(f"must be one of {IOU_TYPES}, got {o['iou_type']!r}", where=where, field="iou_type")
        if not (isinstance(o["imgsz"], int) and 32 <= o["imgsz"] <= 4096 and o["imgsz"] % 32 == 0):
            raise InputError(f"must be a multiple of 32 in [32, 4096], got {o['imgsz']!r}", where=where, field="imgsz")
        if not 0.0 <= float(o["conf"]) < 1.0 or not 0.0 < float(o["iou"]) <= 1.0:
            raise InputError("conf must be in [0, 1) and iou in (0, 1]", where=where, field="conf")
        if not (isinstance(o["max_det"], int) and o["max_det"] >= 1):
            raise InputError(f"must be a positive integer, got {o['max_det']!r}", where=where, field="max_det")
        check_quality(o["jpeg_quality"], where)

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["options"] = {k: v for k, v in ident["options"].items() if k not in _NOT_IN_IDENTITY}
        ident["protocol"] = ("yolo val (ultralytics 8.0.119): rect letterbox, multi-label NMS, pycocotools "
                             "against instances_val2017.json scaled to the image size")
        return ident

    def title(self) -> str:
        # DEIG's Table 3 prints AP and AP50 as two columns: the statistic names the column.
        return f"{self.options['stat']} ({self.display_name})"

    def model_ids(self) -> dict[str, str]:
        from eligen_bench.metrics.detection.detector import ultralytics_version

        weights = f"{TINY_CONFIG} (random, seed 0)" if self.profile == "tiny" else str(self.options["weights"])
        return {"detector": weights, "ultralytics": ultralytics_version()}

    def load(self) -> Any:
        from eligen_bench.metrics.detection import detector as det

        device = self.resolve_device()
        if self.profile == "tiny":
            return self.cache.get(("yolo", TINY_CONFIG, "tiny", device), lambda: tiny_yolov8_seg().to(device))
        weights = str(self.options["weights"])
        return self.cache.get(("yolo", weights, self.profile, device), lambda: det.load_yolo(
            weights, allow_pickle=bool(self.options["allow_pickle"]), device=device))

    def instances(self) -> Any:
        """The annotation file, indexed once per run (shared through the model cache)."""
        folder = self.options["annotations"]
        if folder is None:
            from eligen_bench.suites.coco_download import download_annotations
            from eligen_bench.suites.fetch import default_cache_dir

            folder = download_annotations(default_cache_dir("coco"))
        folder = Path(folder)
        return self.cache.get(("coco-instances", str(folder.resolve())), lambda: load_instances(folder))

    def predictions(self, items: Sequence[ScoreItem]) -> list[dict[str, Any]]:
        """Each item's predictions, from the memo or one batched pass for the misses."""
        o = self.options
        settings = ValSettings(int(o["imgsz"]), float(o["conf"]), float(o["iou"]), int(o["max_det"]),
                               o["iou_type"] == "segm")
        quality = int(o["jpeg_quality"])
        memo = self.cache.get(("instdiff-yolo-val", self.profile, str(o["weights"]), id(self.model),
                               settings, quality), dict)
        keys = [item.content_sha256() for item in items]
        missing = {key: item for key, item in zip(keys, items, strict=True) if key not in memo}
        if missing:
            network = prepared_network(self.model, self.resolve_device())
            images = [as_scored_bgr(item.load_image(), quality) for item in missing.values()]
            found = val_predictions(network, images, settings, self.resolve_device(), self.batch_size)
            memo.update(zip(missing, found, strict=True))
        return [memo[key] for key in keys]

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        from eligen_bench.metrics.detection.detector import class_names

        instances = self.instances()
        categories = category_ids(class_names(self.model), instances.categories)
        segm = self.options["iou_type"] == "segm"
        rows = []
        for item, found in zip(items, self.predictions(items), strict=True):
            width, height = _image_size(item)
            gt = scaled_ground_truth(instances, coco_image_id(item.layout), width, height, segm)
            detections = [[*box, score, categories[c]] for box, score, c in
                          zip(found["boxes"], found["scores"], found["classes"], strict=True)]
            image = EvalImage(width, height, gt, detections, found.get("masks", ()))
            value = coco_eval([image], self.options["iou_type"])[self.options["stat"]]
            detail = {"stat": self.options["stat"], "iou_type": self.options["iou_type"], "size": [width, height],
                      "gt": gt, "detections": detections, **({"masks": list(image.masks)} if segm else {}),
                      **({"warning": TINY_WARNING} if self.profile == "tiny" else {})}
            if math.isnan(value):
                rows.append(row(self, item, value, IMAGE_LEVEL, status="excluded", reason="no_ground_truth", **detail))
            else:
                rows.append(row(self, item, value, IMAGE_LEVEL, **detail))
        return rows

    @classmethod
    def aggregate(cls, rows: Any, layouts: Mapping[str, Layout]) -> float | None:
        """The run-level statistic from every row's stored ground truth and predictions."""
        details = [json.loads(r.detail) if isinstance(r.detail, str) else dict(r.detail) for r in rows.itertuples()]
        return run_level(details) if details else math.nan

    def compute(self) -> float:
        """Run-level statistic over everything `update` saw (one generator expected)."""
        generators = {r.generator for r in self._rows}
        if len(generators) > 1:
            raise ValueError(f"rows of several generators {sorted(generators)}")
        return run_level([dict(r.detail) for r in self._rows]) if self._rows else math.nan


def run_level(details: Sequence[Mapping[str, Any]]) -> float:
    """COCOeval over the images of `details` (rows of one metric label and generator)."""
    stat, iou_type = details[0]["stat"], details[0]["iou_type"]
    if stat not in STAT_NAMES or iou_type not in IOU_TYPES:
        raise InputError(f"rows name an unknown statistic {stat!r} / {iou_type!r}", field="detail")
    images = [EvalImage(d["size"][0], d["size"][1], d["gt"], d["detections"], d.get("masks", ())) for d in details]
    return coco_eval(images, iou_type)[stat]


def coco_image_id(layout: Layout) -> int:
    source = layout.source or ""
    if not source.startswith(SOURCE_PREFIX) or not source[len(SOURCE_PREFIX):].isdigit():
        raise InputError(f"source {source!r} is not a COCO val2017 image ('{SOURCE_PREFIX}<id>'); "
                         "instdiff_ap scores layouts of the instdiff-bench suites", where=layout.where, field="source")
    return int(source[len(SOURCE_PREFIX):])


def category_ids(names: Sequence[str], categories: Mapping[str, int]) -> list[int]:
    """COCO category id of each detector class (``coco80_to_coco91_class`` for COCO's 80)."""
    missing = [n for n in names if n not in categories]
    if missing:
        raise InputError(f"detector classes {missing[:5]} are not categories of the annotation file",
                         field="weights")
    return [categories[n] for n in names]


def _image_size(item: ScoreItem) -> tuple[int, int]:
    from PIL import Image

    with Image.open(item.image_path) as image:
        return image.size


def prepared_network(model: Any, device: str) -> Any:
    """The YOLO object's network as ``yolo val`` runs it: fused Conv+BN, eval mode, float32."""
    from ultralytics.nn.tasks import BaseModel

    network = model if isinstance(model, BaseModel) else model.model
    if hasattr(network, "is_fused") and not network.is_fused():
        network.fuse(verbose=False)
    return network.to(device).float().eval()


def tiny_yolov8_seg(seed: int = 0) -> Any:
    """A randomly initialised YOLOv8n-seg (80 COCO classes) from its YAML: no download."""
    import torch
    from ultralytics import YOLO

    from eligen_bench.coco_classes import COCO_THING_CLASSES

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = YOLO(TINY_CONFIG)
    model.model.names = dict(enumerate(COCO_THING_CLASSES))
    return model
