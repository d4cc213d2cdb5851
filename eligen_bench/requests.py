"""What a generator is asked to do, and the key that says whether it was already done."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eligen_bench.hashing import content_hash, file_sha256
from eligen_bench.layout import Layout


@dataclass(frozen=True)
class GenerationRequest:
    """One image to make: a layout, a seed and the generator configuration that will make it."""

    layout: Layout
    """The layout to render (already adapted to the generator's capabilities)."""
    seed_index: int
    """0..seeds-1 within the run."""
    seed: int
    """The derived seed for this (layout, seed index); see `eligen_bench.seeds`."""
    generator: dict[str, Any]
    """The generator's identity: name, profile, settings and model ids (`Generator.identity()`)."""
    init_image: str | None = None
    """Path of an input image, for inpainting requests; None for generation from noise."""
    init_image_sha256: str | None = None
    """Hash of the input image's file: its content, not its path, is part of the key."""

    @property
    def key(self) -> str:
        """Hash of layout + seed + generator identity (+ input image): equal keys, equal images."""
        layout = self.layout.to_dict()
        layout.pop("init_image", None)  # where the file lies does not change the image
        return content_hash(
            {
                "layout": layout,
                "seed": self.seed,
                "generator": self.generator,
                "init_image": None if self.init_image is None
                else self.init_image_sha256 or file_sha256(self.init_image),
            }
        )

    @property
    def stem(self) -> str:
        """File stem of the image: `<layout>_<seed index>`."""
        return f"{self.layout.id}_{self.seed_index}"
