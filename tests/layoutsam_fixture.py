"""A few LayoutSAM-Eval records in the hub dataset's own file format, written by the tests.

Schema as the dataset card lists it (HuiZhang0812/LayoutSAM-eval@930abfa: README.md): image
(struct of bytes and path, as `datasets` stores an Image feature), image_id int64,
global_caption, detail_region_captions, region_captions and bbox_list as strings (Python list
literals), width and height int32, file_name. Shards are `data/test-NNNNN-of-NNNNN.parquet`.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

RECORDS = [
    {"image_id": 11, "file_name": "sa_11.jpg", "width": 1500, "height": 1000,
     "global_caption": "A red bus on a rainy street beside a tall lamp post.",
     "boxes": [[150, 100, 900, 700], [1000, 0, 1100, 1000]],
     "regions": ["a red double-decker bus", "a tall street/lamp post"],
     "details": ["a bright red double-decker bus with shiny/wet windows", "a thin black metal lamp post"]},
    {"image_id": 12, "file_name": "sa_12.jpg", "width": 800, "height": 1200,
     "global_caption": "Two cats on a sofa.",
     "boxes": [[0, 600, 400, 1200], [400, 600, 800, 1199.6]],
     "regions": ["a grey cat", "an orange cat"],
     "details": ["a fluffy grey cat\nlying down", "an orange tabby cat with green eyes"]},
    {"image_id": 13, "file_name": "sa_13.jpg", "width": 1024, "height": 768,
     "global_caption": "A wooden table with a vase.",
     "boxes": [[3, 5, 1021, 760]],
     "regions": ["a wooden table"],
     "details": ["a rectangular oak table with a rough texture"]},
]
"""Three records; record 1 has a '/' in two captions, record 2 a line break and a box edge that
rounds to the image border."""


def png_bytes(width: int = 8, height: int = 8) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, format="PNG")
    return buffer.getvalue()


def table(records: list[dict]):
    import pyarrow as pa

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([
        ("image", image), ("image_id", pa.int64()), ("global_caption", pa.string()),
        ("detail_region_captions", pa.string()), ("region_captions", pa.string()), ("bbox_list", pa.string()),
        ("width", pa.int32()), ("height", pa.int32()), ("file_name", pa.string()),
    ])
    rows = [{"image": {"bytes": png_bytes(), "path": None}, "image_id": r["image_id"],
             "global_caption": r["global_caption"], "detail_region_captions": repr(r["details"]),
             "region_captions": repr(r["regions"]), "bbox_list": repr(r["boxes"]), "width": r["width"],
             "height": r["height"], "file_name": r["file_name"]} for r in records]
    return pa.Table.from_pylist(rows, schema=schema)


def write_layoutsam_fixture(root: Path, records: list[dict] | None = None, shards: int = 2) -> Path:
    """`root/data/test-0000k-of-0000n.parquet` holding `records` split over `shards` files."""
    import pyarrow.parquet as pq

    records = RECORDS if records is None else records
    data = Path(root) / "data"
    data.mkdir(parents=True, exist_ok=True)
    per = -(-len(records) // shards)
    for k in range(shards):
        pq.write_table(table(records[k * per:(k + 1) * per]), data / f"test-{k:05d}-of-{shards:05d}.parquet")
    return Path(root)


ANSWERS = ("Yes", "No", "yes, it is.", "YES", "No, only the eyes are visible.", "Nope", "Yes.", "no")
"""Answers chosen to tell the substring test from a plausible parser: 'YES' counts no, and the
'eyes' in a no counts yes."""


class HashJudge:
    """Test double of the judge: a fixed answer per (crop pixels, question); records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def reply(self, crop, question: str) -> str:
        import numpy as np

        pixels = np.asarray(crop.convert("RGB"))
        digest = hashlib.sha256(pixels.tobytes() + str(pixels.shape).encode() + question.encode()).digest()
        self.calls.append((hashlib.sha256(pixels.tobytes()).hexdigest()[:12], question))
        return ANSWERS[digest[0] % len(ANSWERS)]

    def answer(self, images, questions) -> list[str]:
        return [self.reply(image, q) for image, q in zip(images, questions, strict=True)]
