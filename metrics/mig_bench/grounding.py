"""GroundingDINO as eval_mig.py runs it, on transformers' `GroundingDinoForObjectDetection`.

The script calls the groundingdino package's `Model.predict_with_classes` once per instance
with the noun alone (eval_mig.py:216-229), then class-agnostic NMS (:238-246). Transcribed here
from GroundingDINO/groundingdino/util/inference.py at LeyRio/MIG_Bench@063ec45:
- input: BGR -> RGB PIL, resized by torchvision so the short side is 800 (long side at most
  1333), to tensor, ImageNet normalisation (:213-223, datasets/transforms.py:87-117);
- output: sigmoid of the logits, a query kept when its best token is above the box threshold;
  its score is that best token; boxes cxcywh scaled by the source (w, h, w, h), then xyxy
  (:69-74, :85, :232-235). The text threshold only names phrases (:79-83) and is not used.
Batched: one forward per (image, noun) pair, pairs of several images stacked, captions padded
to the longest (padding tokens are masked out of every attention and logit); an image's two
instances of one noun share one pair, as the script's two identical calls would agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eligen_bench.metrics.mig_bench import protocol

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass(frozen=True)
class Grounder:
    """A GroundingDINO model and its (BERT) tokenizer."""

    model: Any
    tokenizer: Any


@dataclass(frozen=True)
class Detections:
    """Boxes (N, 4) float32 xyxy in source pixels and their scores (N,), after NMS, best first."""

    boxes: np.ndarray
    scores: np.ndarray


def load_grounder(path: str, revision: str | None, device: str, dtype: str = "float32") -> Grounder:
    """From a hub id or a local folder (the tiny profile saves one): the same code path."""
    import torch
    from transformers import AutoTokenizer, GroundingDinoForObjectDetection

    model = GroundingDinoForObjectDetection.from_pretrained(path, revision=revision, dtype=getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    return Grounder(model.to(device).eval(), tokenizer)


def resized_size(height: int, width: int, size: int = protocol.DETECTOR_MIN_SIZE,
                 max_size: int | None = protocol.DETECTOR_MAX_SIZE) -> tuple[int, int]:
    """(h, w) after RandomResize([size], max_size): GroundingDINO/groundingdino/datasets/
    transforms.py:90-108 (get_size_with_aspect_ratio), integer truncation included."""
    w, h = width, height
    if max_size is not None:
        small, large = float(min(w, h)), float(max(w, h))
        if large / small * size > max_size:
            size = int(round(max_size * small / large))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


def pixel_values(image_bgr: np.ndarray) -> torch.Tensor:
    """(3, H, W) float input of one BGR uint8 image (util/inference.py:213-223)."""
    import cv2
    import torchvision.transforms.functional as F
    from PIL import Image

    image = Image.fromarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    image = F.resize(image, list(resized_size(image.height, image.width)))
    return F.normalize(F.to_tensor(image), mean=list(protocol.DETECTOR_MEAN), std=list(protocol.DETECTOR_STD))


def keep_boxes(logits: torch.Tensor, boxes: torch.Tensor, height: int, width: int,
               box_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One pair's (nq, 256) logits and (nq, 4) cxcywh boxes -> kept xyxy boxes and scores in source
    pixels (util/inference.py:69-74, :85, :232-235), on CPU in float32 as the script computes."""
    import torch
    from torchvision.ops import box_convert

    probs = logits.detach().float().cpu().sigmoid()
    best = probs.max(dim=1)[0]
    keep = best > box_threshold
    scaled = boxes.detach().float().cpu()[keep] * torch.tensor([width, height, width, height], dtype=torch.float32)
    return box_convert(scaled, in_fmt="cxcywh", out_fmt="xyxy"), best[keep]


def suppress(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> Detections:
    """Class-agnostic NMS (eval_mig.py:238-246)."""
    from torchvision.ops import nms

    index = nms(boxes, scores, threshold)
    return Detections(boxes[index].numpy(), scores[index].numpy())


def detect(grounder: Grounder, images_bgr: Sequence[np.ndarray], captions: Sequence[Sequence[str]], *,
           box_threshold: float = protocol.BOX_THRESHOLD, nms_threshold: float = protocol.NMS_THRESHOLD,
           pairs_per_batch: int = 16) -> list[dict[str, Detections]]:
    """Detections of every caption of every image: `result[i][caption]`."""
    import torch

    pixels = [pixel_values(image) for image in images_bgr]
    pairs = [(i, caption) for i, wanted in enumerate(captions) for caption in dict.fromkeys(wanted)]
    # Pairs of one input size share a forward (every MIG-Bench image is 512x512, so all do).
    pairs.sort(key=lambda pair: tuple(pixels[pair[0]].shape))
    results: list[dict[str, Detections]] = [{} for _ in images_bgr]
    device = next(grounder.model.parameters()).device
    dtype = next(grounder.model.parameters()).dtype
    start = 0
    while start < len(pairs):
        shape = pixels[pairs[start][0]].shape
        chunk = [pairs[start]]
        while (start + len(chunk) < len(pairs) and len(chunk) < max(1, pairs_per_batch)
               and pixels[pairs[start + len(chunk)][0]].shape == shape):
            chunk.append(pairs[start + len(chunk)])
        start += len(chunk)
        text = grounder.tokenizer([caption for _, caption in chunk], padding="longest", return_tensors="pt")
        batch = torch.stack([pixels[i] for i, _ in chunk]).to(device, dtype)
        with torch.no_grad():
            out = grounder.model(pixel_values=batch, **{k: v.to(device) for k, v in text.items()})
        for k, (i, caption) in enumerate(chunk):
            height, width = images_bgr[i].shape[:2]
            boxes, scores = keep_boxes(out.logits[k], out.pred_boxes[k], height, width, box_threshold)
            results[i][caption] = suppress(boxes, scores, nms_threshold)
    return results
