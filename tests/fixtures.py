"""Layouts and suite files the tests build."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eligen_bench.layout import Entity, Layout, Mask
from eligen_bench.requests import GenerationRequest
from eligen_bench.suite import Suite

TWO_PETS = Layout(
    id="two-pets",
    prompt="a cat and a dog on a sofa",
    entities=(Entity("a cat", (0.1, 0.1, 0.5, 0.6)), Entity("a dog", (0.4, 0.3, 0.9, 0.9))),
    width=512,
    height=512,
)
"""Two overlapping boxes at 512x512: the generator tests' standard layout."""


def request_for(generator, layout: Layout, seed: int = 1234, index: int = 0) -> GenerationRequest:
    """One request of `layout` for `generator` (its identity as the request's)."""
    return GenerationRequest(layout=layout, seed_index=index, seed=seed, generator=generator.identity())


def ellipse(height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[:height, :width]
    return ((rows - height / 2) / (height / 3)) ** 2 + ((cols - width / 3) / (width / 4)) ** 2 <= 1


def small_suite(count: int = 4) -> Suite:
    layouts = [Layout("plain", "an empty beach at dawn", (), 64, 64)]
    for i in range(1, count):
        entities = tuple(
            Entity(f"a thing number {j}", (0.1 * j + 0.02, 0.1, 0.1 * j + 0.09, 0.6), category="cat")
            for j in range(i)
        )
        layouts.append(Layout(f"layout-{i}", f"a scene with {i} things", entities, 64, 64))
    masked = Entity("a round pond", (0.08, 0.16, 0.6, 0.84), mask=Mask.from_array(ellipse(64, 64)))
    layouts.append(Layout("masked", "a garden with a pond", (masked,), 64, 64))
    return Suite("small", "1", tuple(layouts), "test suite")


def write_small_suite(path: Path, count: int = 4) -> Path:
    small_suite(count).write(path)
    return path


def add_generator_entry(monkeypatch, name: str, target: str) -> None:
    """Make entry-point discovery also find generator `name` -> `target` (for this test only)."""
    from importlib import metadata

    from eligen_bench import registry

    real = metadata.entry_points
    group = registry.GROUPS["generator"]

    def with_extra(**kwargs):
        found = list(real(**kwargs))
        if kwargs.get("group") == group:
            found.append(metadata.EntryPoint(name, target, group))
        return found

    monkeypatch.setattr(metadata, "entry_points", with_extra)
