"""The ground truth ``yolo val`` scores InstDiff-Bench samples against, and the COCO evaluation.

InstanceDiffusion's README has ``yolo val`` evaluate against ``annotations/instances_val2017.json``
of its dataset folder, "customized" to "resize all images to 512x512 and adjust the corresponding
masks/boxes accordingly" (frank-xwang/InstanceDiffusion@722900e, README.md:226). That file is
not public beyond a drive link; here the official file is scaled to each generated image's size
instead: boxes and polygons by (W / w, H / h), areas by their product, crowd RLEs decoded and
resized by nearest sampling (PIL's rule) and encoded again. Every annotation of the image counts,
crowd ones as COCOeval's ignore regions and those past the suite's 30-instance cap as misses.

pycocotools' COCOeval then runs as ultralytics 8.0.119's ``eval_json`` runs it
(yolo/v8/segment/val.py:229-241): predictions loaded with ``COCO.loadRes``, ``imgIds`` = every
evaluated image, default parameters (maxDets 1, 10, 100), AP = ``stats[0]``, AP50 = ``stats[1]``.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eligen_bench.errors import InputError

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")


@dataclass(frozen=True)
class CocoInstances:
    """An instances file, indexed: image sizes, annotations per image (file order), categories."""

    path: str
    sizes: dict[int, tuple[int, int]]
    """image id -> (width, height)."""
    annotations: dict[int, list[dict]]
    categories: dict[str, int]
    """class name -> COCO category id."""


def load_instances(folder: Path) -> CocoInstances:
    from eligen_bench.suites.coco import INSTANCES_FILE, _load_json

    data = _load_json(Path(folder) / INSTANCES_FILE, ("images", "annotations", "categories"))
    try:
        sizes = {int(i["id"]): (int(i["width"]), int(i["height"])) for i in data["images"]}
        categories = {str(c["name"]): int(c["id"]) for c in data["categories"]}
        per_image: dict[int, list[dict]] = defaultdict(list)
        for ann in data["annotations"]:
            per_image[int(ann["image_id"])].append(ann)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"malformed COCO instances file ({exc})", where=data["_path"]) from None
    return CocoInstances(data["_path"], sizes, dict(per_image), categories)


def scaled_ground_truth(instances: CocoInstances, image_id: int, width: int, height: int,
                        segm: bool) -> list[list[Any]]:
    """The image's annotations on a `width` x `height` image: ``[x, y, w, h, category, iscrowd,
    area]`` each, plus the segmentation (polygons or compressed RLE) when `segm`."""
    if image_id not in instances.sizes:
        raise InputError(f"image {image_id} is not in the instances file", where=instances.path)
    w0, h0 = instances.sizes[image_id]
    sx, sy = width / w0, height / h0
    out = []
    for ann in instances.annotations.get(image_id, []):
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            entry = [x * sx, y * sy, w * sx, h * sy, int(ann["category_id"]), int(ann.get("iscrowd", 0)),
                     float(ann["area"]) * sx * sy]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"annotation {ann.get('id')!r} is malformed ({exc})", where=instances.path) from None
        if segm:
            entry.append(_scaled_segmentation(ann.get("segmentation"), (h0, w0), (height, width)))
        out.append(entry)
    return out


def _scaled_segmentation(seg: Any, size: tuple[int, int], target: tuple[int, int]) -> Any:
    from pycocotools import mask as mask_utils

    from eligen_bench.layout import resize_region

    (h0, w0), (h, w) = size, target
    if isinstance(seg, list):
        return [[v * (w / w0) if k % 2 == 0 else v * (h / h0) for k, v in enumerate(poly)] for poly in seg]
    if isinstance(seg, dict) and "counts" in seg:
        rle = mask_utils.frPyObjects(seg, h0, w0) if isinstance(seg["counts"], list) else seg
        array = mask_utils.decode(rle).astype(bool)
        if (h, w) != (h0, w0):
            array = resize_region(array, h, w, "pil-nearest")
        encoded = mask_utils.encode(np.asfortranarray(array.astype(np.uint8)))
        return {"size": [h, w], "counts": encoded["counts"].decode("ascii")}
    return []


@dataclass(frozen=True)
class EvalImage:
    """One evaluated image: its size, ground truth and predictions (COCO category ids)."""

    width: int
    height: int
    ground_truth: Sequence[Sequence[Any]]
    detections: Sequence[Sequence[Any]]
    """``[x, y, w, h, score, category]`` each."""
    masks: Sequence[str] = ()
    """Compressed RLE counts, one per detection (segm only)."""


def coco_eval(images: Sequence[EvalImage], iou_type: str = "bbox") -> dict[str, float]:
    """COCOeval statistics over the images (NaN where COCOeval gives -1); all AP/AR are 0 when
    there is ground truth but no prediction at all (ultralytics skips pycocotools then)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type not in IOU_TYPES:
        raise InputError(f"must be one of {IOU_TYPES}, got {iou_type!r}", field="iou_type")
    gt_images, gt_anns, results, category_ids = [], [], [], set()
    for image_id, image in enumerate(images, start=1):
        gt_images.append({"id": image_id, "width": image.width, "height": image.height})
        for entry in image.ground_truth:
            ann = {"id": len(gt_anns) + 1, "image_id": image_id, "bbox": list(entry[:4]),
                   "category_id": int(entry[4]), "iscrowd": int(entry[5]), "area": float(entry[6])}
            if iou_type == "segm":
                ann["segmentation"] = entry[7]
            gt_anns.append(ann)
            category_ids.add(int(entry[4]))
        for k, (x, y, w, h, score, category) in enumerate(image.detections):
            result = {"image_id": image_id, "category_id": int(category), "bbox": [x, y, w, h], "score": score}
            if iou_type == "segm":
                result["segmentation"] = {"size": [image.height, image.width], "counts": image.masks[k]}
            results.append(result)
            category_ids.add(int(category))
    if not any(int(e[5]) == 0 for image in images for e in image.ground_truth):
        return dict.fromkeys(STAT_NAMES, math.nan)
    if not results:
        return dict.fromkeys(STAT_NAMES, 0.0)
    # Categories without ground truth are skipped by COCOeval's accumulate, so those present
    # here give the statistics of the file's full category list.
    categories = [{"id": c, "name": str(c)} for c in sorted(category_ids)]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = {"images": gt_images, "categories": categories, "annotations": gt_anns}
        gt.createIndex()
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, iou_type)
        evaluator.params.imgIds = [image["id"] for image in gt_images]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {n: (math.nan if v < 0 else float(v)) for n, v in zip(STAT_NAMES, evaluator.stats, strict=True)}
