"""The image InstanceDiffusion's evaluation scores: the generated picture as its script saved it.

``eval_local.py`` (frank-xwang/InstanceDiffusion@722900e) saves every sample under the COCO file
name, ``000000000139.jpg`` (lines 92, 98): PIL picks JPEG from the extension and writes it at its
default quality, 75. Both scorers then read that JPEG: the attribute scorer with PIL
(eval/eval_attribute_binding.py:183), ``yolo val`` with OpenCV. Our generators write lossless
PNG, so the metrics re-encode it the same way before scoring (option ``jpeg_quality``; 0 scores
the PNG as it is, a deviation recorded in the metric's identity).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from eligen_bench.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

JPEG_QUALITY = 75
"""PIL's default JPEG quality, what ``sample.save(path.jpg)`` (eval_local.py:98) writes."""


def check_quality(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise InputError(f"must be an integer in [0, 100] (0: no re-encoding), got {value!r}", where=where,
                         field="jpeg_quality")
    return value


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    """`image` as PIL writes it to a .jpg file at `quality` (other settings PIL's defaults)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def as_scored_pil(image: Image.Image, quality: int) -> Image.Image:
    """The RGB image the attribute scorer sees: ``Image.open(jpg).convert("RGB")`` (line 183)."""
    from PIL import Image

    if not quality:
        return image.convert("RGB")
    with Image.open(io.BytesIO(jpeg_bytes(image, quality))) as decoded:
        return decoded.convert("RGB")


def as_scored_bgr(image: Image.Image, quality: int) -> Any:
    """The BGR uint8 array ``yolo val`` reads (``cv2.imread`` of the JPEG)."""
    import cv2
    import numpy as np

    if not quality:
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    data = np.frombuffer(jpeg_bytes(image, quality), dtype=np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR)
