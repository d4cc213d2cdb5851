"""Detector plumbing shared by the layout-accuracy metrics: matching, IoU, YOLO loading.

Box format everywhere in this module: ``xyxy`` normalised to the image, i.e. ``(x1, y1, x2,
y2)`` with ``0 <= x1 < x2 <= 1``, the same convention as `Entity.bbox`. Detector boxes (pixels
of the generated image) are divided by that image's width and height, so the generated image
may have any resolution or aspect ratio: the layout's boxes are stretched onto it. IoU is
invariant to that axis-aligned scaling, so pixel or normalised units give the same value.

Matching rules (option ``matching`` of the metrics):

- ``"best"`` (default): each ground-truth entity takes its highest IoU over all detections of
  its class; a detection may serve several entities (two "dog" boxes over one detected dog both
  score against it). This reads the paper's "mIoU between the ground truth bounding boxes and
  the predicted bounding boxes" literally and is the most forgiving rule.
- ``"greedy"``: one-to-one. All same-class (entity, detection) pairs with IoU > 0 are taken in
  order of decreasing IoU (ties: lower entity index, then higher detector confidence); a pair
  is kept when neither side is used yet. A second entity over the same object scores 0 unless
  a second detection covers it.

Entities without a category, or whose category is not one of the detector's classes (COCO
stuff such as "sky" or "grass"), are not matched: the metrics write them as rows with status
'excluded' and a NaN value, so they are counted but never averaged.

Only numpy at module level: the heavy imports (torch, ultralytics) live inside functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eligen_bench.coco_classes import CATEGORY_ALIASES, COCO_THING_CLASSES, normalize_category  # noqa: F401
from eligen_bench.errors import InputError

BOX_FORMAT = "xyxy, normalised to the image width and height"
MATCHING_RULES = ("best", "greedy")

# The 80 COCO detection classes in the order of the contiguous ids YOLO models are trained with.
COCO80 = COCO_THING_CLASSES


@dataclass(frozen=True)
class Detections:
    """One image's detections: normalised xyxy boxes, confidences, class names, optional masks."""

    boxes: np.ndarray
    """(N, 4) float, normalised xyxy."""
    scores: np.ndarray
    """(N,) float confidences."""
    labels: tuple[str, ...]
    """N class names (already normalised)."""
    masks: np.ndarray | None = None
    """(N, H, W) bool masks at the image's resolution (segmentation models only)."""

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.boxes.shape != (n, 4) or self.scores.shape != (n,):
            raise ValueError(f"inconsistent detections: boxes {self.boxes.shape}, scores "
                             f"{self.scores.shape}, {n} labels")
        if self.masks is not None and self.masks.shape[0] != n:
            raise ValueError(f"{self.masks.shape[0]} masks for {n} detections")

    def top(self, conf: float, max_det: int) -> Detections:
        """Those at or above `conf`, highest first, at most `max_det`.

        Equal to a detector call at that threshold and cap: NMS suppresses a box only through a
        higher-scoring one, so lowering the threshold adds boxes below it and changes none above.
        """
        order = [i for i in np.argsort(-self.scores, kind="stable") if self.scores[i] >= conf][:max_det]
        masks = None if self.masks is None else self.masks[order]
        return Detections(self.boxes[order].reshape(-1, 4), self.scores[order], tuple(self.labels[i] for i in order),
                          masks)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros((0,)), ())

    @classmethod
    def from_lists(cls, boxes: Sequence[Sequence[float]], scores: Sequence[float],
                   labels: Sequence[str], masks: np.ndarray | None = None) -> Detections:
        """Convenience constructor (tests, hand-made detections)."""
        return cls(np.asarray(boxes, dtype=float).reshape(-1, 4), np.asarray(scores, dtype=float),
                   tuple(normalize_category(x) or "" for x in labels), masks)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes; 0 where the union is empty."""
    a = np.asarray(a, dtype=float).reshape(-1, 4)
    b = np.asarray(b, dtype=float).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def mask_iou(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of one (H, W) bool mask against (N, H, W) bool masks of the same size."""
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool).reshape(-1, *gt.shape)
    inter = np.logical_and(pred, gt).sum(axis=(1, 2)).astype(float)
    union = np.logical_or(pred, gt).sum(axis=(1, 2)).astype(float)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass(frozen=True)
class Match:
    """The outcome for one eligible entity."""

    iou: float
    """IoU with the matched detection; 0.0 when none matched."""
    detection: int | None
    """Index of the matched detection, None when no detection of the class overlaps."""
    candidates: int
    """Detections of the entity's class (the pool it was matched from)."""


def match(iou: np.ndarray, same_class: np.ndarray, scores: np.ndarray, rule: str = "best") -> list[Match]:
    """Match entities (rows) to detections (columns) by `rule` ('best' or 'greedy').

    `iou` and `same_class` are (E, N); pairs of different classes never match. Returns one
    `Match` per entity. See the module docstring for the two rules.
    """
    if rule not in MATCHING_RULES:
        raise InputError(f"unknown matching rule {rule!r}; choose one of {MATCHING_RULES}", field="matching")
    iou = np.where(same_class, np.asarray(iou, dtype=float), 0.0)
    n_entities, n_dets = iou.shape
    candidates = same_class.sum(axis=1) if n_dets else np.zeros(n_entities, dtype=int)
    if rule == "best":
        out = []
        for e in range(n_entities):
            if n_dets == 0 or iou[e].max() <= 0:
                out.append(Match(0.0, None, int(candidates[e])))
                continue
            # argmax over IoU, ties broken by the higher confidence
            best = max(range(n_dets), key=lambda d, e=e: (iou[e, d], scores[d]))
            out.append(Match(float(iou[e, best]), best, int(candidates[e])))
        return out
    pairs = [(-iou[e, d], e, -scores[d], d) for e in range(n_entities) for d in range(n_dets) if iou[e, d] > 0]
    pairs.sort()
    taken_e: dict[int, tuple[float, int]] = {}
    taken_d: set[int] = set()
    for neg_iou, e, _, d in pairs:
        if e not in taken_e and d not in taken_d:
            taken_e[e] = (-neg_iou, d)
            taken_d.add(d)
    return [
        Match(taken_e[e][0], taken_e[e][1], int(candidates[e])) if e in taken_e
        else Match(0.0, None, int(candidates[e]))
        for e in range(n_entities)
    ]


def eligibility(categories: Sequence[str | None], classes: Sequence[str]) -> list[str | None]:
    """Per entity: None when it can be matched, else why not ('no_category', 'not_a_detector_class')."""
    known = set(classes)
    reasons: list[str | None] = []
    for category in categories:
        name = normalize_category(category)
        if name is None:
            reasons.append("no_category")
        elif name not in known:
            reasons.append("not_a_detector_class")
        else:
            reasons.append(None)
    return reasons


def class_names(model: Any) -> tuple[str, ...]:
    """The detector's class names by id, normalised; COCO80 for models built from a bare YAML."""
    names: Mapping[int, str] = model.names
    ordered = [str(names[i]) for i in range(len(names))]
    if len(ordered) == len(COCO80) and all(n.isdigit() for n in ordered):
        return COCO80  # a YAML-built model names its classes '0'..'79'; they are COCO's
    return tuple(normalize_category(n) or "" for n in ordered)


# ---------------------------------------------------------------- YOLO loading and inference

def ultralytics_version() -> str:
    from importlib.metadata import version

    return version("ultralytics")


@contextmanager
def _ultralytics_safe_load(enabled: bool):
    """Make ultralytics load checkpoints with torch.load(weights_only=True) and its allow-list."""
    import ultralytics.nn.tasks as tasks

    previous = tasks.SAFE_LOAD
    tasks.SAFE_LOAD = enabled or previous
    try:
        yield
    finally:
        tasks.SAFE_LOAD = previous


def load_yolo(weights: str, *, allow_pickle: bool = False, device: str | None = None) -> Any:
    """An ultralytics YOLO model from a checkpoint name (downloaded by ultralytics) or path.

    By default the checkpoint is read with ``torch.load(weights_only=True)`` through
    ultralytics' allow-list of its own model classes (official checkpoints load that way).
    A checkpoint that needs arbitrary unpickling loads only with ``allow_pickle=True``:
    unpickling runs code from the file.
    """
    from ultralytics import YOLO

    suffix = Path(str(weights)).suffix
    if suffix not in (".pt", ".yaml", ".yml"):
        raise InputError(f"expected a .pt checkpoint or a model .yaml, got {weights!r}", field="weights")
    if suffix != ".pt" or allow_pickle:
        model = YOLO(str(weights))
    else:
        try:
            with _ultralytics_safe_load(True):
                model = YOLO(str(weights))
        except TypeError as exc:
            raise InputError(
                f"{weights} cannot be loaded with weights_only=True ({exc}); if you trust the file, "
                "pass allow_pickle=True (unpickling runs code from it)",
                field="weights",
            ) from exc
    if device:
        model.to(device)
    return model


def tiny_yolo(task: str = "detect", seed: int = 0) -> Any:
    """A randomly initialised YOLO11n (80 COCO classes) built from its YAML: no download."""
    import torch
    from ultralytics import YOLO

    config = "yolo11n.yaml" if task == "detect" else "yolo11n-seg.yaml"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = YOLO(config)
    model.model.names = dict(enumerate(COCO80))
    return model


def detect(model: Any, images: Sequence[Any], *, imgsz: int, conf: float, iou: float,
           max_det: int, device: str | None = None, masks: bool = False) -> list[Detections]:
    """Run YOLO on a batch of PIL images in one call; boxes normalised to each image's size.

    Nothing is plotted or saved (plotting would fetch a font). With ``masks=True`` (a
    segmentation model) masks come at each image's own resolution (``retina_masks``).
    """
    if not images:
        return []
    names = class_names(model)
    results = model.predict(
        list(images), imgsz=imgsz, conf=conf, iou=iou, max_det=max_det, device=device,
        retina_masks=masks, verbose=False, save=False, batch=len(images),
    )
    out = []
    for result in results:
        height, width = result.orig_shape
        boxes = result.boxes.xyxy.detach().cpu().numpy().astype(float)
        boxes = np.clip(boxes / np.array([width, height, width, height], dtype=float), 0.0, 1.0)
        scores = result.boxes.conf.detach().cpu().numpy().astype(float)
        labels = tuple(names[int(c)] for c in result.boxes.cls.detach().cpu().numpy())
        mask_array = None
        if masks:
            if result.masks is None:
                mask_array = np.zeros((0, height, width), dtype=bool)
            else:
                mask_array = result.masks.data.detach().cpu().numpy() > 0.5
        out.append(Detections(boxes.reshape(-1, 4), scores.reshape(-1), labels, mask_array))
    return out
