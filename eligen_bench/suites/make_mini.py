"""Write the bundled `mini` suite (`mini.jsonl`): hand-written layouts for quick runs and tests.

Every entity count from 0 to 8 occurs several times; categories are COCO class names; six
layouts use arbitrary-shape masks drawn here with PIL at 512x512 (their boxes are the masks'
tight bounds). Run `python -m eligen_bench.suites.make_mini` to regenerate; the output is
deterministic, so the suite hash changes only when this file does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from eligen_bench.layout import Entity, Layout, Mask
from eligen_bench.suite import Suite

VERSION = "1"
MASK_SIZE = 512

# (id, global prompt, [(entity prompt, category, (x1, y1, x2, y2))], (width, height))
BoxSpec = tuple[str, str, list[tuple[str, str, tuple[float, float, float, float]]], tuple[int, int]]
SQUARE = (1024, 1024)
WIDE = (1344, 768)
TALL = (768, 1344)

BOX_LAYOUTS: list[BoxSpec] = [
    ("empty-beach", "a quiet beach at sunset with gentle waves and a pink sky", [], SQUARE),
    ("empty-forest", "a misty pine forest in the early morning, soft light through the trees", [], WIDE),
    ("empty-city", "a rainy city street at night with neon reflections on the wet asphalt", [], TALL),
    ("cat-windowsill", "a ginger cat sitting on a sunny windowsill", [
        ("a ginger cat", "cat", (0.30, 0.35, 0.72, 0.90)),
    ], SQUARE),
    ("red-umbrella", "a person holding a red umbrella in the rain", [
        ("a red umbrella", "umbrella", (0.18, 0.08, 0.82, 0.48)),
    ], TALL),
    ("clock-tower", "an old clock on a brick wall, close-up", [
        ("a round vintage clock with roman numerals", "clock", (0.28, 0.22, 0.72, 0.78)),
    ], SQUARE),
    ("sailboat", "a white sailboat on a calm blue lake with mountains behind", [
        ("a white sailboat", "boat", (0.40, 0.30, 0.62, 0.80)),
    ], WIDE),
    ("dog-frisbee", "a dog jumping to catch a frisbee in a park", [
        ("a brown dog jumping", "dog", (0.15, 0.40, 0.60, 0.92)),
        ("a yellow frisbee", "frisbee", (0.62, 0.12, 0.80, 0.26)),
    ], SQUARE),
    ("laptop-cup", "a laptop and a cup of coffee on a wooden desk", [
        ("an open silver laptop", "laptop", (0.08, 0.30, 0.62, 0.85)),
        ("a white cup of coffee", "cup", (0.70, 0.55, 0.90, 0.82)),
    ], WIDE),
    ("giraffes", "two giraffes standing on the savanna", [
        ("a tall giraffe", "giraffe", (0.10, 0.08, 0.45, 0.95)),
        ("a young giraffe", "giraffe", (0.55, 0.35, 0.85, 0.95)),
    ], TALL),
    ("pizza-bottle", "a pizza next to a bottle of wine on a table", [
        ("a pepperoni pizza", "pizza", (0.05, 0.45, 0.60, 0.92)),
        ("a green glass bottle", "bottle", (0.70, 0.10, 0.85, 0.80)),
    ], SQUARE),
    ("breakfast", "breakfast on a table: a bowl, a banana and an orange", [
        ("a white bowl of cereal", "bowl", (0.08, 0.45, 0.50, 0.80)),
        ("a ripe banana", "banana", (0.52, 0.55, 0.90, 0.72)),
        ("an orange", "orange", (0.60, 0.25, 0.78, 0.45)),
    ], SQUARE),
    ("street-traffic", "a city street with a bus, a car and a traffic light", [
        ("a red double-decker bus", "bus", (0.05, 0.25, 0.50, 0.85)),
        ("a black car", "car", (0.55, 0.55, 0.88, 0.85)),
        ("a traffic light", "traffic light", (0.90, 0.05, 0.97, 0.40)),
    ], WIDE),
    ("living-room", "a cosy living room with a couch, a tv and a potted plant", [
        ("a grey couch", "couch", (0.05, 0.50, 0.60, 0.92)),
        ("a flat tv on the wall", "tv", (0.62, 0.20, 0.95, 0.45)),
        ("a potted plant", "potted plant", (0.80, 0.55, 0.97, 0.95)),
    ], SQUARE),
    ("horse-rider", "a person riding a horse next to a dog on a country road", [
        ("a person in a blue jacket", "person", (0.35, 0.10, 0.58, 0.50)),
        ("a white horse", "horse", (0.25, 0.30, 0.72, 0.92)),
        ("a black dog", "dog", (0.75, 0.65, 0.95, 0.92)),
    ], TALL),
    ("kitchen-counter", "a kitchen counter with a toaster, a microwave, a knife and a cup", [
        ("a chrome toaster", "toaster", (0.05, 0.50, 0.28, 0.78)),
        ("a white microwave", "microwave", (0.32, 0.25, 0.70, 0.62)),
        ("a kitchen knife", "knife", (0.72, 0.70, 0.95, 0.78)),
        ("a blue cup", "cup", (0.78, 0.40, 0.92, 0.62)),
    ], WIDE),
    ("picnic", "a picnic in the park with a sandwich, an apple, a bottle and a backpack", [
        ("a sandwich", "sandwich", (0.10, 0.60, 0.35, 0.80)),
        ("a red apple", "apple", (0.40, 0.62, 0.52, 0.76)),
        ("a water bottle", "bottle", (0.58, 0.40, 0.68, 0.78)),
        ("a green backpack", "backpack", (0.72, 0.30, 0.95, 0.80)),
    ], SQUARE),
    ("farm", "a farm meadow with a cow, a sheep, a horse and a bird", [
        ("a black and white cow", "cow", (0.05, 0.45, 0.40, 0.85)),
        ("a fluffy sheep", "sheep", (0.45, 0.60, 0.65, 0.85)),
        ("a brown horse", "horse", (0.68, 0.35, 0.95, 0.85)),
        ("a small bird in the sky", "bird", (0.40, 0.08, 0.52, 0.18)),
    ], WIDE),
    ("office-desk", "an office desk with a keyboard, a mouse, a book and a cell phone", [
        ("a black keyboard", "keyboard", (0.15, 0.55, 0.65, 0.72)),
        ("a wireless mouse", "mouse", (0.70, 0.58, 0.80, 0.70)),
        ("a red book", "book", (0.05, 0.20, 0.30, 0.45)),
        ("a cell phone", "cell phone", (0.82, 0.30, 0.95, 0.50)),
    ], SQUARE),
    ("beach-day", "a sunny beach with a surfboard, a kite, a person, an umbrella and a chair", [
        ("a yellow surfboard", "surfboard", (0.05, 0.35, 0.18, 0.90)),
        ("a colourful kite", "kite", (0.55, 0.05, 0.75, 0.25)),
        ("a person walking", "person", (0.30, 0.40, 0.45, 0.90)),
        ("a striped beach umbrella", "umbrella", (0.55, 0.35, 0.95, 0.60)),
        ("a folding beach chair", "chair", (0.62, 0.62, 0.85, 0.90)),
    ], WIDE),
    ("dinner-table", "a dinner table with a cake, a wine glass, a fork, a spoon and a vase of flowers", [
        ("a chocolate cake", "cake", (0.30, 0.45, 0.65, 0.75)),
        ("a wine glass", "wine glass", (0.70, 0.25, 0.82, 0.65)),
        ("a silver fork", "fork", (0.15, 0.55, 0.22, 0.88)),
        ("a silver spoon", "spoon", (0.85, 0.55, 0.92, 0.88)),
        ("a vase of flowers", "vase", (0.40, 0.05, 0.58, 0.42)),
    ], SQUARE),
    ("bathroom", "a bright bathroom with a toilet, a sink, a toothbrush, a hair drier and a pair of scissors", [
        ("a white toilet", "toilet", (0.05, 0.50, 0.35, 0.95)),
        ("a ceramic sink", "sink", (0.50, 0.40, 0.90, 0.60)),
        ("a blue toothbrush", "toothbrush", (0.55, 0.28, 0.60, 0.40)),
        ("a hair drier", "hair drier", (0.75, 0.20, 0.92, 0.38)),
        ("a pair of scissors", "scissors", (0.62, 0.30, 0.72, 0.38)),
    ], TALL),
    ("sports-field", "children playing sports: a child kicking a sports ball, a skateboard, "
     "a bicycle, a tennis racket and a baseball bat on the grass", [
        ("a child kicking", "person", (0.05, 0.20, 0.30, 0.90)),
        ("a sports ball", "sports ball", (0.32, 0.75, 0.40, 0.88)),
        ("a skateboard", "skateboard", (0.45, 0.82, 0.65, 0.92)),
        ("a red bicycle", "bicycle", (0.62, 0.35, 0.97, 0.80)),
        ("a tennis racket", "tennis racket", (0.45, 0.50, 0.58, 0.75)),
        ("a wooden baseball bat", "baseball bat", (0.20, 0.92, 0.50, 0.97)),
    ], WIDE),
    ("bedroom", "a bedroom with a bed, a teddy bear, a clock, a book, a laptop and a chair", [
        ("a double bed", "bed", (0.05, 0.45, 0.65, 0.95)),
        ("a brown teddy bear", "teddy bear", (0.30, 0.40, 0.45, 0.60)),
        ("a wall clock", "clock", (0.70, 0.08, 0.85, 0.25)),
        ("a stack of books", "book", (0.72, 0.55, 0.90, 0.65)),
        ("an open laptop", "laptop", (0.70, 0.40, 0.92, 0.55)),
        ("a wooden chair", "chair", (0.75, 0.60, 0.97, 0.97)),
    ], SQUARE),
    ("winter-slope", "a snowy slope with skis, a snowboard, a person, a backpack, a bench and a dog", [
        ("a skier in red", "person", (0.10, 0.15, 0.30, 0.75)),
        ("a pair of skis", "skis", (0.05, 0.75, 0.40, 0.82)),
        ("a green snowboard", "snowboard", (0.45, 0.70, 0.75, 0.80)),
        ("a black backpack", "backpack", (0.35, 0.30, 0.48, 0.52)),
        ("a wooden bench", "bench", (0.60, 0.40, 0.95, 0.62)),
        ("a husky dog", "dog", (0.78, 0.65, 0.97, 0.90)),
    ], WIDE),
    ("market-stall", "a fruit market stall with broccoli, carrots, oranges, apples and bananas, "
     "a vendor behind it and a handbag hanging on a hook", [
        ("a head of broccoli", "broccoli", (0.05, 0.55, 0.22, 0.75)),
        ("a bunch of carrots", "carrot", (0.25, 0.58, 0.45, 0.75)),
        ("a pile of oranges", "orange", (0.48, 0.55, 0.68, 0.75)),
        ("a pile of red apples", "apple", (0.70, 0.55, 0.90, 0.75)),
        ("a bunch of bananas", "banana", (0.20, 0.30, 0.45, 0.48)),
        ("a leather handbag", "handbag", (0.75, 0.10, 0.92, 0.40)),
        ("a vendor in an apron", "person", (0.48, 0.08, 0.66, 0.52)),
    ], SQUARE),
    ("harbour", "a harbour with two boats, a truck, a car, a fisherman, a seagull "
     "and a fire hydrant", [
        ("a fishing boat", "boat", (0.05, 0.45, 0.30, 0.70)),
        ("a small motor boat", "boat", (0.32, 0.52, 0.48, 0.68)),
        ("a delivery truck", "truck", (0.50, 0.40, 0.78, 0.78)),
        ("a blue car", "car", (0.80, 0.58, 0.97, 0.80)),
        ("a fisherman", "person", (0.28, 0.30, 0.36, 0.58)),
        ("a seagull", "bird", (0.60, 0.08, 0.70, 0.16)),
        ("a red fire hydrant", "fire hydrant", (0.40, 0.78, 0.46, 0.92)),
    ], WIDE),
    ("study-room", "a study room with a laptop, a cup, a book, scissors, a potted plant "
     "and a remote on a dining table", [
        ("a wooden dining table", "dining table", (0.02, 0.50, 0.98, 0.98)),
        ("a silver laptop", "laptop", (0.30, 0.30, 0.60, 0.60)),
        ("a coffee cup", "cup", (0.65, 0.45, 0.75, 0.58)),
        ("a thick book", "book", (0.08, 0.45, 0.25, 0.58)),
        ("a pair of scissors", "scissors", (0.78, 0.55, 0.88, 0.62)),
        ("a small potted plant", "potted plant", (0.85, 0.25, 0.97, 0.55)),
        ("a tv remote", "remote", (0.50, 0.65, 0.62, 0.72)),
    ], SQUARE),
    ("zoo", "a zoo scene with an elephant, a zebra, a giraffe, a bear, a bird, a bench, "
     "a person and a backpack", [
        ("a grey elephant", "elephant", (0.02, 0.35, 0.32, 0.85)),
        ("a zebra", "zebra", (0.35, 0.55, 0.55, 0.85)),
        ("a giraffe", "giraffe", (0.58, 0.05, 0.75, 0.85)),
        ("a brown bear", "bear", (0.78, 0.55, 0.98, 0.88)),
        ("a parrot", "bird", (0.40, 0.10, 0.48, 0.22)),
        ("a park bench", "bench", (0.30, 0.86, 0.60, 0.97)),
        ("a visitor", "person", (0.05, 0.70, 0.15, 0.98)),
        ("a red backpack", "backpack", (0.62, 0.86, 0.70, 0.97)),
    ], WIDE),
    ("party", "a birthday party with a cake, a cup, a bottle, a knife, a chair, a person, "
     "a teddy bear and a vase", [
        ("a birthday cake with candles", "cake", (0.35, 0.45, 0.60, 0.70)),
        ("a paper cup", "cup", (0.65, 0.55, 0.72, 0.68)),
        ("a bottle of soda", "bottle", (0.20, 0.35, 0.28, 0.68)),
        ("a cake knife", "knife", (0.60, 0.68, 0.75, 0.72)),
        ("a wooden chair", "chair", (0.78, 0.50, 0.98, 0.98)),
        ("a smiling child", "person", (0.02, 0.20, 0.20, 0.95)),
        ("a pink teddy bear", "teddy bear", (0.80, 0.30, 0.95, 0.50)),
        ("a glass vase", "vase", (0.45, 0.15, 0.55, 0.43)),
    ], SQUARE),
    ("train-station", "a train station with a train, a bench, a clock, a person with a suitcase, "
     "a handbag, an umbrella and a bicycle", [
        ("a red train", "train", (0.02, 0.20, 0.55, 0.75)),
        ("a metal bench", "bench", (0.60, 0.65, 0.90, 0.80)),
        ("a station clock", "clock", (0.70, 0.05, 0.82, 0.20)),
        ("a traveller", "person", (0.62, 0.30, 0.72, 0.80)),
        ("a wheeled suitcase", "suitcase", (0.73, 0.60, 0.80, 0.80)),
        ("a handbag", "handbag", (0.56, 0.50, 0.62, 0.62)),
        ("a closed umbrella", "umbrella", (0.82, 0.45, 0.86, 0.75)),
        ("a parked bicycle", "bicycle", (0.86, 0.55, 0.99, 0.85)),
    ], TALL),
]


def _draw(size: int, draw: Callable) -> np.ndarray:
    from PIL import Image, ImageDraw

    image = Image.new("L", (size, size), 0)
    draw(ImageDraw.Draw(image))
    return np.asarray(image) > 127


def ellipse(box: tuple[float, float, float, float]) -> np.ndarray:
    s = MASK_SIZE
    return _draw(s, lambda d: d.ellipse([box[0] * s, box[1] * s, box[2] * s, box[3] * s], fill=255))


def polygon(points: list[tuple[float, float]]) -> np.ndarray:
    s = MASK_SIZE
    return _draw(s, lambda d: d.polygon([(x * s, y * s) for x, y in points], fill=255))


def star(cx: float, cy: float, outer: float, inner: float, tips: int = 5) -> np.ndarray:
    points = []
    for k in range(2 * tips):
        r = outer if k % 2 == 0 else inner
        angle = -math.pi / 2 + k * math.pi / tips
        points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    return polygon(points)


def ring(cx: float, cy: float, outer: float, inner: float) -> np.ndarray:
    return ellipse((cx - outer, cy - outer, cx + outer, cy + outer)) & ~ellipse(
        (cx - inner, cy - inner, cx + inner, cy + inner)
    )


# (id, global prompt, [(entity prompt, category, mask array)])
MASK_LAYOUTS: list[tuple[str, str, list[tuple[str, str, Callable[[], np.ndarray]]]]] = [
    ("mask-round-cake", "a round cake on a table, seen from above", [
        ("a round strawberry cake", "cake", lambda: ellipse((0.20, 0.20, 0.80, 0.80))),
    ]),
    ("mask-l-couch", "a living room with an L-shaped couch and a dog lying on the floor", [
        ("an L-shaped grey couch", "couch", lambda: polygon(
            [(0.05, 0.40), (0.70, 0.40), (0.70, 0.60), (0.25, 0.60), (0.25, 0.95), (0.05, 0.95)])),
        ("a sleeping golden dog", "dog", lambda: ellipse((0.45, 0.70, 0.90, 0.92))),
    ]),
    ("mask-kite-sky", "a star-shaped kite and a bird flying over a hill", [
        ("a star-shaped red kite", "kite", lambda: star(0.35, 0.30, 0.22, 0.09)),
        ("a seagull with spread wings", "bird", lambda: polygon(
            [(0.60, 0.20), (0.75, 0.28), (0.90, 0.18), (0.80, 0.33), (0.70, 0.33)])),
        ("a person flying the kite", "person", lambda: polygon(
            [(0.55, 0.55), (0.65, 0.55), (0.68, 0.95), (0.52, 0.95)])),
    ]),
    ("mask-donuts", "donuts on a plate with a cup of coffee and a spoon", [
        ("a glazed donut", "donut", lambda: ring(0.28, 0.35, 0.16, 0.05)),
        ("a chocolate donut", "donut", lambda: ring(0.62, 0.35, 0.16, 0.05)),
        ("a white coffee cup", "cup", lambda: ellipse((0.30, 0.60, 0.55, 0.88))),
        ("a silver spoon", "spoon", lambda: polygon([(0.62, 0.62), (0.66, 0.60), (0.92, 0.90), (0.88, 0.92)])),
    ]),
    ("mask-pond", "ducks on an irregular pond next to a bench, a tree-lined path and a person walking a dog", [
        ("a white duck", "bird", lambda: ellipse((0.20, 0.45, 0.32, 0.55))),
        ("a brown duck", "bird", lambda: ellipse((0.40, 0.50, 0.52, 0.60))),
        ("a wooden bench", "bench", lambda: polygon([(0.62, 0.30), (0.95, 0.30), (0.95, 0.45), (0.62, 0.45)])),
        ("a person in a yellow coat", "person", lambda: polygon(
            [(0.70, 0.50), (0.78, 0.50), (0.80, 0.95), (0.68, 0.95)])),
        ("a small terrier", "dog", lambda: ellipse((0.82, 0.82, 0.97, 0.95))),
    ]),
    ("mask-fruit-bowl", "a banana, an apple and an orange on a table with a blue vase, "
     "a knife and a wine glass", [
        ("a curved yellow banana", "banana", lambda: ring(0.35, 0.20, 0.30, 0.22) & polygon(
            [(0.05, 0.30), (0.65, 0.30), (0.65, 0.60), (0.05, 0.60)])),
        ("a red apple", "apple", lambda: ellipse((0.15, 0.55, 0.35, 0.75))),
        ("an orange", "orange", lambda: ellipse((0.40, 0.60, 0.58, 0.78))),
        ("a blue ceramic vase", "vase", lambda: ellipse((0.70, 0.30, 0.90, 0.60)) | polygon(
            [(0.76, 0.10), (0.84, 0.10), (0.86, 0.35), (0.74, 0.35)])),
        ("a kitchen knife", "knife", lambda: polygon([(0.10, 0.88), (0.55, 0.84), (0.55, 0.87), (0.10, 0.91)])),
        ("a wine glass", "wine glass", lambda: polygon(
            [(0.62, 0.60), (0.72, 0.60), (0.68, 0.78), (0.70, 0.92), (0.64, 0.92), (0.66, 0.78)])),
    ]),
]


def tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The normalised xyxy box that just encloses the mask's pixels."""
    rows, cols = np.nonzero(mask)
    h, w = mask.shape
    return (cols.min() / w, rows.min() / h, (cols.max() + 1) / w, (rows.max() + 1) / h)


def build_mini() -> Suite:
    layouts = [
        Layout(id=layout_id, prompt=prompt, width=size[0], height=size[1], source="hand-written",
               entities=tuple(Entity(prompt=p, bbox=box, category=c) for p, c, box in entities))
        for layout_id, prompt, entities, size in BOX_LAYOUTS
    ]
    for layout_id, prompt, entities in MASK_LAYOUTS:
        drawn = []
        for entity_prompt, category, make in entities:
            mask = make()
            drawn.append(Entity(prompt=entity_prompt, bbox=tight_box(mask), mask=Mask.from_array(mask), category=category))
        layouts.append(Layout(id=layout_id, prompt=prompt, entities=tuple(drawn), width=MASK_SIZE,
                              height=MASK_SIZE, source="hand-written"))
    return Suite(
        name="mini",
        version=VERSION,
        layouts=tuple(layouts),
        description="Hand-written layouts for quick runs: 0-8 entities, COCO classes, six with masks",
        notes=("hand-written, not from a published benchmark: for smoke tests and quick comparisons",),
    )


def main() -> None:
    path = Path(__file__).with_name("mini.jsonl")
    suite = build_mini()
    suite.write(path)
    print(f"{path}: {len(suite.layouts)} layouts, hash {suite.hash}")


if __name__ == "__main__":
    main()
