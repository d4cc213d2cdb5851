"""How much LayoutSAM-Eval's four scores move between chat()'s sampling and greedy decoding.

    python benchmarks/layoutsam_decoding.py [--images 12] [--entities 3] [--max-new-tokens 8]
        [--profile tiny] [--device cpu]

Scores the same synthetic images (random RGB at 256x256 with a flat block per entity, layouts
with `--entities` boxes, each with a short prompt and a detailed description) with the four
`layoutsam_*` metrics under `decoding=sample` (the reference's: chat()'s defaults, seeded per
answer) and `decoding=greedy`, and prints each score under both and the share of spatial answers
that differ. With `--profile tiny` the judge is the random tiny Qwen2-VL stand-in: its answers
are random tokens, so this measures the decoding path, not MiniCPM-V; run with `--profile full`
on a GPU machine with the hub for the real judge.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any


def make_items(directory: Path, images: int, entities: int) -> list[Any]:
    import numpy as np
    from PIL import Image

    from eligen_bench.api.metric import ScoreItem
    from eligen_bench.hashing import file_sha256
    from eligen_bench.layout import Entity, Layout

    rng = np.random.default_rng(0)
    colours = ("red", "green", "blue", "yellow", "white")
    items = []
    for k in range(images):
        pixels = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
        found = []
        for j in range(entities):
            x1, y1 = rng.uniform(0.0, 0.6, size=2)
            box = (round(float(x1), 3), round(float(y1), 3), round(float(x1) + 0.3, 3), round(float(y1) + 0.3, 3))
            colour = colours[(k + j) % len(colours)]
            pixels[int(box[1] * 256):int(box[3] * 256), int(box[0] * 256):int(box[2] * 256)] = \
                {"red": (200, 20, 20), "green": (20, 180, 20), "blue": (20, 20, 200), "yellow": (220, 220, 20),
                 "white": (240, 240, 240)}[colour]
            found.append(Entity(f"a {colour} box", box, description=f"a flat {colour} square box with smooth sides"))
        path = directory / f"img{k}.png"
        Image.fromarray(pixels).save(path)
        layout = Layout(f"img{k}", "coloured boxes on noise", tuple(found), 256, 256)
        items.append(ScoreItem("bench", layout, 0, k, path, file_sha256(path)))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--entities", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=8, help="full profile only (tiny uses 8)")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from eligen_bench.api.metric import ModelCache
    from eligen_bench.metrics.layoutsam.scores import (
        LayoutSamColor,
        LayoutSamShape,
        LayoutSamSpatial,
        LayoutSamTexture,
    )

    with tempfile.TemporaryDirectory() as directory:
        items = make_items(Path(directory), args.images, args.entities)
        results: dict[str, dict[str, list]] = {}
        for decoding in ("sample", "greedy"):
            cache = ModelCache()
            options = {"decoding": decoding}
            if args.profile != "tiny":
                options["max_new_tokens"] = args.max_new_tokens
            results[decoding] = {
                m.aspect: m(profile=args.profile, device=args.device, cache=cache, **options).score(items)
                for m in (LayoutSamSpatial, LayoutSamColor, LayoutSamTexture, LayoutSamShape)}
    boxes = len(results["sample"]["spatial"])
    print(f"{args.images} images, {boxes} boxes, profile {args.profile}")
    print("| score | sample | greedy | difference (points) |")
    print("|---|---|---|---|")
    for aspect in ("spatial", "color", "texture", "shape"):
        values = {d: 100 * sum(r.value for r in results[d][aspect]) / boxes for d in results}
        print(f"| {aspect} | {values['sample']:.2f} | {values['greedy']:.2f} | {values['greedy'] - values['sample']:+.2f} |")
    differ = sum(a.detail["spatial_answer"] != b.detail["spatial_answer"]
                 for a, b in zip(results["sample"]["spatial"], results["greedy"]["spatial"], strict=True))
    print(f"spatial answers that differ between the two decodings: {differ} of {boxes}")
    print("examples (sample | greedy):", [(a.detail["spatial_answer"], b.detail["spatial_answer"])
                                          for a, b in zip(results["sample"]["spatial"][:3],
                                                          results["greedy"]["spatial"][:3], strict=True)])


if __name__ == "__main__":
    main()
