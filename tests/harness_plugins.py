"""Small model-free plugins for testing the harness itself (stages, resume, worker protocol).

`BoxPainter` paints each entity's region in a colour derived from its prompt on a seeded
noise background; `RegionFill` measures which fraction of each region has that colour. They
are test fixtures of the harness, not benchmark methods, and are not registered.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from eligen_bench.api.generator import Capabilities, Generator
from eligen_bench.api.metric import Metric, ScoreItem, ScoreRow, row
from eligen_bench.requests import GenerationRequest


def prompt_colour(prompt: str) -> np.ndarray:
    return np.frombuffer(hashlib.sha256(prompt.encode()).digest()[:3], dtype=np.uint8).copy()


class BoxPainter(Generator):
    name = "box-painter"
    capabilities = Capabilities(boxes=True, masks=True, inpainting=True, max_entities=8, resolution=(64, 64))
    defaults = {"width": 64, "height": 64, "delay": 0.0, "skip_every": 0}
    """`skip_every=n` leaves every n-th entity unpainted: a deliberately worse 'checkpoint'."""

    def load(self) -> None:
        self.loads = getattr(self, "loads", 0) + 1

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Image.Image]:
        images = []
        for request in requests:
            time.sleep(float(self.settings["delay"]))
            height, width = self.settings["height"], self.settings["width"]
            rng = np.random.default_rng(request.seed)
            pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            if request.init_image is not None:  # inpainting: paint the entities into the input
                with Image.open(request.init_image) as init:
                    pixels = np.array(init.convert("RGB").resize((width, height)))
            skip = int(self.settings["skip_every"])
            for index, entity in enumerate(request.layout.entities):
                if not skip or index % skip:
                    pixels[entity.region(height, width)] = prompt_colour(entity.prompt)
            images.append(Image.fromarray(pixels))
        return images


class RegionFill(Metric):
    name = "region_fill"
    level = "entity"
    defaults = {"tolerance": 0, "delay": 0.0}
    """`delay` seconds per image: a slow metric, to overlap two commands on one run."""

    def load(self) -> Any:
        return "no model"

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        rows = []
        for item in items:
            time.sleep(float(self.options["delay"]))
            pixels = np.asarray(item.load_image()).astype(int)
            height, width = pixels.shape[:2]
            for index, entity in enumerate(item.layout.entities):
                region = entity.region(height, width)
                close = np.abs(pixels[region] - prompt_colour(entity.prompt)).max(axis=1) <= self.options["tolerance"]
                rows.append(row(self, item, float(close.mean()), entity_index=index))
        return rows


class CountingPainter(BoxPainter):
    """`BoxPainter` that appends `start <stem>` and `done <stem>` to the file `calls` around
    each image, so a test counts how often each item was begun and finished, in any process."""

    name = "counting-painter"
    defaults = {**BoxPainter.defaults, "calls": ""}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Image.Image]:
        images = []
        for request in requests:
            self._log("start", request)
            images += super().generate([request])
            self._log("done", request)
        return images

    def _log(self, what: str, request: GenerationRequest) -> None:
        with open(self.settings["calls"], "a", encoding="utf-8") as handle:
            handle.write(f"{what} {request.stem}\n")
