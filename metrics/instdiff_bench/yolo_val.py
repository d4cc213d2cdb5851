"""YOLO predictions as ``yolo val segment`` (ultralytics 8.0.119) writes them to predictions.json.

InstanceDiffusion's README (frank-xwang/InstanceDiffusion@722900e, README.md:240-243) scores its
COCO samples with ``yolo val segment model=yolov8m-seg.pt data=coco.yaml``, pinned to
ultralytics==8.0.119 (requirements.txt). On COCO's val2017 that command writes every prediction
to predictions.json and lets pycocotools compute the AP (``save_json |= is_coco``,
yolo/v8/detect/val.py:47-49; ``eval_json``, yolo/v8/segment/val.py:218-244). The installed
ultralytics runs the network; everything around it follows 8.0.119 (paths below are in the
ultralytics 8.0.119 wheel):

- Input (yolo/data/base.py:143-158, 212-234; yolo/data/augment.py:538-585): the image read by
  OpenCV (BGR), its long side resized to ``imgsz`` (INTER_LINEAR when enlarging, INTER_AREA when
  shrinking), then letterboxed, never enlarged, onto the rectangular batch shape ``ceil(shape *
  imgsz / 32 + 0.5) * 32`` (``yolo val`` sets ``rect=True``, yolo/engine/model.py:290; val pad
  0.5, yolo/data/build.py:84): a 512x512 sample becomes 640x640 on a 672x672 canvas, grey 114
  borders. The shape is that of a batch of same-aspect images; ``yolo val`` groups images by
  aspect, so a run of mixed aspects can differ from it by its batch grouping.
- Network in float32 (``half`` is off), Conv+BN fused (AutoBackend's ``fuse=True``).
- NMS (yolo/utils/ops.py ``non_max_suppression`` as the segment validator calls it,
  yolo/v8/segment/val.py:46-57): ``conf=0.001``, ``iou=0.7``, ``max_det=300``, multi-label (a
  box is kept once per class whose score passes ``conf``), class-aware (boxes offset by class x
  7680), at most 30000 boxes into torchvision's NMS.
- Boxes mapped back with the load ratio and the letterbox padding (``scale_boxes`` with
  ``ratio_pad``, yolo/utils/ops.py:90-117), clipped to the image, written as x, y, w, h rounded to
  3 decimals, scores to 5 (yolo/v8/segment/val.py:192-216).
- Masks (``save_json`` picks ``process_mask_upsample``, val.py:35-37; ops.py:541-578): sigmoid of
  coefficients x prototypes, bilinear to the canvas, zero outside the box, > 0.5; the padding cut
  off and the rest resized to the image by ``cv2.resize`` (bilinear on 0/1 bytes; ``scale_image``,
  ops.py:307-342), then COCO RLE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

STRIDE = 32
VAL_PAD = 0.5
"""build_yolo_dataset: ``pad=0.0 if mode == 'train' else 0.5`` (yolo/data/build.py:84)."""
MAX_NMS = 30000
MAX_WH = 7680
BORDER = 114
CV_CHANNELS = 128


@dataclass(frozen=True)
class Geometry:
    """Where an image of `original` (h, w) sits on the network's canvas."""

    original: tuple[int, int]
    resized: tuple[int, int]
    """(h, w) after the load resize."""
    canvas: tuple[int, int]
    """(h, w) of the letterboxed input."""
    unpad: tuple[int, int]
    """(h, w) of the image on the canvas (the resized size: the letterbox never enlarges)."""
    pad: tuple[float, float]
    """(dw, dh): padding left and top, as the letterbox computes it (may be x.5)."""

    @property
    def gain(self) -> float:
        """``ratio_pad[0][0]``: resized height / original height (8.0.119 uses it for both axes)."""
        return self.resized[0] / self.original[0]


def val_geometry(height: int, width: int, imgsz: int = 640) -> Geometry:
    """The load resize and rectangular letterbox of ``yolo val`` for one image."""
    r = imgsz / max(height, width)
    resized = (height, width) if r == 1 else (min(math.ceil(height * r), imgsz), min(math.ceil(width * r), imgsz))
    # set_rectangle: the batch shape from the aspect ratio h / w (a batch of this aspect alone)
    aspect = height / width
    shape = [aspect, 1.0] if aspect < 1 else [1.0, 1.0 / aspect] if aspect > 1 else [1.0, 1.0]
    canvas = tuple(int(np.ceil(s * imgsz / STRIDE + VAL_PAD)) * STRIDE for s in shape)
    ratio = min(canvas[0] / resized[0], canvas[1] / resized[1], 1.0)  # scaleup=False
    unpad = (int(round(resized[1] * ratio)), int(round(resized[0] * ratio)))  # (w, h)
    dw, dh = (canvas[1] - unpad[0]) / 2, (canvas[0] - unpad[1]) / 2
    return Geometry((height, width), resized, (canvas[0], canvas[1]), (unpad[1], unpad[0]), (dw, dh))


def letterbox(image_bgr: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The canvas ``yolo val`` feeds the network (BGR uint8, HWC)."""
    import cv2

    h0, w0 = geometry.original
    image = image_bgr
    if geometry.resized != (h0, w0):
        enlarge = geometry.resized[0] > h0 or geometry.resized[1] > w0
        image = cv2.resize(image, (geometry.resized[1], geometry.resized[0]),
                           interpolation=cv2.INTER_LINEAR if enlarge else cv2.INTER_AREA)
    if image.shape[:2] != geometry.unpad:
        image = cv2.resize(image, (geometry.unpad[1], geometry.unpad[0]), interpolation=cv2.INTER_LINEAR)
    dw, dh = geometry.pad
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(BORDER,) * 3)


def to_tensor(canvases: Sequence[np.ndarray], device: str) -> Any:
    """BGR HWC uint8 canvases -> RGB NCHW float in [0, 1] (Format, augment.py:740-745; /255)."""
    import torch

    array = np.stack([np.ascontiguousarray(c.transpose(2, 0, 1)[::-1]) for c in canvases])
    return torch.from_numpy(array).to(device).float() / 255


def split_outputs(outputs: Any) -> tuple[Any, Any | None]:
    """(predictions (B, 4 + nc + nm, anchors), prototypes or None) from either ultralytics
    release's eval-mode output: 8.0.x gives ``(preds, (x, mc, proto))``, 8.3+ ``((preds, proto), raw)``."""
    first = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    if isinstance(first, (tuple, list)):
        return first[0], first[1]
    rest = outputs[1] if isinstance(outputs, (tuple, list)) and len(outputs) > 1 else None
    if isinstance(rest, (tuple, list)):
        return first, rest[-1] if len(rest) == 3 else rest[0]
    return first, rest if hasattr(rest, "shape") else None


def multi_label_nms(prediction: Any, nc: int, conf: float, iou: float, max_det: int) -> Any:
    """One image's kept rows ``(x1, y1, x2, y2, score, class, mask coefficients...)``, best first.

    `prediction` is (4 + nc + nm, anchors): centre-xywh boxes, class scores, coefficients."""
    import torch
    import torchvision

    x = prediction.transpose(0, 1)
    x = x[x[:, 4 : 4 + nc].amax(1) > conf]
    box = x[:, :4].clone()
    box[:, :2] = x[:, :2] - x[:, 2:4] / 2
    box[:, 2:] = x[:, :2] + x[:, 2:4] / 2
    rows, cols = (x[:, 4 : 4 + nc] > conf).nonzero(as_tuple=False).T
    kept = torch.cat((box[rows], x[rows, 4 + cols, None], cols[:, None].float(), x[rows, 4 + nc :]), 1)
    if not kept.shape[0]:
        return kept
    kept = kept[kept[:, 4].argsort(descending=True)[:MAX_NMS]]
    keep = torchvision.ops.nms(kept[:, :4] + kept[:, 5:6] * MAX_WH, kept[:, 4], iou)[:max_det]
    return kept[keep]


def boxes_to_image(boxes: Any, geometry: Geometry) -> Any:
    """``scale_boxes(canvas, boxes, original, ratio_pad)``: minus the padding, over the load gain,
    clipped to the image."""
    out = boxes.clone()
    dw, dh = geometry.pad
    out[:, [0, 2]] -= dw
    out[:, [1, 3]] -= dh
    out[:, :4] /= geometry.gain
    h0, w0 = geometry.original
    out[:, [0, 2]] = out[:, [0, 2]].clamp(0, w0)
    out[:, [1, 3]] = out[:, [1, 3]].clamp(0, h0)
    return out


def masks_on_canvas(protos: Any, coefficients: Any, boxes: Any, canvas: tuple[int, int]) -> Any:
    """``process_mask_upsample``: (n, H, W) 0/1 masks on the canvas."""
    import torch
    import torch.nn.functional as F

    channels, mh, mw = protos.shape
    masks = (coefficients @ protos.float().view(channels, -1)).sigmoid().view(-1, mh, mw)
    masks = F.interpolate(masks[None], canvas, mode="bilinear", align_corners=False)[0]
    cols = torch.arange(canvas[1], device=masks.device, dtype=boxes.dtype)[None, None, :]
    rows = torch.arange(canvas[0], device=masks.device, dtype=boxes.dtype)[None, :, None]
    x1, y1, x2, y2 = (boxes[:, k, None, None] for k in range(4))
    inside = (cols >= x1) * (cols < x2) * (rows >= y1) * (rows < y2)
    return (masks * inside).gt_(0.5)


def masks_to_image(masks: Any, geometry: Geometry) -> np.ndarray:
    """``scale_image``: the padding cut off, ``cv2.resize`` to the image: (h, w, n) uint8."""
    import cv2
    import torch

    h0, w0 = geometry.original
    array = masks.to(dtype=torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()
    if array.shape[:2] == (h0, w0):
        return array
    dw, dh = geometry.pad
    top, left = int(dh), int(dw)
    bottom, right = int(array.shape[0] - dh), int(array.shape[1] - dw)
    array = array[top:bottom, left:right]
    # One cv2.resize call per block of channels: OpenCV 4.7 (the reference's) takes up to 512 at
    # once, OpenCV 5 only 128; channels are resized independently, so blocks give the same bytes.
    blocks = [cv2.resize(np.ascontiguousarray(array[:, :, k : k + CV_CHANNELS]), (w0, h0))
              for k in range(0, array.shape[2], CV_CHANNELS)]
    return np.concatenate([b[:, :, None] if b.ndim == 2 else b for b in blocks], axis=2)


def encode_masks(masks: np.ndarray) -> list[str]:
    """COCO compressed RLE strings of (h, w, n) 0/1 masks (``single_encode``, segment/val.py:197-201)."""
    from pycocotools import mask as mask_utils

    out = []
    for k in range(masks.shape[2]):
        rle = mask_utils.encode(np.asarray(masks[:, :, k : k + 1], order="F", dtype=np.uint8))[0]
        out.append(rle["counts"].decode("utf-8"))
    return out


def coco_boxes(boxes: Any) -> list[list[float]]:
    """xyxy -> COCO x, y, w, h as 8.0.119 computes it (``xyxy2xywh``, then centre minus half),
    rounded to 3 decimals."""
    xywh = boxes[:, :4].clone()
    xywh[:, 0] = (boxes[:, 0] + boxes[:, 2]) / 2
    xywh[:, 1] = (boxes[:, 1] + boxes[:, 3]) / 2
    xywh[:, 2] = boxes[:, 2] - boxes[:, 0]
    xywh[:, 3] = boxes[:, 3] - boxes[:, 1]
    xywh[:, :2] -= xywh[:, 2:] / 2
    return [[round(v, 3) for v in b] for b in xywh.tolist()]


@dataclass(frozen=True)
class ValSettings:
    imgsz: int = 640
    conf: float = 0.001
    iou: float = 0.7
    max_det: int = 300
    masks: bool = False


def val_predictions(network: Any, images_bgr: Sequence[np.ndarray], settings: ValSettings, device: str,
                    batch_size: int = 16) -> list[dict[str, Any]]:
    """Per image: ``{"boxes": [[x, y, w, h], ...], "scores": [...], "classes": [...], "masks": [rle, ...]}``
    (class = the network's class index; masks only with ``settings.masks``)."""
    import torch

    geometries = [val_geometry(im.shape[0], im.shape[1], settings.imgsz) for im in images_bgr]
    results: list[dict[str, Any]] = [{} for _ in images_bgr]
    by_canvas: dict[tuple[int, int], list[int]] = {}
    for k, geometry in enumerate(geometries):
        by_canvas.setdefault(geometry.canvas, []).append(k)
    for indices in by_canvas.values():
        for start in range(0, len(indices), max(1, batch_size)):
            chunk = indices[start : start + batch_size]
            batch = to_tensor([letterbox(images_bgr[k], geometries[k]) for k in chunk], device)
            with torch.inference_mode():
                prediction, protos = split_outputs(network(batch))
                nc = prediction.shape[1] - 4 - (protos.shape[1] if protos is not None else 0)
                for n, k in enumerate(chunk):
                    kept = multi_label_nms(prediction[n], nc, settings.conf, settings.iou, settings.max_det)
                    results[k] = _result(kept, nc, protos[n] if protos is not None else None, geometries[k],
                                         settings.masks)
    return results


def _result(kept: Any, nc: int, protos: Any, geometry: Geometry, masks: bool) -> dict[str, Any]:
    boxes = boxes_to_image(kept[:, :4], geometry)
    out: dict[str, Any] = {
        "boxes": coco_boxes(boxes),
        "scores": [round(s, 5) for s in kept[:, 4].tolist()],
        "classes": [int(c) for c in kept[:, 5].tolist()],
    }
    if masks:
        if protos is None:
            raise ValueError("the detector gives no mask prototypes; segm AP needs a segmentation model")
        if kept.shape[0]:
            on_canvas = masks_on_canvas(protos, kept[:, 6:], kept[:, :4], geometry.canvas)
            out["masks"] = encode_masks(masks_to_image(on_canvas, geometry))
        else:
            out["masks"] = []
    return out
