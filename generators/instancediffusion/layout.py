"""A layout as InstanceDiffusion's grounding input: 30 padded slots of boxes, points, polygons, masks.

Follows the reference's evaluation input (frank-xwang/InstanceDiffusion@722900e, eval_local.py
and utils/input.py `prepare_batch`, `prepare_instance_meta`, `prepare_scribble_and_instmask`):
- boxes as normalised [x0, y0, x1, y1] (our layouts already hold them in that order);
- one point per instance, the box centre (`get_point_from_box`);
- for a mask, 256 polygon points (`sample_sparse_points_from_mask` in dataset/decode_item.py:
  128 taken evenly along the mask's contours, 128 inside it, all sorted by their distance to the
  origin), divided by the canvas width and height and clipped at 1 (`convert_points`), and the
  mask itself resized to 512x512 with nearest sampling (`segs`);
- used slots first, in entity order, then zero slots (slot flag 0) up to 30;
- for the multi-instance sampler, one input per instance holding that instance alone in slot 0,
  with its phrase as the prompt (`prepare_instance_meta`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eligen_bench.layout import Layout

MAX_INSTANCES = 30
N_POLYGON_POINTS = 256
SEG_SIZE = 512
"""Masks enter as 512x512 (`binary_mask.resize((512, 512), NEAREST)`, utils/input.py@722900e)."""


@dataclass
class GroundingArrays:
    """One grounding input, padded to 30 slots (numpy; the generator moves it to torch)."""

    phrases: list[str]
    boxes: np.ndarray      # (30, 4) float32
    slots: np.ndarray      # (30,) float32, 1 for a used slot
    points: np.ndarray     # (30, 2) float32
    polygons: np.ndarray   # (30, 512) float32, zeros without a mask
    segs: np.ndarray | None  # (30, 512, 512) float32, None when the layout has no masks


def layout_grounding(layout: Layout, use_masks: bool) -> GroundingArrays:
    """The full-layout input: every entity in its own slot, in order."""
    masks = [entity_mask(layout, i) for i in range(len(layout.entities))] if use_masks else []
    return _pack([e.prompt for e in layout.entities], [e.bbox for e in layout.entities], masks, use_masks,
                  layout.width, layout.height)


def instance_grounding(layout: Layout, index: int, use_masks: bool) -> GroundingArrays:
    """The input of one instance alone (slot 0), for the multi-instance sampler."""
    entity = layout.entities[index]
    masks = [entity_mask(layout, index)] if use_masks else []
    return _pack([entity.prompt], [entity.bbox], masks, use_masks, layout.width, layout.height)


def entity_mask(layout: Layout, index: int) -> np.ndarray:
    """The entity's mask (uint8, layout size); an entity without one in a masked layout takes its box."""
    region = layout.entities[index].region(layout.height, layout.width)
    return region.astype(np.uint8)


def box_centres(boxes: np.ndarray) -> np.ndarray:
    """(x0 + x1) / 2, (y0 + y1) / 2 per box (`get_point_from_box`, eval_local.py@722900e)."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2.0


def _pack(phrases: list[str], boxes: list, masks: list[np.ndarray], use_masks: bool,
          width: int, height: int) -> GroundingArrays:
    n = len(phrases)
    if n > MAX_INSTANCES:
        raise ValueError(f"{n} instances, at most {MAX_INSTANCES}")
    out_boxes = np.zeros((MAX_INSTANCES, 4), np.float32)
    slots = np.zeros(MAX_INSTANCES, np.float32)
    points = np.zeros((MAX_INSTANCES, 2), np.float32)
    polygons = np.zeros((MAX_INSTANCES, N_POLYGON_POINTS * 2), np.float32)
    segs = np.zeros((MAX_INSTANCES, SEG_SIZE, SEG_SIZE), np.float32) if use_masks else None
    if n:
        out_boxes[:n] = np.asarray(boxes, np.float32)
        slots[:n] = 1.0
        points[:n] = box_centres(out_boxes[:n])
    for i, mask in enumerate(masks):
        sampled = sample_sparse_points(mask, N_POLYGON_POINTS)
        if sampled is not None:
            polygons[i] = normalise_points(sampled, width, height)
        segs[i] = resize_nearest(mask, SEG_SIZE)
    return GroundingArrays(phrases, out_boxes, slots, points, polygons, segs)


def normalise_points(flat_xy: list[float], width: int, height: int) -> np.ndarray:
    """x / width and y / height, each clipped at 1 (`convert_points`, utils/input.py@722900e)."""
    values = np.asarray(flat_xy, np.float64)
    values[0::2] = np.minimum(values[0::2] / width, 1.0)
    values[1::2] = np.minimum(values[1::2] / height, 1.0)
    return values.astype(np.float32)


def resize_nearest(mask: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(mask.astype(np.uint8)).resize((size, size), resample=Image.Resampling.NEAREST)
    return np.asarray(image, np.float32)


def contour_points(mask: np.ndarray) -> np.ndarray:
    """(x, y) points along every contour of the mask (`binary_mask_to_polygon(tolerance=0)`).

    The reference pads the mask by one pixel and traces level 0; it never subtracts the padding,
    so the points keep that one-pixel offset, as here.
    """
    from skimage import measure

    padded = np.pad(mask, pad_width=1, mode="constant", constant_values=0)
    pieces = []
    for contour in measure.find_contours(padded, 0):
        if not np.array_equal(contour[0], contour[-1]):
            contour = np.vstack((contour, contour[0]))
        contour = measure.approximate_polygon(contour, 0)
        if len(contour) < 3:
            continue
        pieces.append(np.maximum(np.flip(contour, axis=1), 0))
    return np.concatenate(pieces) if pieces else np.zeros((0, 2))


def inside_points(mask: np.ndarray, k: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """k (x, y) pixels of the mask (`sample_uniform_sparse_points`): pixels ranked by their distance
    to the mask's mean, cut into k equal runs, the middle pixel of each; with fewer than k pixels,
    k drawn with replacement (the reference uses Python's global `random`; here a seeded generator)."""
    fg = np.argwhere(mask == 1)
    if len(fg) == 0:
        return []
    if len(fg) < k:
        picks = fg[rng.integers(0, len(fg), size=k)]
        return [(float(p[1]), float(p[0])) for p in picks]
    distance = np.linalg.norm(fg - fg.mean(axis=0), axis=1)
    ranked = fg[np.argsort(distance, kind="stable")]
    run = len(ranked) // k
    return [(float(ranked[i * run + run // 2][1]), float(ranked[i * run + run // 2][0])) for i in range(k)]


def sample_sparse_points(mask: np.ndarray, k: int, seed: int = 0) -> list[float] | None:
    """k points of a mask as a flat [x0, y0, x1, y1, ...] list, None for a mask without contour."""
    outline = contour_points(mask)
    if len(outline) == 0:
        return None
    half = k // 2
    picks = outline[[int(i) for i in np.linspace(0, len(outline) - 1, half)]]
    boundary = [(float(x), float(y)) for x, y in picks]
    points = inside_points(mask, k - len(boundary), np.random.default_rng(seed)) + boundary
    order = np.argsort([np.linalg.norm(np.array(p)) for p in points], kind="stable")
    return [coord for i in order for coord in points[i]]
