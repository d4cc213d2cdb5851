"""Entity regions on the FLUX grids, each by the rule of the method's reference code.

A box is drawn at the generated image's size (`box_region`: the pixels whose centres it
holds, the reference's ``mask[y1:y2, x1:x2] = 1``); a mask is taken as stored. Either is then
resized straight to the model's grid, one entity at a time, so nothing of the layout's size
outlives one entity (an 8192x8192 layout with 40 entities holds one decoded mask at a time).

* EliGen (modelscope/DiffSynth-Studio@2e59733 (v1.1.0), diffsynth/pipelines/flux_image.py,
  ``preprocess_masks``): PIL NEAREST to the latent grid ``(H/8, W/8)``, then a token (2x2
  latent cells, ``patchify`` in diffsynth/models/flux_dit.py) belongs to the entity if any of
  its cells does. The inpainting foreground (``prepare_entity_inputs`` with
  ``enable_eligen_inpaint``): each mask resized to ``(H/8, W/8)`` with PIL's default filter
  (bicubic for the RGB mask images of the reference), kept where above half, united.
* Regional Prompting FLUX (antonioo-c/Regional-Prompting-FLUX@5ce6e6e, pipeline_flux_regional.py):
  ``interpolate(mask, (H/16, W/16), mode='nearest-exact')``: each token samples the pixel mask
  once.

A region can vanish on the grid (no token). The references then give the entity zero tokens
(no effect); ``vanishing_mask=one_token`` instead gives it the tokens holding any of its pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from eligen_bench.errors import InputError
from eligen_bench.layout import Layout, box_region, resize_region

if TYPE_CHECKING:
    import numpy as np
    import torch

VAE_SCALE = 8
"""FLUX.1's VAE downsamples by 8 (diffusers: 2 ** (len(block_out_channels) - 1))."""
PATCH = 2
"""FLUX packs 2x2 latent cells into one token."""
VANISHING = ("drop", "one_token")
OVERLAPS = ("reference", "exclusive")


def token_grid(height: int, width: int) -> tuple[int, int]:
    """Rows and columns of FLUX tokens for an image of `height` x `width` pixels."""
    cell = VAE_SCALE * PATCH
    return height // cell, width // cell


def entity_sources(layout: Layout, height: int, width: int) -> Iterator[tuple[int, np.ndarray]]:
    """(index, source region) per entity: its mask as stored, else its box at `height` x `width`."""
    for i, entity in enumerate(layout.entities):
        source = entity.source_region(height, width)
        if not source.any():
            raise InputError("region is empty (no pixel set); give a mask with at least one pixel",
                             where=f"layout {layout.id!r}", field=f"entities[{i}].mask")
        yield i, source


def eligen_token_masks(layout: Layout, height: int, width: int, vanishing: str = "drop") -> torch.Tensor:
    """Bool (k, tokens) EliGen token masks in FLUX's packed (row-major) order."""
    import torch

    rows, cols = token_grid(height, width)
    out = torch.zeros((len(layout.entities), rows * cols), dtype=torch.bool)
    for i, source in entity_sources(layout, height, width):
        cells = torch.from_numpy(resize_region(source, rows * PATCH, cols * PATCH, "pil-nearest"))
        out[i] = cells.reshape(rows, PATCH, cols, PATCH).any(dim=3).any(dim=1).flatten()
        if vanishing == "one_token" and not out[i].any():
            out[i] = any_pixel_tokens(source, rows, cols)
    return out


def regional_token_masks(layout: Layout, height: int, width: int, vanishing: str = "drop") -> torch.Tensor:
    """Bool (k, tokens) Regional Prompting FLUX token masks: one nearest-exact sample per token."""
    import torch

    rows, cols = token_grid(height, width)
    out = torch.zeros((len(layout.entities), rows * cols), dtype=torch.bool)
    for i, source in entity_sources(layout, height, width):
        out[i] = torch.from_numpy(resize_region(source, rows, cols, "nearest-exact")).flatten()
        if vanishing == "one_token" and not out[i].any():
            out[i] = any_pixel_tokens(source, rows, cols)
    return out


def any_pixel_tokens(source: np.ndarray, rows: int, cols: int) -> torch.Tensor:
    """The tokens that hold any pixel of `source` (the `one_token` fallback), flattened."""
    import torch
    import torch.nn.functional as F

    pooled = F.adaptive_max_pool2d(torch.from_numpy(source.astype("float32"))[None, None], (rows, cols))
    return pooled.flatten() > 0


def regional_background(
    layout: Layout, masks: torch.Tensor, height: int, width: int, overlap: str = "reference"
) -> torch.Tensor | None:
    """The background prompt's token mask, or None when the method adds no background prompt.

    ``reference`` (infer_flux_regional.py at 5ce6e6e): ``background = 1 - sum(masks)`` at pixel
    level, kept only when its sum is > 0, and stored into a bool mask, so every token whose
    entity count is not exactly 1 (uncovered, or covered twice or more) joins the background.
    ``exclusive``: only tokens no entity covers; added whenever there is one.
    """
    count = masks.sum(dim=0)
    if overlap == "exclusive":
        uncovered = count == 0
        return uncovered if bool(uncovered.any()) else None
    covered = sum(int(source.sum()) for _, source in _image_sources(layout, height, width))
    if height * width - covered <= 0:
        return None
    return count != 1


def _image_sources(layout: Layout, height: int, width: int) -> Iterator[tuple[int, np.ndarray]]:
    """Each entity's region at the image size (masks resized nearest-exact), one at a time."""
    for i, entity in enumerate(layout.entities):
        if entity.mask is None:
            yield i, box_region(entity.bbox, height, width)
        else:
            yield i, resize_region(entity.mask.to_array(), height, width, "nearest-exact")


def eligen_foreground(layout: Layout, height: int, width: int) -> np.ndarray:
    """Bool (H/8, W/8) inpainting foreground: the union of each mask resized bicubic, above half."""
    import numpy as np
    from PIL import Image

    size = (width // VAE_SCALE, height // VAE_SCALE)
    union = np.zeros((size[1], size[0]), dtype=bool)
    for _, source in entity_sources(layout, height, width):
        image = Image.fromarray(np.multiply(source, 255, dtype=np.uint8))
        # PIL's default filter for RGB images (the reference's masks) is bicubic; the reference
        # maps pixels to [-1, 1] and keeps > 0, i.e. values above 127.5
        union |= np.asarray(image.resize(size, Image.BICUBIC)) > 127
    return union


def vanished(masks: torch.Tensor) -> list[int]:
    """0-based indices of entities whose token mask is empty."""
    return [i for i in range(masks.shape[0]) if not bool(masks[i].any())]
