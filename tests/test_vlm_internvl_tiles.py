"""InternVL2 tiling follows the model card (issue 8.13).

Reference: the InternVL2-8B model card (huggingface.co/OpenGVLab/InternVL2-8B, README.md,
"Inference with Transformers"; the same functions ship in OpenGVLab/InternVL's chat examples):
`find_closest_aspect_ratio`, `dynamic_preprocess(image, max_num=12, image_size=448,
use_thumbnail=True)` and `build_transform(448)`. Transcribed below, then compared with ours.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from eligen_bench.metrics.vlm import judges as vj


def card_closest(aspect_ratio, target_ratios, width, height, image_size):  # noqa: ANN001, ANN201
    best_ratio_diff = float("inf")
    best_ratio = (1, 1)
    area = width * height
    for ratio in target_ratios:
        ratio_diff = abs(aspect_ratio - ratio[0] / ratio[1])
        if ratio_diff < best_ratio_diff:
            best_ratio_diff = ratio_diff
            best_ratio = ratio
        elif ratio_diff == best_ratio_diff and area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
            best_ratio = ratio
    return best_ratio


def card_dynamic_preprocess(image, min_num=1, max_num=12, image_size=448, use_thumbnail=True):  # noqa: ANN001, ANN201
    w, h = image.size
    ratios = set((i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                 if i * j <= max_num and i * j >= min_num)
    ratios = sorted(ratios, key=lambda x: x[0] * x[1])
    cols, rows = card_closest(w / h, ratios, w, h, image_size)
    tw, th = image_size * cols, image_size * rows
    resized = image.resize((tw, th))
    out = []
    for i in range(cols * rows):
        box = ((i % (tw // image_size)) * image_size, (i // (tw // image_size)) * image_size,
               ((i % (tw // image_size)) + 1) * image_size, ((i // (tw // image_size)) + 1) * image_size)
        out.append(resized.crop(box))
    if use_thumbnail and len(out) != 1:
        out.append(image.resize((image_size, image_size)))
    return out


def card_load_image(image):  # noqa: ANN001, ANN201
    transform = T.Compose([T.Lambda(lambda img: img.convert("RGB") if img.mode != "RGB" else img),
                           T.Resize((448, 448), interpolation=InterpolationMode.BICUBIC), T.ToTensor(),
                           T.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))])
    return torch.stack([transform(tile) for tile in card_dynamic_preprocess(image)])


@pytest.mark.parametrize(("width", "height", "tiles"), [
    (1024, 1024, 10),  # ties (1,1), (2,2), (3,3): the image is large enough for 3x3, + thumbnail
    (448, 448, 1),     # too small for the larger square grids
    (700, 700, 5),     # 2x2 (700^2 > 0.5 x 4 x 448^2) but not 3x3
    (1024, 512, 3),    # 2:1 ties (2,1), (4,2): too small for 4x2, 2x1 + thumbnail
    (2048, 1024, 9),   # large enough for 4x2 + thumbnail
    (300, 90, 4),      # a wide crop: 3x1 + thumbnail
    (120, 500, 5),     # a tall crop
])
def test_tile_count_and_pixels_follow_the_card(width: int, height: int, tiles: int) -> None:
    rng = np.random.default_rng(width * 7 + height)
    image = Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))
    expected = card_load_image(image)
    assert expected.shape[0] == tiles
    ours = vj.internvl_tiles(image)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)


def test_grid_choice_matches_the_card_on_many_sizes() -> None:
    ratios = sorted({(i, j) for n in range(1, 13) for i in range(1, n + 1) for j in range(1, n + 1) if i * j <= 12},
                    key=lambda x: x[0] * x[1])
    for width in range(32, 2100, 61):
        for height in range(32, 2100, 83):
            assert vj.internvl_grid(width, height) == card_closest(width / height, ratios, width, height, 448)


def test_internvl2_identity_names_its_preprocessing() -> None:
    from eligen_bench.metrics.vlm.success import VlmSuccess

    assert VlmSuccess(judge="internvl2").identity()["preprocessing"]["rule"] == "model-card dynamic_preprocess"
    assert "preprocessing" not in VlmSuccess(judge="qwen2vl").identity()
