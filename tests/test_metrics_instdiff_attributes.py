"""InstDiff-Bench attribute accuracy and regional CLIP: the crop, the classification on synthetic
crops (an injected colour-reading CLIP stand-in), parity with a transcription of
frank-xwang/InstanceDiffusion@722900e eval/eval_attribute_binding.py on a random open_clip model,
and the per-image-then-over-images aggregation."""

from __future__ import annotations

import io
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from eligen_bench.api.metric import ModelCache, ScoreItem
from eligen_bench.errors import InputError
from eligen_bench.hashing import file_sha256
from eligen_bench.layout import Entity, Layout
from eligen_bench.metrics.clip.scores import ClipBundle
from eligen_bench.metrics.instdiff_bench.attributes import (
    InstDiffAttributeAccuracy,
    InstDiffRegionalClip,
    reference_crop,
)
from eligen_bench.metrics.instdiff_bench.images import as_scored_pil, jpeg_bytes
from eligen_bench.suites.instdiff_bench import COLORS, TEXTURES

RGB = {"black": (0, 0, 0), "white": (255, 255, 255), "red": (255, 0, 0), "green": (0, 255, 0),
       "yellow": (255, 255, 0), "blue": (0, 0, 255), "pink": (255, 105, 180), "purple": (128, 0, 128)}


class ColourClip(torch.nn.Module):
    """A CLIP stand-in that reads colour: an image embeds as minus its mean colour's distance to
    each of the 8 colours, a text as the one-hot of the first colour word it names."""

    def __init__(self) -> None:
        super().__init__()
        self.visual = SimpleNamespace(image_size=8, output_dim=8)
        self.table = torch.tensor([RGB[c] for c in COLORS], dtype=torch.float32) / 255.0

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        mean = pixels.mean(dim=(2, 3))
        return -torch.cdist(mean, self.table) - 0.05  # never exactly zero

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(tokens[:, 0], len(COLORS)).float()


def colour_bundle() -> ClipBundle:
    def preprocess(image):
        array = np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1)

    def tokenizer(texts):
        return torch.tensor([[next(i for i, c in enumerate(COLORS) if c in t.split(" "))] for t in texts])

    return ClipBundle(ColourClip(), preprocess, tokenizer, ("colour-clip",))


def _png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def _item(layout: Layout, path: Path) -> ScoreItem:
    return ScoreItem("g", layout, 0, 0, path, file_sha256(path))


@pytest.fixture()
def quadrants(tmp_path: Path) -> Path:
    """A 64x64 image: red top-left, blue top-right, green bottom-left, white bottom-right."""
    array = np.zeros((64, 64, 3))
    array[:32, :32] = RGB["red"]
    array[:32, 32:] = RGB["blue"]
    array[32:, :32] = RGB["green"]
    array[32:, 32:] = RGB["white"]
    return _png(tmp_path / "quadrants.png", array)


def test_crop_rounds_like_pil_and_skips_empty_crops() -> None:
    from PIL import Image

    image = Image.new("RGB", (8, 8))
    # Image.crop rounds its float box half to even: x 2.5 -> 2, 3.5 -> 4; y 0.5 -> 0, 1.5 -> 2
    # (rounding half up would give 1 x 1)
    assert reference_crop(image, (2.5 / 8, 0.5 / 8, 3.5 / 8, 1.5 / 8)).size == (2, 2)
    # x 3.25 -> 3, 5.25 -> 5: not the enclosing pixels (3 wide)
    assert reference_crop(image, (3.25 / 8, 0.0, 5.25 / 8, 1.0)).size == (2, 8)
    assert reference_crop(image, (0.5, 0.5, 4.4 / 8, 1.0)) is None  # 4 and 4.4 -> width 0
    assert reference_crop(image, (0.0, 0.0, 1.0, 1.0)).size == (8, 8)


def test_classification_on_synthetic_crops(quadrants: Path) -> None:
    layout = Layout("q", "four squares", (
        Entity("red dog", (0.0, 0.0, 0.5, 0.5)),  # right
        Entity("green cat", (0.5, 0.0, 1.0, 0.5)),  # wrong: the crop is blue
        Entity("green fire hydrant", (0.0, 0.5, 0.5, 1.0)),  # right
        Entity("white bus", (0.5, 0.5, 1.0, 1.0)),  # right
    ), width=64, height=64)
    cache = ModelCache()
    acc = InstDiffAttributeAccuracy(model=colour_bundle(), cache=cache, device="cpu", jpeg_quality=0)
    clip = InstDiffRegionalClip(model=colour_bundle(), cache=cache, device="cpu", jpeg_quality=0)
    [acc_row] = acc.score([_item(layout, quadrants)])
    [clip_row] = clip.score([_item(layout, quadrants)])
    assert acc_row.value == pytest.approx(0.75) and acc_row.entity_index == -1
    predicted = [entry[1] for entry in acc_row.detail["instances"]]
    assert predicted == ["red", "blue", "green", "white"]
    # the cosine with the caption's own colour: distances 0 except the blue crop vs "green"
    table = np.array([RGB[c] for c in COLORS]) / 255.0
    expected = []
    for rgb, colour in ((RGB["red"], "red"), (RGB["blue"], "green"), (RGB["green"], "green"),
                        (RGB["white"], "white")):
        embed = -np.linalg.norm(table - np.array(rgb) / 255.0, axis=1) - 0.05
        expected.append(embed[COLORS.index(colour)] / np.linalg.norm(embed))
    assert clip_row.value == pytest.approx(np.mean(expected), abs=1e-6)
    assert [e[0] for e in clip_row.detail["instances"]] == pytest.approx(expected, abs=1e-5)


def test_per_image_then_over_images(tmp_path: Path, quadrants: Path) -> None:
    """Image A: 1 instance, right. Image B: 3 instances, all wrong. Per image then over images
    gives (1 + 0) / 2 = 0.5; averaging the 4 boxes would give 0.25. Image C has only an empty
    crop: excluded, not a zero."""
    one = Layout("a", "p", (Entity("red dog", (0.0, 0.0, 0.5, 0.5)),), 64, 64)
    three = Layout("b", "p", tuple(Entity(f"{c} cat", (0.5, 0.5, 1.0, 1.0)) for c in ("black", "pink", "purple")),
                   64, 64)
    empty = Layout("c", "p", (Entity("blue cup", (0.5, 0.5, 0.505, 0.6)),), 64, 64)
    metric = InstDiffAttributeAccuracy(model=colour_bundle(), device="cpu", jpeg_quality=0)
    metric.update([_item(one, quadrants), _item(three, quadrants), _item(empty, quadrants)])
    rows = {r.layout_id: r for r in metric._rows}
    assert rows["a"].value == 1.0 and rows["b"].value == 0.0
    assert rows["c"].status == "excluded" and math.isnan(rows["c"].value)
    assert rows["c"].detail["instances"] == [None]
    assert metric.compute() == pytest.approx(0.5)  # not 0.25


def test_texture_captions_take_the_texture_list(quadrants: Path) -> None:
    layout = Layout("t", "p", (Entity("wooden chair", (0.0, 0.0, 0.5, 0.5)),), 64, 64)
    bundle = colour_bundle()
    # the stand-in tokenizer reads colours only; map each texture to a colour slot
    bundle = ClipBundle(bundle.model, bundle.preprocess,
                        lambda texts: torch.tensor([[next(i for i, w in enumerate(TEXTURES) if w in t.split(" "))]
                                                    for t in texts]), ("texture-clip",))
    [r] = InstDiffAttributeAccuracy(model=bundle, device="cpu", jpeg_quality=0).score([_item(layout, quadrants)])
    assert r.detail["instances"][0][1:] == ["metallic", "wooden"]  # slot 2 = red crop -> texture 2
    with pytest.raises(InputError, match="does not start with"):
        InstDiffAttributeAccuracy(model=bundle, device="cpu").score(
            [_item(Layout("x", "p", (Entity("a chair", (0, 0, 1, 1)),), 64, 64), quadrants)])
    with pytest.raises(InputError, match="color list"):
        InstDiffAttributeAccuracy(model=bundle, device="cpu", attributes="color").score([_item(layout, quadrants)])
    with pytest.raises(InputError, match="attributes"):
        InstDiffAttributeAccuracy(attributes="shape")
    with pytest.raises(InputError, match="jpeg_quality"):
        InstDiffRegionalClip(jpeg_quality=101)


def test_jpeg_is_what_pil_writes_for_a_jpg_name(quadrants: Path, tmp_path: Path) -> None:
    from PIL import Image

    image = Image.open(quadrants).convert("RGB")
    image.save(tmp_path / "000000000139.jpg")  # eval_local.py:98, default settings
    assert jpeg_bytes(image, 75) == (tmp_path / "000000000139.jpg").read_bytes()
    scored = np.asarray(as_scored_pil(image, 75), dtype=int)
    assert scored.shape == (64, 64, 3) and np.abs(scored - np.asarray(image, dtype=int)).max() > 0


def reference_scores(model, preprocess, tokenizer, image_path: Path, phrases, locations, vocabulary):
    """eval/eval_attribute_binding.py:19-60 and 175-208 for one image, on CPU, transcribed."""
    from PIL import Image

    label_prompts = [f"a {a} object" for a in vocabulary]
    label_prompts = [tokenizer(p) for p in label_prompts]
    label_prompts_feats = [model.encode_text(p) for p in label_prompts]
    label_prompts_feats = [x / torch.linalg.norm(x, axis=-1, keepdims=True) for x in label_prompts_feats]
    label_prompts_feats = torch.stack(label_prompts_feats)
    image = Image.open(image_path).convert("RGB")
    crops = [image.crop((x0 * image.width, y0 * image.height, x1 * image.width, y1 * image.height))
             for x0, y0, x1, y1 in locations]
    scores, accs = [], []
    for text, crop in zip(phrases, crops, strict=True):
        try:
            with torch.no_grad():
                txt = model.encode_text(tokenizer(text))
                img = model.encode_image(preprocess(crop).unsqueeze(0))
                img, txt = [x / torch.linalg.norm(x, axis=-1, keepdims=True) for x in (img, txt)]
                score = (img * txt).sum(axis=-1).numpy().item()
                gt_idx = list(vocabulary).index(text.split(" ")[0])
                similarity = (img * label_prompts_feats).sum(axis=-1).numpy()
                acc = 1 if np.argmax(similarity) == gt_idx else 0
            scores.append(score)
            accs.append(acc)
        except Exception:
            continue
    return np.mean(scores), np.mean(accs), scores


def test_parity_with_the_reference_script_on_random_open_clip(tmp_path: Path) -> None:
    """Random ViT-B-32 (no download); the reference's unbatched, unmemoised path vs ours."""
    from PIL import Image

    rng = np.random.default_rng(3)
    array = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    array[:48, :64] = (200, 30, 40)
    png = _png(tmp_path / "gen.png", array)
    jpg = tmp_path / "000000000285.jpg"
    Image.open(png).convert("RGB").save(jpg)  # what the reference reads
    phrases = ["red bear", "blue cup", "pink dog", "black cat"]
    boxes = [(0.0, 0.0, 0.5, 0.5), (0.31, 0.2, 0.9, 0.77), (0.5, 0.5, 0.503, 0.9), (0.1, 0.6, 0.3, 0.99)]
    layout = Layout("coco-285", "p", tuple(Entity(p, b) for p, b in zip(phrases, boxes, strict=True)), 128, 96)
    acc = InstDiffAttributeAccuracy(profile="tiny", device="cpu")
    clip = InstDiffRegionalClip(profile="tiny", device="cpu", cache=acc.cache)
    [acc_row] = acc.score([_item(layout, png)])
    [clip_row] = clip.score([_item(layout, png)])
    bundle = acc.model
    with torch.no_grad():
        ref_clip, ref_acc, ref_scores = reference_scores(bundle.model, bundle.preprocess, bundle.tokenizer,
                                                         jpg, phrases, boxes, COLORS)
    assert len(ref_scores) == 3 and clip_row.detail["instances"][2] is None  # the 1-pixel-wide box rounds to 0
    assert clip_row.value == pytest.approx(ref_clip, abs=2e-6)
    assert acc_row.value == pytest.approx(ref_acc, abs=0)
    assert acc_row.detail["scored"] == 3
    assert acc.identity()["models"]["clip"] == "open_clip:ViT-B-32/random-seed0"
    full = InstDiffAttributeAccuracy().identity()
    assert full["models"]["clip"] == "open_clip:ViT-L-14/laion2b_s32b_b82k" and full["models"]["clip_activation"] == "gelu"
    assert full["options"]["jpeg_quality"] == 75


def test_jpeg_of_a_saved_buffer_round_trips() -> None:
    from PIL import Image

    image = Image.new("RGB", (16, 16), (10, 200, 30))
    with Image.open(io.BytesIO(jpeg_bytes(image, 75))) as decoded:
        assert decoded.format == "JPEG" and decoded.size == (16, 16)


@pytest.mark.weights
def test_real_weights_read_solid_colours(tmp_path: Path) -> None:
    """ViT-L-14 laion2b_s32b_b82k from the hub: flat colour patches are classified as their colour."""
    colours = ("red", "green", "blue", "yellow", "white", "black")
    array = np.zeros((128, 128 * len(colours), 3))
    for k, colour in enumerate(colours):
        array[:, 128 * k : 128 * (k + 1)] = RGB[colour]
    path = _png(tmp_path / "patches.png", array)
    n = len(colours)
    layout = Layout("p", "p", tuple(Entity(f"{c} object", (k / n, 0.0, (k + 1) / n, 1.0)) for k, c in enumerate(colours)),
                    128 * n, 128)
    [r] = InstDiffAttributeAccuracy(device="cpu").score([_item(layout, path)])
    assert [e[1] for e in r.detail["instances"]] == list(colours)
    assert r.value == 1.0
