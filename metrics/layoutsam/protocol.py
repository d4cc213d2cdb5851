"""LayoutSAM-Eval's judging protocol as its own scorer defines it: questions, crop, yes test.

Reference: HuiZhang0812/CreatiLayout@860d8bd `score_layoutsam_benchmark.py` (the script that
produced CreatiLayout's numbers); nenhang/ContextGen@f22fa90
`bench/sample_scripts/layoutsam/layoutsam_eval.py` copies it, except for the crop size.
Everything here is pure (no model), so tests check it against their own transcription.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from eligen_bench.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

REFERENCE = "HuiZhang0812/CreatiLayout@860d8bd: score_layoutsam_benchmark.py"
ASPECTS = ("spatial", "color", "texture", "shape")
"""The four scores, in the script's order; color, texture and shape are asked only after a
spatial yes (score_layoutsam_benchmark.py:88-130)."""


def strip_slashes(text: str) -> str:
    """`caption.replace('/', '')`, applied to both captions (score_layoutsam_benchmark.py:66-67)."""
    return text.replace("/", "")


def spatial_question(description: str) -> str:
    # HuiZhang0812/CreatiLayout@860d8bd: score_layoutsam_benchmark.py:72
    return (f'Is the subject "{description}" present in the image? '
            'Strictly answer with "Yes" or "No", without any irrelevant words.')


def attribute_question(aspect: str, description: str, detail_description: str) -> str:
    """The colour (:92), texture (:106) and shape (:119) questions of score_layoutsam_benchmark.py:
    one wording with the aspect's name in its two places ('not mentioned' answers "Yes")."""
    if aspect not in ASPECTS[1:]:
        raise ValueError(f"no attribute question for {aspect!r}")
    return (f'Is the subject in "{description}" in the image consistent with the {aspect} described in '
            f'the detailed description: "{detail_description}"? Strictly answer with "Yes" or "No", '
            f'without any irrelevant words. If the {aspect} is not mentioned in the detailed description, '
            'the answer is "Yes".')


def is_yes(answer: str) -> bool:
    """The script's test: a substring 'Yes' or 'yes' anywhere in the answer
    (score_layoutsam_benchmark.py:83, 102, 115, 129), so 'YES' is no and 'No, the eyes ...' is yes."""
    return "Yes" in answer or "yes" in answer


# ---------------------------------------------------------------- crop

CROPS = ("image-size", "fixed")


def crop_box(bbox: Sequence[float], size: tuple[int, int], mode: str = "image-size",
             resolution: int | None = None) -> tuple[int, int, int, int]:
    """The pixel box the judge's crop is cut with (PIL `crop` takes it as is).

    The boxes reach the scorer as float32 (`np.array(..., dtype=np.float32)` in
    dataset/layoutsam_benchmark.py:45), and each coordinate is truncated by `int()`.

    - 'image-size' (default): x by the image's width, y by its height, each float32 coordinate
      times the size in double precision. This is ContextGen's rule (`resolution = img.size[0]`
      for both axes, layoutsam_eval.py:313-322) extended to non-square images.
    - 'fixed': the CreatiLayout script's rule, one hard-coded `resolution` for both axes (512 for
      its FLUX model, 1024 for SD3: score_layoutsam_benchmark.py:31, 54-59); the coordinate is a
      float32 torch scalar, so the product is rounded to float32 before `int()`. On an image of
      another size this crops the wrong region (CreatiLayout issues 21 and 25).
    """
    coords = np.asarray(bbox, dtype=np.float32)
    if coords.shape != (4,):
        raise InputError(f"expected 4 box coordinates, got {list(bbox)!r}", field="bbox")
    if mode == "image-size":
        width, height = size
        scales = (width, height, width, height)
        return tuple(int(float(c) * s) for c, s in zip(coords, scales, strict=True))  # type: ignore[return-value]
    if mode == "fixed":
        if resolution is None:
            raise InputError("crop='fixed' needs crop_resolution", field="crop_resolution")
        scale = np.float32(resolution)
        return tuple(int(c * scale) for c in coords)  # type: ignore[return-value]
    raise InputError(f"unknown crop {mode!r}; choose one of {CROPS}", field="crop")


def is_empty(box: tuple[int, int, int, int]) -> bool:
    x1, y1, x2, y2 = box
    return x2 <= x1 or y2 <= y1


def as_saved_jpeg(image: Image.Image, quality: int | None) -> Image.Image:
    """The image as the reference scorer read it: the generation scripts save each image under
    the dataset's `file_name` (test_SiamLayout_flux_layoutsam_benchmark.py:66), a `.jpg` name
    (the scorer strips '.jpg' from it, score_layoutsam_benchmark.py:42; ContextGen saves
    `{index:04d}.jpg`, sample_bench.py:79), so PIL wrote JPEG with its defaults (quality 75,
    which `quality=75` reproduces byte for byte), and the scorer opened those files.
    None: the image as generated."""
    from PIL import Image

    image = image.convert("RGB")
    if quality is None:
        return image
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")
