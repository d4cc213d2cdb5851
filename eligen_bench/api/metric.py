"""The one interface every metric implements.

A metric loads its model lazily (or takes an injected one, as tests do), scores a batch of
`ScoreItem`s and returns `ScoreRow`s. Every row carries the metric's identity (model id,
revision, thresholds, prompt templates) so two runs are comparable only when these match.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from eligen_bench.errors import check_plugin_options
from eligen_bench.hashing import content_hash
from eligen_bench.layout import Layout

if TYPE_CHECKING:
    from PIL import Image

IMAGE_LEVEL = -1  # entity_index of rows that score the whole image


@dataclass(frozen=True)
class ScoreItem:
    """One generated image to score, with what it was meant to show."""

    generator: str
    """Name of the generator that made the image."""
    layout: Layout
    """The layout the image was generated from (as given to the generator)."""
    seed_index: int
    """Seed index within the run."""
    seed: int
    """The derived seed that made the image."""
    image_path: Path
    """The PNG on disk."""
    image_sha256: str
    """Hash of the PNG file, recorded in every row."""
    init_image: Path | None = None
    """The input image of an inpainting layout (see `Layout.init_image`); None otherwise."""

    def content_sha256(self) -> str:
        """sha256 of the image file's bytes: the key of every per-image memo. Computed from the
        file, never taken from `image_sha256`, which callers may leave empty."""
        import hashlib

        return hashlib.sha256(Path(self.image_path).read_bytes()).hexdigest()

    def load_image(self) -> Image.Image:
        from PIL import Image

        with Image.open(self.image_path) as image:
            return image.convert("RGB")


@dataclass(frozen=True)
class ScoreRow:
    """One number: a metric's value for one entity (entity_index >= 0) or one image (-1)."""

    metric: str
    generator: str
    layout_id: str
    seed_index: int
    seed: int
    entity_index: int
    value: float
    """The score; NaN when the entity is excluded (see `status`)."""
    status: str = "ok"
    """'ok', or why the value is missing: 'excluded' (e.g. not a detector class), 'unparsed'."""
    detail: Mapping[str, Any] = field(default_factory=dict)
    """Small extras worth keeping per row (a VLM's raw answer, the matched box)."""
    image_sha256: str = ""
    metric_key: str = ""
    """Hash of the metric identity (filled in by the scoring stage)."""

    def to_record(self) -> dict[str, Any]:
        import json

        return {
            "metric": self.metric,
            "generator": self.generator,
            "layout_id": self.layout_id,
            "seed_index": self.seed_index,
            "seed": self.seed,
            "entity_index": self.entity_index,
            "value": float(self.value),
            "status": self.status,
            "detail": json.dumps(dict(self.detail), sort_keys=True, default=str),
            "image_sha256": self.image_sha256,
            "metric_key": self.metric_key,
        }


class ModelCache:
    """Models shared between metrics of one run (one CLIP ViT-L/14 serves two metrics).

    Keyed by the model's full identity (id, revision, profile, device), never by name alone.
    One instance per run, passed to every metric: no module-level state.
    """

    def __init__(self) -> None:
        self._models: dict[tuple, Any] = {}

    def get(self, key: tuple, build: Callable[[], Any]) -> Any:
        if key not in self._models:
            self._models[key] = build()
        return self._models[key]

    def drop(self, key: tuple) -> None:
        """Forget one model (the next `get` builds it again)."""
        self._models.pop(key, None)

    def clear(self) -> None:
        self._models.clear()


class Metric(ABC):
    """Base class of metrics.

    Subclasses set `name`, `higher_is_better`, `level` ('entity' or 'image'), `defaults` (every
    option with its documented value) and implement `load` and `score_batch`.
    `model` injects a ready model (tests pass tiny or fake ones); `cache` shares models.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    level: ClassVar[str] = "image"
    defaults: ClassVar[Mapping[str, Any]] = {}
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    """How tables print the metric, as papers do ("mIoU", "Entity CLIP"); empty: the name."""
    """The code its defaults follow: "owner/repo@commit: path" (several joined by "; ")."""
    in_default_run: ClassVar[bool] = True
    """Part of `run` when no list is given (False for plugins that need a file or opt-in)."""
    scale: ClassVar[float] = 1.0
    """Factor applied when reporting (100 for rates and IoUs reported in %)."""

    def __init__(
        self,
        profile: str = "full",
        model: Any = None,
        device: str | None = None,
        cache: ModelCache | None = None,
        batch_size: int = 8,
        **options: Any,
    ):
        check_plugin_options("metric", self.name, profile, self.defaults, options)
        self.profile = profile
        self.device = device
        self.cache = cache if cache is not None else ModelCache()
        self.batch_size = batch_size
        self.options: dict[str, Any] = {**self.defaults, **options}
        self.model = model
        self._rows: list[ScoreRow] = []

    def title(self) -> str:
        """The metric as tables print it: `display_name` (else its name); options may add to it."""
        return self.display_name or self.name

    def model_ids(self) -> dict[str, str]:
        """Hub ids and revisions of the models this metric uses."""
        return {}

    def identity(self) -> dict[str, Any]:
        """Everything that determines the metric's value for a given image."""
        return {
            "metric": self.name,
            "profile": self.profile,
            "models": self.model_ids(),
            "options": dict(sorted(self.options.items())),
            "injected_model": None if self.model is None or self._owns_model else type(self.model).__name__,
        }

    _owns_model = False

    @property
    def key(self) -> str:
        return content_hash(self.identity())

    def resolve_device(self) -> str:
        if self.device:
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def ensure_loaded(self) -> None:
        if self.model is None:
            self.model = self.load()
            self._owns_model = True

    def release(self) -> None:
        """Drop the model this metric loaded (an injected one stays); called when its scoring
        is done. Metrics with large private models also drop them from the shared cache."""
        if self._owns_model:
            self.model = None
            self._owns_model = False

    @abstractmethod
    def load(self) -> Any:
        """Build or load the model (tiny random for the `tiny` profile) and return it."""

    @abstractmethod
    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        """Rows for a batch of images (the model is loaded)."""

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        """Score items in batches of `batch_size`; rows carry this metric's key."""
        self.ensure_loaded()
        rows: list[ScoreRow] = []
        for start in range(0, len(items), max(1, self.batch_size)):
            rows.extend(self.score_batch(items[start : start + self.batch_size]))
        key = self.key
        return [ScoreRow(**{**r.__dict__, "metric_key": key}) for r in rows]

    @classmethod
    def aggregate(cls, rows: Any, layouts: Mapping[str, Layout]) -> float | None:
        """A run-level value from one generator's valid rows (a DataFrame), for metrics that are
        not a mean of per-row values (COCO AP); None means 'the report averages the rows'."""
        return None

    # torchmetrics-style accumulation, for use outside the harness
    def update(self, items: Sequence[ScoreItem]) -> None:
        self._rows.extend(self.score(items))

    def compute(self) -> float:
        """Mean of the valid values accumulated so far (NaN when there are none)."""
        values = [r.value for r in self._rows if r.status == "ok" and not math.isnan(r.value)]
        return sum(values) / len(values) if values else math.nan

    def reset(self) -> None:
        self._rows.clear()


def row(metric: Metric, item: ScoreItem, value: float, entity_index: int = IMAGE_LEVEL,
        status: str = "ok", **detail: Any) -> ScoreRow:
    """A row for `item`, filled with the item's identifying fields."""
    return ScoreRow(
        metric=metric.name,
        generator=item.generator,
        layout_id=item.layout.id,
        seed_index=item.seed_index,
        seed=item.seed,
        entity_index=entity_index,
        value=float(value),
        status=status,
        detail=detail,
        image_sha256=item.image_sha256,
    )
