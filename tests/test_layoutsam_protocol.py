"""LayoutSAM-Eval scoring against an independent transcription of its reference scorer.

The judge here is a test double (`layoutsam_fixture.HashJudge`: an answer picked by a hash of the crop's pixels and
the question), so the parity is about everything around the model: prompt text, '/' stripping,
crop arithmetic, the JPEG the reference read, the substring yes test, the spatial gate and the
aggregation. The model call itself is covered by test_layoutsam_judge.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eligen_bench.api.metric import ModelCache, ScoreItem
from eligen_bench.errors import InputError
from eligen_bench.hashing import file_sha256
from eligen_bench.layout import Entity, Layout
from eligen_bench.metrics.layoutsam import protocol as pr
from eligen_bench.metrics.layoutsam.scores import (
    LayoutSamColor,
    LayoutSamShape,
    LayoutSamSpatial,
    LayoutSamTexture,
)

import layoutsam_script as script
from layoutsam_fixture import HashJudge

METRICS = (LayoutSamSpatial, LayoutSamColor, LayoutSamTexture, LayoutSamShape)

LAYOUTS = [
    Layout("layoutsam-0000", "a street", (
        Entity("a red/blue bus", (0.1, 0.067, 0.6, 0.7), description="a red bus with blue/white stripes"),
        Entity("a lamp post", (0.667, 0.0, 0.733, 1.0), description="a thin black metal lamp post"),
        Entity("a dog", (0.005, 0.333, 0.3, 0.999), description="a small brown dog with a smooth coat"),
    ), width=1500, height=1000),
    Layout("layoutsam-0001", "two cats", (
        Entity("a grey cat", (0.0, 0.5, 0.5, 1.0), description="a fluffy grey cat lying down"),
        Entity("an orange cat", (0.5, 0.5, 1.0, 1.0), description="an orange tabby with green eyes"),
        Entity("a cushion", (0.123, 0.077, 0.871, 0.459), description="a square red velvet cushion"),
    ), width=800, height=1200),
]


def noise_png(path: Path, size: tuple[int, int], seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    # Smooth blocks on top of the noise, so crops differ in content, not only in texture.
    pixels[: size[1] // 2, : size[0] // 3] = (200, 30, 40)
    Image.fromarray(pixels).save(path)
    return path


def items_for(tmp_path: Path, sizes: list[tuple[int, int]]) -> list[ScoreItem]:
    items = []
    for k, (layout, size) in enumerate(zip(LAYOUTS, sizes, strict=True)):
        path = noise_png(tmp_path / f"{layout.id}_0.png", size, seed=k)
        items.append(ScoreItem("g", layout, 0, k, path, file_sha256(path)))
    return items


def ours(items: list[ScoreItem], judge: HashJudge, **options) -> dict[str, list]:
    cache = ModelCache()  # one run: the four metrics share the answers memo
    return {m.aspect: m(model=judge, cache=cache, **options).score(items) for m in METRICS}


def reference(items: list[ScoreItem], judge: HashJudge, resolution: int, tmp_path: Path) -> dict[str, dict]:
    """The transcribed script on the same images, saved as the generation scripts save them."""
    stats = {}
    for item in items:
        jpg = tmp_path / f"{item.layout.id}.jpg"
        Image.open(item.image_path).convert("RGB").save(jpg)  # image.save(os.path.join(..., filename))
        crops = tmp_path / f"crops-{item.layout.id}"
        crops.mkdir(exist_ok=True)
        stats[item.layout.id + ".jpg"] = script.score_image(
            str(jpg), [list(e.bbox) for e in item.layout.entities], [e.prompt for e in item.layout.entities],
            [e.description for e in item.layout.entities], judge.reply, resolution, str(crops))
    return stats


@pytest.mark.parametrize("sizes, resolution", [
    ([(512, 512), (512, 512)], 512),     # the script's FLUX setting on FLUX-size images
    ([(1024, 1024), (512, 512)], 512),   # an SD3-size image cut at 512: the script's own mistake, reproduced
    ([(768, 768), (1024, 1024)], 1024),  # the SD3 setting, part of the boxes beyond a 768 image
])
def test_fixed_crop_reproduces_the_script(tmp_path, sizes, resolution) -> None:
    items = items_for(tmp_path, sizes)
    mine, theirs = HashJudge(), HashJudge()
    rows = ours(items, mine, crop="fixed", crop_resolution=resolution)
    stats = reference(items, theirs, resolution, tmp_path)
    for aspect, found in rows.items():
        by_image = {f"{lid}.jpg": sum(r.value for r in found if r.layout_id == lid) for lid in (x.layout.id for x in items)}
        assert by_image == {name: s[f"score_{aspect}"] for name, s in stats.items()}, aspect
        assert sum(r.value for r in found) / len(found) == pytest.approx(script.aggregate(stats)[aspect], abs=0)
        assert len(found) == sum(s["bbox_count"] for s in stats.values())
    # Same questions about the same crops, each asked once, as the script asks them.
    assert Counter(mine.calls) == Counter(theirs.calls)
    spatial_yes = sum(s["score_spatial"] for s in stats.values())
    assert len(mine.calls) == len(rows["spatial"]) + 3 * spatial_yes
    assert 0 < spatial_yes < len(rows["spatial"])  # the gate is exercised both ways


def test_image_size_crop_follows_contextgen_and_differs_from_a_plain_product() -> None:
    # 0.005 is 0.004999999888 in float32: x 600 gives 2.99999993 -> 2 (ContextGen, float32 boxes);
    # the double 0.005 x 600 = 3.0 -> 3 would be a plausible mistake.
    box = (0.005, 0.333, 0.505, 0.999)
    assert pr.crop_box(box, (600, 600)) == script.contextgen_box(list(box), 600) == (2, 199, 302, 599)
    assert int(0.005 * 600) == 3
    for width in (512, 768, 1000, 1024, 1337):
        assert pr.crop_box(box, (width, width)) == script.contextgen_box(list(box), width)
    # Non-square: x by the width, y by the height (ContextGen uses the width for both).
    assert pr.crop_box((0.25, 0.5, 0.75, 1.0), (640, 480)) == (160, 240, 480, 480)


def test_fixed_crop_is_float32_arithmetic() -> None:
    import torch

    for value in (0.005, 0.333, 0.999, 0.1, 0.7, 0.123):
        for resolution in (512, 768, 1000, 1024):
            expected = int(torch.tensor(value, dtype=torch.float32) * resolution)
            assert pr.crop_box((value, value, value, value), (1, 1), "fixed", resolution)[0] == expected


def test_questions_and_yes_test_match_the_script(tmp_path) -> None:
    answers = ["Yes", "yes", "YES", "No", "no", "", "Yes, it is", "The eyes are closed", "Yesterday", "nope"]
    assert [pr.is_yes(a) for a in answers] == [("Yes" in a or "yes" in a) for a in answers]
    assert [pr.is_yes(a) for a in answers] == [True, True, False, False, False, False, True, True, True, False]
    assert pr.strip_slashes("a street/lamp post/") == "a streetlamp post"
    recorded: list[str] = []
    image = tmp_path / "x.jpg"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(image)
    script.score_image(str(image), [[0.1, 0.1, 0.9, 0.9]], ["a red/blue bus"], ["a bus, red/blue"],
                       lambda crop, q: recorded.append(q) or "Yes", 64, str(tmp_path))
    assert recorded == [pr.spatial_question("a redblue bus")] + [
        pr.attribute_question(aspect, "a redblue bus", "a bus, redblue") for aspect in ("color", "texture", "shape")]


def test_jpeg_round_trip_is_the_saved_file(tmp_path) -> None:
    image = Image.open(noise_png(tmp_path / "a.png", (96, 64), seed=3))
    image.convert("RGB").save(tmp_path / "a.jpg")
    assert np.array_equal(np.asarray(pr.as_saved_jpeg(image, 75)), np.asarray(Image.open(tmp_path / "a.jpg")))
    assert np.array_equal(np.asarray(pr.as_saved_jpeg(image, None)), np.asarray(image.convert("RGB")))


def test_empty_crops_score_zero_without_asking(tmp_path) -> None:
    layout = Layout("thin", "a wire", (Entity("a wire", (0.5, 0.1, 0.5004, 0.9), description="a thin wire"),), 64, 64)
    path = noise_png(tmp_path / "t.png", (64, 64), seed=1)
    judge = HashJudge()
    rows = LayoutSamColor(model=judge).score([ScoreItem("g", layout, 0, 0, path, "")])
    assert [r.value for r in rows] == [0.0] and not judge.calls and "empty crop" in rows[0].detail["note"]


def test_attribute_scores_need_descriptions(tmp_path) -> None:
    layout = Layout("bare", "a cat", (Entity("a cat", (0.1, 0.1, 0.9, 0.9)),), 64, 64)
    path = noise_png(tmp_path / "b.png", (64, 64), seed=2)
    item = ScoreItem("g", layout, 0, 0, path, "")
    assert len(LayoutSamSpatial(model=HashJudge()).score([item])) == 1
    with pytest.raises(InputError, match="detailed description"):
        LayoutSamShape(model=HashJudge()).score([item])


@pytest.mark.parametrize("options, field", [
    ({"crop": "fixed"}, "crop_resolution"),
    ({"crop_resolution": 512}, "crop_resolution"),
    ({"crop": "box"}, "crop"),
    ({"decoding": "nucleus"}, "decoding"),
    ({"backend": "llama"}, "backend"),
    ({"jpeg_quality": 0}, "jpeg_quality"),
    ({"dtype": "int8"}, "dtype"),
])
def test_bad_options_are_one_clear_error(options, field) -> None:
    with pytest.raises(InputError) as info:
        LayoutSamTexture(**options)
    assert field in str(info.value)


def test_identity_records_what_decides_the_answers() -> None:
    spatial, shape = LayoutSamSpatial(), LayoutSamShape(decoding="greedy")
    assert spatial.identity()["decoding_settings"]["temperature"] == 0.7
    assert "{detail_description}" in shape.identity()["questions"]["shape"]
    assert spatial.key != LayoutSamSpatial(decoding="greedy").key != LayoutSamSpatial(jpeg_quality=None).key
    assert spatial.model_ids() == {"judge": "openbmb/MiniCPM-V-2_6",
                                   "judge_revision": "3f7a8da1b7a8b928b5ee229fae33cf43fd64cf31"}
