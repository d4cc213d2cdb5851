"""One instance's verdict as eval_mig.py reaches it: position, then colour, then its mIoU term.

The script's `check_on_image` (eval_mig.py:182-335) returns (position ok, colour ok, miou):
- no detection of the noun: (0, 0, 0.0)                                   (:267-268)
- best IoU of a detection with the layout box < 0.5: (0, 0, best IoU)     (:259-262)
- else SAM on the layout box; colour fails: (1, 0, 0.0)                   (:322-329)
- else (1, 1, best IoU)                                                   (:330-335)
An instance succeeds (counts for I-SR) when both flags are 1 (:482); an image succeeds (SR)
when all its instances do (:471-472, :487).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from eligen_bench.metrics.mig_bench import protocol
from eligen_bench.metrics.mig_bench.colour import colour_passes

if TYPE_CHECKING:
    import numpy as np


def best_iou(boxes: np.ndarray, target: np.ndarray) -> float | None:
    """Highest IoU of the detections (N, 4) with the layout box (4,), all xyxy pixels; None when
    there is no detection. The script's arithmetic (eval_mig.py:249-259): no +1, boxes as the
    detector gives them (float32), the layout box in float64."""
    import numpy as np

    if len(boxes) == 0:
        return None
    pred = np.asarray(boxes)
    gt = np.asarray(target, dtype=np.float64)
    iw = np.maximum(np.minimum(pred[:, 2], gt[2]) - np.maximum(pred[:, 0], gt[0]), 0.0)
    ih = np.maximum(np.minimum(pred[:, 3], gt[3]) - np.maximum(pred[:, 1], gt[1]), 0.0)
    inter = iw * ih
    union = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1]) + (gt[2] - gt[0]) * (gt[3] - gt[1]) - inter
    return float(np.max(inter / union))


@dataclass(frozen=True)
class Outcome:
    """One instance's verdict and the numbers behind it."""

    iou: float | None
    """Best IoU of a detection of the noun with the layout box; None without detections."""
    position_ok: bool
    colour_inside: int | None = None
    """Mask pixels in the colour's HSV range; None when the colour was not tested."""
    colour_area: int | None = None
    """SAM mask pixels; None when the colour was not tested."""
    colour_ok: bool = False
    miou: float = 0.0
    """The instance's term in the script's mIoU."""

    @property
    def success(self) -> bool:
        return self.position_ok and self.colour_ok

    @property
    def colour_ratio(self) -> float | None:
        if self.colour_area is None or self.colour_inside is None:
            return None
        return self.colour_inside / self.colour_area if self.colour_area else 0.0


def position(iou: float | None, threshold: float = protocol.IOU_THRESHOLD) -> Outcome:
    """The verdict before the colour test: fails without detection (mIoU 0) or below the
    threshold (mIoU = the raw IoU); a pass still needs `with_colour`."""
    if iou is None:
        return Outcome(None, False)
    if iou < threshold:
        return Outcome(iou, False, miou=iou)
    return Outcome(iou, True, miou=iou)


def with_colour(passed: Outcome, inside: int, area: int, threshold: float = protocol.COLOUR_RATIO) -> Outcome:
    """The final verdict of an instance whose position passed: mIoU 0 when the colour fails."""
    ok = colour_passes(inside, area, threshold)
    return Outcome(passed.iou, True, inside, area, ok, passed.miou if ok else 0.0)
