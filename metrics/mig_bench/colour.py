"""The colour test of eval_mig.py: grey out everything but the SAM mask, HSV, inclusive ranges.

`colour_counts` gives (mask pixels in the colour's range, mask pixels); `colour_passes` is the
script's rule on them. Both work on the 512x512 BGR uint8 image the script reads with cv2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eligen_bench.metrics.mig_bench import protocol

if TYPE_CHECKING:
    import numpy as np


def grey_outside(image_bgr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """eval_mig.py:310-315: mask pixels keep their colour, the rest become (127, 127, 127)."""
    import numpy as np

    keep = mask.astype(bool)[..., None]
    return np.where(keep, image_bgr, np.uint8(protocol.GREY)).astype(np.uint8)


def in_range(image_bgr: np.ndarray, colour: str) -> np.ndarray:
    """Bool (H, W): pixels inside any of the colour's inclusive HSV ranges (eval_mig.py:337-353:
    cv2.cvtColor BGR2HSV, cv2.inRange per range, OR-ed)."""
    import cv2
    import numpy as np

    hsv = cv2.cvtColor(np.ascontiguousarray(image_bgr), cv2.COLOR_BGR2HSV)
    found = np.zeros(hsv.shape[:2], dtype=bool)
    for lower, upper in protocol.HSV_RANGES[colour]:
        found |= cv2.inRange(hsv, np.array(lower), np.array(upper)) > 0
    return found


def colour_counts(image_bgr: np.ndarray, mask: np.ndarray, colour: str) -> tuple[int, int]:
    """(mask pixels in the colour's range, mask pixels), on the image greyed outside the mask."""
    mask = mask.astype(bool)
    found = in_range(grey_outside(image_bgr, mask), colour) & mask  # eval_mig.py:320
    return int(found.sum()), int(mask.sum())


def colour_passes(inside: int, area: int, threshold: float = protocol.COLOUR_RATIO) -> bool:
    """eval_mig.py:322: fails on an empty mask or when inside / area < threshold (so exactly the
    threshold passes)."""
    return area > 0 and not inside / area < threshold
