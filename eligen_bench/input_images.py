"""Checks on a layout's input image before anything reads its pixels.

Only regular files are opened (a FIFO or a device would block or never end), and the size the
image's header claims is bounded before any decoding, so a small file that claims a huge
canvas (a decompression bomb) is refused instead of filling memory.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from eligen_bench.errors import InputError
from eligen_bench.layout import MAX_SIDE

MAX_INPUT_SIDE = MAX_SIDE
"""Largest width or height of an input image, in pixels (the largest layout side)."""


def check_input_image(path: Path, *, where: str) -> None:
    """InputError (naming `where` and the field init_image) unless `path` is a readable image within bounds."""
    from PIL import Image

    if not path.exists():
        raise InputError(f"cannot read input image {str(path)!r} (no such file)", where=where, field="init_image")
    if not path.is_file():
        raise InputError(f"cannot read input image {str(path)!r} (not a regular file)", where=where, field="init_image")
    try:
        with warnings.catch_warnings():
            # PIL only warns below twice its own pixel limit; the side bound below decides instead.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size  # read from the header; nothing decoded yet
                if 1 <= width <= MAX_INPUT_SIDE and 1 <= height <= MAX_INPUT_SIDE:
                    image.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"input image {str(path)!r} claims more pixels than PIL allows; each side may be at most "
                         f"{MAX_INPUT_SIDE}", where=where, field="init_image") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for truncated or not-an-image files
        raise InputError(f"cannot read input image {str(path)!r} ({type(exc).__name__})",
                         where=where, field="init_image") from None
    if not (1 <= width <= MAX_INPUT_SIDE and 1 <= height <= MAX_INPUT_SIDE):
        raise InputError(f"input image {str(path)!r} claims {width}x{height} pixels; each side may be at most "
                         f"{MAX_INPUT_SIDE}", where=where, field="init_image")
