"""Background preservation of inpainting: PSNR of the image outside the entity regions.

EliGen's inpainting fusion (paper Algorithm 1) promises to keep the non-inpainted area of the
input image. `background_psnr` measures that: the generated image and the layout's input image
(resized to the generated size with bicubic resampling) are compared over the pixels outside
the union of the entity regions (masks where given, else boxes), as
``PSNR = 10 log10(255^2 / MSE)`` in dB on 8-bit RGB. Identical backgrounds would give an
infinite PSNR; the MSE is floored so the value is at most 100 dB. Images of layouts without an
input image, or whose entities cover every pixel, are 'excluded'. No model is involved, so the
`tiny` profile computes the real number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from eligen_bench.api.metric import Metric, ScoreItem, ScoreRow, row

MAX_PSNR = 100.0


def background_psnr(generated: np.ndarray, original: np.ndarray, background: np.ndarray) -> float:
    """PSNR (dB) of two uint8 RGB arrays over the True pixels of `background`; NaN when empty."""
    if not background.any():
        return math.nan
    diff = generated.astype(np.float64)[background] - original.astype(np.float64)[background]
    mse = max(float(np.mean(diff**2)), 255.0**2 * 10 ** (-MAX_PSNR / 10))
    return 10.0 * math.log10(255.0**2 / mse)


class BackgroundPSNR(Metric):
    """PSNR of the generated image vs the input image outside the entities (inpainting suites)."""

    name = "background_psnr"
    display_name = "Background PSNR"
    # No reference code: Algorithm 1 of the EliGen paper only promises an unchanged background.
    reference: ClassVar[str] = "EliGen paper (arXiv 2501.01097): Algorithm 1 (no published code)"
    level = "image"
    higher_is_better = True
    description = "Inpainting: PSNR (dB) vs the input image outside the entity regions"
    in_default_run = False  # only meaningful on suites whose layouts carry an init_image
    defaults: ClassVar[dict[str, Any]] = {}

    def load(self) -> Any:
        return "no model"

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        from PIL import Image

        rows = []
        for item in items:
            if item.init_image is None:
                rows.append(row(self, item, math.nan, status="excluded", reason="no input image"))
                continue
            generated = np.asarray(item.load_image())
            height, width = generated.shape[:2]
            with Image.open(item.init_image) as init:
                original = np.asarray(init.convert("RGB").resize((width, height), Image.BICUBIC))
            covered = np.zeros((height, width), dtype=bool)
            for entity in item.layout.entities:
                covered |= entity.region(height, width)
            value = background_psnr(generated, original, ~covered)
            if math.isnan(value):
                rows.append(row(self, item, value, status="excluded", reason="entities cover the whole image"))
            else:
                rows.append(row(self, item, value, background_fraction=round(float((~covered).mean()), 4)))
        return rows
