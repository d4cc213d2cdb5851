"""MIG-Bench's scoring rules (LeyRio/MIG_Bench@063ec45 eval_mig.py) on synthetic inputs, no models.

Expected values are worked out by hand or by an independent transcription of the script's code,
on inputs where a plausible mistake (>= for >, the first token for the best, per-class NMS,
an unweighted average, the detection box instead of the layout box) gives another answer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eligen_bench.errors import InputError
from eligen_bench.metrics.mig_bench import colour, grounding, outcome, protocol, segmenting

SIZE = 512


def bgr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return rgb[2], rgb[1], rgb[0]


def painted(fill_rgb: tuple[int, int, int], *, mask_rgb: dict | None = None) -> np.ndarray:
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    image[:] = bgr(fill_rgb)
    for (y0, y1, x0, x1), rgb in (mask_rgb or {}).items():
        image[y0:y1, x0:x1] = bgr(rgb)
    return image


def square_mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


RED, GREEN, BLUE = (255, 0, 0), (0, 160, 0), (0, 0, 255)
PINK, ORANGE, PURPLE = (255, 105, 180), (255, 165, 0), (128, 0, 128)
BROWN, YELLOW, BLACK, WHITE = (150, 75, 0), (255, 230, 0), (10, 10, 10), (250, 250, 250)


@pytest.mark.parametrize(("rgb", "passes"), [
    (RED, {"red"}), (GREEN, {"green"}), (BLUE, {"blue"}), (BROWN, {"brown"}), (YELLOW, {"yellow"}),
    (BLACK, {"black"}), (WHITE, {"white"}),
    # The table's quirks, by hand: pink is H 165 (red's second range, 159-180), orange H 19
    # (brown's 6-25), purple H 150 (between blue's 128 and red's 159).
    (PINK, {"red"}), (ORANGE, {"brown"}), (PURPLE, set()),
])
def test_hsv_table_on_pure_colours(rgb, passes) -> None:
    image = painted((128, 128, 128), mask_rgb={(100, 200, 100, 200): rgb})
    mask = square_mask(100, 200, 100, 200)
    found = {name for name in protocol.HSV_RANGES
             if colour.colour_passes(*colour.colour_counts(image, mask, name))}
    assert found == passes


def test_exactly_twenty_percent_passes_and_an_empty_mask_fails() -> None:
    # A 10x10 mask: 20 red pixels pass (ratio 0.2 is not < 0.2), 19 fail.
    for red_rows, passes in ((2, True), (1.9, False)):
        image = painted(GREEN)
        red_pixels = int(red_rows * 10)
        flat = image[100:110, 100:110].reshape(-1, 3)
        flat[:red_pixels] = bgr(RED)
        image[100:110, 100:110] = flat.reshape(10, 10, 3)
        inside, area = colour.colour_counts(image, square_mask(100, 110, 100, 110), "red")
        assert (inside, area) == (red_pixels, 100)
        assert colour.colour_passes(inside, area) is passes
    assert colour.colour_counts(painted(RED), np.zeros((SIZE, SIZE), bool), "red") == (0, 0)
    assert colour.colour_passes(0, 0) is False


def test_only_the_mask_counts_and_outside_turns_grey() -> None:
    image = painted(RED, mask_rgb={(0, 50, 0, 50): GREEN})
    mask = square_mask(0, 50, 0, 50)
    assert colour.colour_counts(image, mask, "red") == (0, 2500)
    assert colour.colour_counts(image, mask, "green") == (2500, 2500)
    greyed = colour.grey_outside(image, mask)
    assert (greyed[100, 100] == 127).all() and tuple(greyed[10, 10]) == bgr(GREEN)


def test_instance_labels_as_the_script_splits_them() -> None:
    assert protocol.parse_instance("a red fire hydrant") == protocol.Instance("red", "fire hydrant")
    assert protocol.parse_instance("a red fire hydrant").caption == "fire hydrant."
    assert protocol.parse_instance("an white oven").caption == "oven."
    for bad in ("a pink dog", "a purple car", "a dog", "red dog"):
        with pytest.raises(InputError):
            protocol.parse_instance(bad)


def script_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """eval_mig.py:249-259, transcribed."""
    min_x = np.maximum(pred[:, 0], gt[0])
    max_x = np.minimum(pred[:, 2], gt[2])
    min_y = np.maximum(pred[:, 1], gt[1])
    max_y = np.minimum(pred[:, 3], gt[3])
    iw = np.maximum(max_x - min_x, 0.)
    ih = np.maximum(max_y - min_y, 0.)
    insert_area = iw * ih
    union_area = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1]) + (gt[2] - gt[0]) * (gt[3] - gt[1]) - insert_area
    return float(np.max(insert_area / union_area))


def test_best_iou_is_the_scripts_and_exactly_half_passes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        xy = rng.uniform(0, 400, size=(7, 2))
        pred = np.concatenate([xy, xy + rng.uniform(5, 200, size=(7, 2))], axis=1).astype(np.float32)
        gt = np.array(sorted(rng.uniform(0, 1, 2)) + sorted(rng.uniform(0, 1, 2)))[[0, 2, 1, 3]] * SIZE
        assert outcome.best_iou(pred, gt) == script_iou(pred, gt)
    gt = np.array([0.0, 0.0, 0.25, 0.25]) * SIZE
    half = np.array([[300, 300, 400, 400], [0, 0, 128, 64]], dtype=np.float32)
    assert outcome.best_iou(half, gt) == 0.5  # the highest IoU decides, not the first or best-scored box
    assert outcome.best_iou(np.zeros((0, 4), np.float32), gt) is None


def test_the_instance_rule() -> None:
    assert outcome.position(None) == outcome.Outcome(None, False, miou=0.0)
    low = outcome.position(0.4999)
    assert (low.position_ok, low.miou, low.success) == (False, 0.4999, False)  # raw IoU kept
    half = outcome.position(0.5)
    assert half.position_ok
    passed = outcome.with_colour(half, 20, 100)
    assert (passed.success, passed.miou, passed.colour_ratio) == (True, 0.5, 0.2)
    wrong = outcome.with_colour(outcome.position(0.9), 19, 100)
    assert (wrong.position_ok, wrong.colour_ok, wrong.success, wrong.miou) == (True, False, False, 0.0)
    empty = outcome.with_colour(outcome.position(0.9), 0, 0)
    assert (empty.success, empty.miou) == (False, 0.0)


def test_detector_input_size_as_groundingdino_resizes() -> None:
    assert grounding.resized_size(512, 512) == (800, 800)
    # Long side capped: short side round(1333 * 512 / 1024) = round(666.5) = 666 (Python rounds half
    # to even), long side int(666 * 1024 / 512) = 1332.
    assert grounding.resized_size(512, 1024) == (666, 1332)
    assert grounding.resized_size(1000, 800) == (1000, 800)
    assert segmenting.resized_size(512, 512, 1024) == (1024, 1024)
    assert segmenting.resized_size(300, 512, 1024) == (600, 1024)


def script_post_process(logits: torch.Tensor, boxes: torch.Tensor, h: int, w: int, box_t: float, nms_t: float):
    """util/inference.py:69-74, :85, :232-235 and eval_mig.py:238-246, transcribed (numpy where the
    script uses it)."""
    import torchvision

    prediction_logits = logits.cpu().sigmoid()
    mask = prediction_logits.max(dim=1)[0] > box_t
    kept_logits, kept_boxes = prediction_logits[mask], boxes.cpu()[mask]
    scaled = kept_boxes * torch.Tensor([w, h, w, h])
    cx, cy, bw, bh = scaled.unbind(-1)
    xyxy = torch.stack([cx - 0.5 * bw, cy - 0.5 * bh, cx + 0.5 * bw, cy + 0.5 * bh], dim=-1).numpy()
    confidence = kept_logits.max(dim=1)[0].numpy()
    index = torchvision.ops.nms(torch.from_numpy(xyxy), torch.from_numpy(confidence), nms_t).numpy().tolist()
    return xyxy[index], confidence[index]


def test_detector_post_processing_is_the_scripts() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 256, generator=generator) * 2 - 3
    logits[:, 12:] = float("-inf")  # padding beyond the caption, as the model masks it
    logits[3, 0], logits[3, 5] = -9.0, 2.0  # kept for its best token, not its first
    boxes = torch.rand(40, 4, generator=generator) * 0.5 + 0.2
    boxes[7], boxes[8] = torch.tensor([0.5, 0.5, 0.2, 0.2]), torch.tensor([0.5, 0.5, 0.2, 0.19])  # IoU 0.95
    logits[7, 1], logits[8, 1] = 3.0, 2.5
    kept, scores = grounding.keep_boxes(logits, boxes, SIZE, SIZE, 0.25)
    found = grounding.suppress(kept, scores, 0.8)
    want_boxes, want_scores = script_post_process(logits, boxes, SIZE, SIZE, 0.25, 0.8)
    assert len(found.boxes) == len(want_boxes) > 3
    np.testing.assert_allclose(found.boxes, want_boxes, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(found.scores, want_scores)
    assert not any(np.allclose(b, [204.8, 207.36, 307.2, 304.64], atol=0.1) for b in found.boxes)  # box 8 suppressed
