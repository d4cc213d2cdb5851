"""`mig_bench`: MIG-Bench (COCO-MIG) instance success, scored as its own evaluation scores it.

One row per instance, value 1 when both the position and the colour pass (the mean is the
Instance Success Rate, I-SR, x100), with the script's per-instance mIoU term and every number
behind the verdict in the row's detail; the report (`eligen_bench.report.levels`) turns the rows
into I-SR, SR and mIoU per level (L2-L6) and their instance-weighted averages, the layout of
the DEIG paper's Table 2 and ContextGen's Table 2.

The protocol is LeyRio/MIG_Bench@063ec45 `eval_mig.py` (see `protocol` for each value and its
line): the image is resized to 512x512; GroundingDINO (Swin-T OGC, transformers' port) looks
for the noun alone with box threshold 0.25, class-agnostic NMS 0.8; the detection with the
highest IoU against the layout box decides the position (IoU < 0.5 fails); SAM ViT-H, prompted
with the layout box, gives the best of three masks; the colour passes when at least 20% of the
mask's pixels fall in the colour's HSV ranges. Instances whose prompt is not '<article>
<colour> <noun>' with one of the seven colours are 'excluded' (the script would stop there).

Deviation, on purpose: the script resizes only images whose height is not 512 (:449) and then
crashes on a non-square 512-high image; here any image that is not 512x512 is resized.
The `tiny` profile loads random tiny models (see `tiny`) through the same loading code.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from eligen_bench.api.metric import Metric, ScoreItem, ScoreRow, row
from eligen_bench.errors import InputError
from eligen_bench.metrics.mig_bench import protocol
from eligen_bench.metrics.mig_bench.colour import colour_counts
from eligen_bench.metrics.mig_bench.grounding import Grounder, detect, load_grounder
from eligen_bench.metrics.mig_bench.outcome import Outcome, best_iou, position, with_colour
from eligen_bench.metrics.mig_bench.protocol import Instance, parse_instance
from eligen_bench.metrics.mig_bench.segmenting import load_segmenter, segment
from eligen_bench.metrics.mig_bench.tiny import (
    TINY_DETECTOR,
    TINY_SEGMENTER,
    save_tiny_grounder,
    save_tiny_segmenter,
)
from eligen_bench.tiny import TINY_WARNING

_NOT_IN_IDENTITY = ("pairs_per_batch", "images_per_batch")
"""Batch sizes: they change the speed, not the numbers."""
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class MigModels:
    """The scorer's two models; `commits` are the hub revisions they were loaded at (None: local).

    The metric only calls `detect` and `segment`: a test may inject any object that has them."""

    grounder: Grounder
    segmenter: Any
    commits: tuple[str | None, str | None] = (None, None)

    def detect(self, images_bgr: Sequence[Any], captions: Sequence[Sequence[str]], **options: Any) -> list[dict]:
        return detect(self.grounder, images_bgr, captions, **options)

    def segment(self, images_rgb: Sequence[Any], boxes: Sequence[Any], **options: Any) -> list[Any]:
        return segment(self.segmenter, images_rgb, boxes, **options)


class MigBench(Metric):
    """Per-instance MIG-Bench success (position and colour) as eval_mig.py computes it."""

    name = "mig_bench"
    display_name = "I-SR (MIG-Bench)"
    level = "entity"
    scale = 100.0
    higher_is_better = True
    in_default_run = False  # needs '<article> <colour> <noun>' prompts (the mig-bench suite)
    reference: ClassVar[str] = protocol.REFERENCE
    description = ("MIG-Bench instance success (I-SR): GroundingDINO box IoU >= 0.5 and SAM-mask HSV colour "
                   ">= 20%, as eval_mig.py; SR and mIoU per level in the report (x100)")
    defaults: ClassVar[dict[str, Any]] = {
        "detector": protocol.DETECTOR_ID,
        "detector_revision": None,
        "segmenter": protocol.SEGMENTER_ID,
        "segmenter_revision": None,
        "box_threshold": protocol.BOX_THRESHOLD,  # eval_mig.py:182, :218
        "nms_threshold": protocol.NMS_THRESHOLD,  # eval_mig.py:221
        "iou_threshold": protocol.IOU_THRESHOLD,  # eval_mig.py:371, compared with < at :260
        "colour_ratio": protocol.COLOUR_RATIO,  # eval_mig.py:322
        "image_size": protocol.IMAGE_SIZE,  # eval_mig.py:449-450
        "dtype": "float32",  # the script runs both models in float32
        "pairs_per_batch": 16,
        "images_per_batch": 4,
    }

    def __init__(self, profile: str = "full", model: Any = None, **kwargs: Any):
        super().__init__(profile=profile, model=model, **kwargs)
        self._check_options()

    def _check_options(self) -> None:
        o, where = self.options, f"metric {self.name!r}"
        for key in ("box_threshold", "nms_threshold", "iou_threshold", "colour_ratio"):
            value = o[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise InputError(f"must be a number in [0, 1], got {value!r}", where=where, field=key)
        for key, low in (("image_size", 32), ("pairs_per_batch", 1), ("images_per_batch", 1)):
            if isinstance(o[key], bool) or not isinstance(o[key], int) or not low <= o[key] <= 4096:
                raise InputError(f"must be an integer in [{low}, 4096], got {o[key]!r}", where=where, field=key)
        if o["dtype"] not in DTYPES:
            raise InputError(f"must be one of {DTYPES}, got {o['dtype']!r}", where=where, field="dtype")

    def model_ids(self) -> dict[str, str]:
        if self.profile == "tiny":
            return {"detector": TINY_DETECTOR, "segmenter": TINY_SEGMENTER}
        o = self.options
        return {"detector": o["detector"], "detector_revision": o["detector_revision"] or "default",
                "segmenter": o["segmenter"], "segmenter_revision": o["segmenter_revision"] or "default"}

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["options"] = {k: v for k, v in ident["options"].items() if k not in _NOT_IN_IDENTITY}
        ident["protocol"] = {"reference": protocol.REFERENCE, "text_threshold": protocol.TEXT_THRESHOLD,
                             "hsv_ranges": {k: [list(map(list, r)) for r in v] for k, v in protocol.HSV_RANGES.items()}}
        if self.profile == "tiny":
            ident["warning"] = TINY_WARNING
        return ident

    def load(self) -> MigModels:
        device, dtype = self.resolve_device(), self.options["dtype"]
        key = ("mig-bench", *sorted(self.model_ids().items()), self.profile, device, dtype)
        return self.cache.get(key, lambda: self._build(device, dtype))

    def _build(self, device: str, dtype: str) -> MigModels:
        if self.profile == "tiny":
            with tempfile.TemporaryDirectory(prefix="tiny-mig-") as folder:
                save_tiny_grounder(f"{folder}/detector")
                save_tiny_segmenter(f"{folder}/segmenter")
                return MigModels(load_grounder(f"{folder}/detector", None, device, dtype),
                                 load_segmenter(f"{folder}/segmenter", None, device, dtype))
        o = self.options
        grounder = load_grounder(o["detector"], o["detector_revision"], device, dtype)
        segmenter = load_segmenter(o["segmenter"], o["segmenter_revision"], device, dtype)
        return MigModels(grounder, segmenter, (_commit(grounder.model), _commit(segmenter)))

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        import cv2

        o = self.options
        images = [prepare_image(item, int(o["image_size"])) for item in items]
        parsed = [[_parse(entity.prompt) for entity in item.layout.entities] for item in items]
        found = self.model.detect(images, [[p.caption for p in ps if isinstance(p, Instance)] for ps in parsed],
                                  box_threshold=float(o["box_threshold"]), nms_threshold=float(o["nms_threshold"]),
                                  pairs_per_batch=int(o["pairs_per_batch"]))
        verdicts = [self._positions(item, ps, hits) for item, ps, hits in zip(items, parsed, found, strict=True)]
        boxes = [[_pixels(item.layout.entities[j].bbox, int(o["image_size"])) for j, v in enumerate(vs)
                  if v is not None and v.position_ok] for item, vs in zip(items, verdicts, strict=True)]
        masks = self.model.segment([cv2.cvtColor(image, cv2.COLOR_BGR2RGB) for image in images],
                                   [_stack(b) for b in boxes], images_per_batch=int(o["images_per_batch"]))
        rows: list[ScoreRow] = []
        for item, image, ps, vs, image_masks, hits in zip(items, images, parsed, verdicts, masks, found, strict=True):
            waiting = iter(image_masks)
            for j, (instance, verdict) in enumerate(zip(ps, vs, strict=True)):
                if verdict is None:
                    rows.append(row(self, item, math.nan, j, status="excluded", reason=str(instance)))
                    continue
                if verdict.position_ok:
                    inside, area = colour_counts(image, next(waiting), instance.colour)
                    verdict = with_colour(verdict, inside, area, float(o["colour_ratio"]))
                rows.append(row(self, item, float(verdict.success), j,
                                **self._detail(instance, verdict, hits[instance.caption])))
        return rows

    def _positions(self, item: ScoreItem, parsed: list[Instance | str], hits: dict) -> list[Outcome | None]:
        size, threshold = int(self.options["image_size"]), float(self.options["iou_threshold"])
        return [position(best_iou(hits[p.caption].boxes, _pixels(entity.bbox, size)), threshold)
                if isinstance(p, Instance) else None
                for entity, p in zip(item.layout.entities, parsed, strict=True)]

    def _detail(self, instance: Instance, verdict: Outcome, hits: Any) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "noun": instance.noun, "colour": instance.colour, "detections": len(hits.boxes),
            "iou": verdict.iou, "position_ok": verdict.position_ok, "colour_ok": verdict.colour_ok,
            "colour_inside": verdict.colour_inside, "colour_area": verdict.colour_area, "miou": verdict.miou,
            "models": self._model_names(),
        }
        if self.profile == "tiny":
            detail["warning"] = TINY_WARNING
        return detail

    def _model_names(self) -> dict[str, str]:
        ids = self.model_ids()
        commits = getattr(self.model, "commits", (None, None))
        return {role: f"{ids[role]}@{commit or ids.get(f'{role}_revision', 'local')}"
                for role, commit in zip(("detector", "segmenter"), commits, strict=True)}


def prepare_image(item: ScoreItem, size: int = protocol.IMAGE_SIZE) -> Any:
    """The BGR uint8 image the script scores: read as cv2 reads it (8-bit, colour channels in BGR
    order), resized to size x size with cv2's default bilinear filter (eval_mig.py:448-450)."""
    import cv2
    import numpy as np

    image = np.ascontiguousarray(np.asarray(item.load_image())[..., ::-1])
    if image.shape[:2] != (size, size):
        image = cv2.resize(image, dsize=(size, size))
    return image


def _parse(prompt: str) -> Instance | str:
    try:
        return parse_instance(prompt)
    except InputError as exc:
        return exc.message


def _pixels(bbox: Sequence[float], size: int) -> Any:
    """eval_mig.py:467: the normalised layout box times 512, in float64."""
    import numpy as np

    return np.array(bbox, dtype=np.float64) * size


def _stack(boxes: list) -> Any:
    import numpy as np

    return np.stack(boxes) if boxes else np.zeros((0, 4))


def _commit(model: Any) -> str | None:
    """The hub commit a model was loaded at (transformers records it on the config)."""
    return getattr(getattr(model, "config", None), "_commit_hash", None)
