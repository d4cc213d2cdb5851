"""The one interface every generation method implements.

A generator declares what it can honour (`Capabilities`), the exact defaults of its own paper
or reference code (`defaults`), and turns a batch of `GenerationRequest`s into PIL images.
Heavy libraries (torch, diffusers) are imported inside methods, never at module import, so
listing plugins stays cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from eligen_bench.errors import PROFILES, InputError, check_plugin_options
from eligen_bench.layout import Entity, Layout
from eligen_bench.requests import GenerationRequest

if TYPE_CHECKING:
    from PIL import Image



ENTITY_TEXTS = ("prompt", "description")
"""Which text of an entity a generator is given: its short `prompt`, or its detailed
`description` (where the layout has one, e.g. LayoutSAM-Eval's detail region captions)."""

MAX_ENTITIES = 64
"""The project's bound on entities per layout, for methods whose reference code sets none
(EliGen, Regional Prompting FLUX, MultiDiffusion); no method may declare more. Eight times the
most the benchmark suites hold (COCO: 8, MIG-Bench: 6)."""


@dataclass(frozen=True)
class Capabilities:
    """What a method can take as input."""

    boxes: bool = True
    """Takes entity boxes."""
    masks: bool = False
    """Takes arbitrary-shape entity masks (otherwise masks are replaced by their boxes)."""
    inpainting: bool = False
    """Can fill entity regions of a given input image."""
    max_entities: int = MAX_ENTITIES
    """Most entities one layout may hold: the reference code's limit, or at most MAX_ENTITIES for a
    method whose reference has none (None takes MAX_ENTITIES)."""
    resolution: tuple[int, int] = (512, 512)
    """Native (width, height) of the method."""

    def __post_init__(self) -> None:
        # Cost grows with every entity (a prompt encoding, a region, attention rows), so no method
        # is unbounded: 10,000 entities on one tiny image would run for minutes.
        limit = MAX_ENTITIES if self.max_entities is None else self.max_entities
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_ENTITIES:
            raise ValueError(f"max_entities must be an integer in [0, {MAX_ENTITIES}], got {limit!r}")
        object.__setattr__(self, "max_entities", limit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "boxes": self.boxes,
            "masks": self.masks,
            "inpainting": self.inpainting,
            "max_entities": self.max_entities,
            "resolution": list(self.resolution),
        }


class Generator(ABC):
    """Base class of generation methods.

    Subclasses set `name`, `capabilities`, `defaults` (every option the method takes, with the
    value of its own paper or reference code) and implement `load` and `generate`.
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    defaults: ClassVar[Mapping[str, Any]] = {}
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    """How tables print the method when its label is its name ("EliGen"); empty: the name."""
    """The code the defaults follow: "owner/repo@commit: path[, path]" (empty when none)."""
    in_default_run: ClassVar[bool] = True
    """Part of `run` when no list is given (False for plugins that need a file or opt-in)."""
    entity_text: ClassVar[str] = "prompt"
    """The entity text the method's reference feeds it (one of ENTITY_TEXTS): every built-in
    method's reference takes one short phrase per entity. The option `entity_text=` (taken by
    every generator) overrides it per run; CreatiLayout's LayoutSAM-Eval scripts feed the
    detailed captions (HuiZhang0812/CreatiLayout@860d8bd: test_SiamLayout_flux_layoutsam_benchmark.py:52)."""
    added_options: ClassVar[Mapping[str, Any]] = {}
    """Options added to `defaults` after runs were made, each with the value that gives those
    runs' behaviour. At that value an option stays out of `identity()`, so the request keys and
    images of earlier runs stay valid; the manifest records it under ``added_options``."""

    def __init__(self, profile: str = "full", device: str | None = None, **options: Any):
        text = options.pop("entity_text", None)
        check_plugin_options("generator", self.name, profile, self.defaults, options)
        self.profile = profile
        self.device = device
        self.text_choice = check_entity_text(self.entity_text if text is None else text, self.name)
        """The entity text this instance is given (the class's `entity_text` unless overridden)."""
        self.settings: dict[str, Any] = {**self.defaults, **self.profile_overrides(), **options}
        self.load_notes: list[str] = []
        """What loading found (e.g. how many modules a LoRA updated), recorded in the manifest."""
        self._loaded = False

    def profile_overrides(self) -> dict[str, Any]:
        """Settings the tiny profile changes (fewer steps, small size); empty for `full`."""
        return {}

    def model_ids(self) -> dict[str, str]:
        """Hub ids / paths and revisions of every model the method loads (recorded in results)."""
        return {}

    def identity(self) -> dict[str, Any]:
        """Everything that determines the output for a given layout and seed.

        The entity text, and each of `added_options`, enters only when it is not the value runs
        made before the option existed had, so the identities (and the images) of those runs
        stay valid.
        """
        unkeyed = self.unkeyed_settings()
        ident = {
            "name": self.name,
            "profile": self.profile,
            "settings": {k: v for k, v in sorted(self.settings.items()) if k not in unkeyed},
            "models": self.model_ids(),
        }
        if self.text_choice != self.entity_text:
            ident["entity_text"] = self.text_choice
        return ident

    def unkeyed_settings(self) -> dict[str, Any]:
        """The `added_options` this instance holds at their earlier behaviour (not in `identity()`)."""
        return {k: v for k, v in self.added_options.items() if k in self.settings and self.settings[k] == v}

    def resolve_device(self) -> str:
        """The torch device to run on: the given one, else CUDA when present, else CPU."""
        if self.device:
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def adapt(self, layout: Layout) -> tuple[Layout, list[str]]:
        """Fit a layout to this method's capabilities; returns the layout and notes of what changed.

        Raises InputError for what cannot be honoured (more entities than supported).
        """
        caps = self.capabilities
        if len(layout.entities) > caps.max_entities:
            raise InputError(
                f"{len(layout.entities)} entities, but {self.name} supports at most {caps.max_entities}",
                where=layout.where,
                field="entities",
            )
        if layout.init_image is not None and not caps.inpainting:
            raise InputError(f"has an input image, but {self.name} cannot inpaint",
                             where=layout.where, field="init_image")
        notes: list[str] = []
        if layout.entities and not caps.boxes and not caps.masks:
            notes.append("entities not used (method takes the global prompt only)")
        elif layout.has_masks and not caps.masks:
            entities = tuple(replace(e, mask=None) for e in layout.entities)
            layout = replace(layout, entities=entities)
            notes.append("masks replaced by their bounding boxes (method takes boxes only)")
        if self.text_choice == "description":
            layout, text_notes = use_descriptions(layout)
            notes += text_notes
        return layout, notes

    def ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()
            self._loaded = True

    @abstractmethod
    def load(self) -> None:
        """Load or build the models (tiny random ones for the `tiny` profile)."""

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Image.Image]:
        """One image per request, in order; same request, same image."""

    def close(self) -> None:
        """Free models and worker processes; the next `ensure_loaded` loads again."""
        self._loaded = False


def release_cuda_memory() -> None:
    """Hand cached CUDA blocks back after a generator closes, so the next model fits."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_entity_text(value: Any, name: str) -> str:
    if value not in ENTITY_TEXTS:
        raise InputError(f"must be one of {ENTITY_TEXTS}, got {value!r}", where=f"generator {name!r}",
                         field="entity_text")
    return str(value)


def use_descriptions(layout: Layout) -> tuple[Layout, list[str]]:
    """The layout with each entity's prompt replaced by its description (where it has one).

    The description stays in place, so the request key still names the layout's full content.
    """
    described = sum(e.description is not None for e in layout.entities)
    if not layout.entities:
        return layout, []
    notes = []
    if described:
        entities = tuple(replace(e, prompt=e.description) if e.description is not None else e
                         for e in layout.entities)
        layout = replace(layout, entities=entities)
        notes.append("entity prompts replaced by their detailed descriptions (entity_text='description')")
    if described < len(layout.entities):
        notes.append("entities without a description keep their prompt (entity_text='description')")
    return layout, notes


def entity_prompts(layout: Layout) -> list[str]:
    return [e.prompt for e in layout.entities]


def entity_boxes(layout: Layout) -> list[tuple[float, float, float, float]]:
    return [e.bbox for e in layout.entities]


__all__ = ["ENTITY_TEXTS", "MAX_ENTITIES", "Capabilities", "Entity", "GenerationRequest", "Generator", "Layout", "PROFILES"]
