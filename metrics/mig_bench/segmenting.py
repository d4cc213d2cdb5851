"""SAM as eval_mig.py runs it (`SamPredictor`, box prompt, best of three masks), on transformers'
`SamModel`.

Transcribed from segment_anything at LeyRio/MIG_Bench@063ec45 (segment_anything/segment_anything/):
- input (predictor.py:34-60, utils/transforms.py:27-32, :94-102, modeling/sam.py:164-174): the RGB
  image resized by torchvision so its long side is the encoder's size (1024), pixel mean/std
  normalisation on 0-255 values (build_sam.py:99-100), zero padding to a square;
- prompt (predictor.py:150): the box scaled by (new size / old size) per axis;
- output (modeling/sam.py:154-161, predictor.py:245-248): the three low-resolution masks
  upsampled bilinearly to the padded input, cropped, upsampled to the image, `> 0.0`; the
  script keeps the one with the highest predicted IoU (eval_mig.py:275-281).
Batched: the image encoder runs over several images at once, the prompt decoder over all boxes
of one image at once (each box is decoded independently, as the script's one-box calls are).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from eligen_bench.metrics.mig_bench import protocol

if TYPE_CHECKING:
    import numpy as np
    import torch


def load_segmenter(path: str, revision: str | None, device: str, dtype: str = "float32") -> Any:
    """A `SamModel` from a hub id or a local folder (the tiny profile saves one)."""
    import torch
    from transformers import SamModel

    return SamModel.from_pretrained(path, revision=revision, dtype=getattr(torch, dtype)).to(device).eval()


def resized_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """utils/transforms.py:94-102 (ResizeLongestSide.get_preprocess_shape)."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def pixel_values(image_rgb: np.ndarray, long_side: int) -> torch.Tensor:
    """(3, S, S) normalised, padded input of one RGB uint8 image."""
    import numpy as np
    import torch
    import torch.nn.functional as nnf
    import torchvision.transforms.functional as F

    height, width = resized_size(*image_rgb.shape[:2], long_side)
    resized = np.array(F.resize(F.to_pil_image(image_rgb), [height, width]))
    x = torch.as_tensor(resized).permute(2, 0, 1).contiguous().float()
    mean = torch.tensor(protocol.SAM_PIXEL_MEAN).view(-1, 1, 1)
    std = torch.tensor(protocol.SAM_PIXEL_STD).view(-1, 1, 1)
    x = (x - mean) / std
    return nnf.pad(x, (0, long_side - width, 0, long_side - height))


def upscale(low_res: torch.Tensor, long_side: int, input_size: tuple[int, int],
            original_size: tuple[int, int]) -> torch.Tensor:
    """modeling/sam.py:154-161: masks (B, C, h, w) -> logits at the image's size."""
    import torch.nn.functional as nnf

    masks = nnf.interpolate(low_res, (long_side, long_side), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return nnf.interpolate(masks, original_size, mode="bilinear", align_corners=False)


def segment(model: Any, images_rgb: Sequence[np.ndarray], boxes: Sequence[np.ndarray], *,
            images_per_batch: int = 4) -> list[np.ndarray]:
    """For each image, the best-scoring mask (K, H, W) bool of each of its K xyxy pixel boxes."""
    import numpy as np
    import torch

    long_side = int(model.config.vision_config.image_size)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    results = [np.zeros((0, *image.shape[:2]), dtype=bool) for image in images_rgb]
    todo = [i for i, image_boxes in enumerate(boxes) if len(image_boxes)]
    for start in range(0, len(todo), max(1, images_per_batch)):
        chunk = todo[start : start + max(1, images_per_batch)]
        batch = torch.stack([pixel_values(images_rgb[i], long_side) for i in chunk]).to(device, dtype)
        with torch.no_grad():
            embeddings = model.get_image_embeddings(batch)
        for k, i in enumerate(chunk):
            results[i] = _masks(model, embeddings[k : k + 1], images_rgb[i].shape[:2], boxes[i], long_side)
    return results


def _masks(model: Any, embedding: torch.Tensor, size: tuple[int, int], boxes: np.ndarray,
           long_side: int) -> np.ndarray:
    import numpy as np
    import torch

    height, width = size
    input_size = resized_size(height, width, long_side)
    scaled = np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2).copy()  # utils/transforms.py:34-55
    scaled[..., 0] *= input_size[1] / width
    scaled[..., 1] *= input_size[0] / height
    prompt = torch.as_tensor(scaled.reshape(-1, 4), dtype=torch.float, device=embedding.device)
    with torch.no_grad():
        out = model(image_embeddings=embedding, input_boxes=prompt[None], multimask_output=True)
    logits = upscale(out.pred_masks[0].float(), long_side, input_size, (height, width))  # (K, 3, H, W)
    best = out.iou_scores[0].float().argmax(dim=1)  # first of equal scores, as np.argmax
    chosen = logits[torch.arange(len(best)), best] > protocol.SAM_MASK_THRESHOLD
    return chosen.cpu().numpy()
