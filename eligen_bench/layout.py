"""The data model of a layout: entities with a prompt, a box and an optional mask.

Everything is validated on construction, so a `Layout` that exists is a good one. Errors name
the layout id and the field, and say what is allowed.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eligen_bench.errors import InputError

# fullmatch, not `$`: `$` also matches before a trailing newline.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MIN_SIDE, MAX_SIDE = 16, 8192
_BREAKING = {"Cc", "Zl", "Zp"}
"""Unicode categories refused in text: control characters and line/paragraph separators."""
MAX_TEXT = 10_000
"""Most characters of one prompt, category or source string."""


def check_id(value: Any, *, where: str | None, what: str = "id") -> str:
    """A name used as a file name: letters, digits, '.', '_', '-'; no path tricks."""
    if not isinstance(value, str) or not _SAFE_ID.fullmatch(value) or ".." in value:
        raise InputError(
            f"{short_repr(value)} is not a safe name (1-128 of A-Z a-z 0-9 . _ -, starting with a letter "
            "or digit, no '..')",
            where=where,
            field=what,
        )
    return value


def short_repr(value: Any, limit: int = 60) -> str:
    """repr() cut to `limit` characters, so a hostile value cannot flood an error line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_text(value: Any, *, where: str | None, what: str, optional: bool = False) -> str | None:
    """A non-empty string of at most MAX_TEXT characters without control characters.

    Control characters (newlines, escapes, NUL) in a prompt or name would break the one-line
    error messages, file names and report tables that show it.
    """
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError("must be a non-empty string" + (" or absent" if optional else ""), where=where, field=what)
    if len(value) > MAX_TEXT:
        raise InputError(f"is {len(value)} characters long; at most {MAX_TEXT}", where=where, field=what)
    bad = next((c for c in value if unicodedata.category(c) in _BREAKING), None)
    if bad is not None:
        raise InputError(f"contains the control character {bad!r}", where=where, field=what)
    surrogate = next((c for c in value if unicodedata.category(c) == "Cs"), None)
    if surrogate is not None:  # JSON's "\ud800" alone: no character, and no UTF-8 can hold it
        raise InputError(f"contains the lone surrogate {surrogate!r} (not valid Unicode text)", where=where, field=what)
    return value


@dataclass(frozen=True)
class Mask:
    """A binary mask stored as COCO compressed RLE (column-major, as pycocotools writes it)."""

    height: int
    """Rows of the mask; equals the layout's height."""
    width: int
    """Columns of the mask; equals the layout's width."""
    counts: str
    """The compressed RLE string of pycocotools."""

    @classmethod
    def from_array(cls, array: np.ndarray) -> Mask:
        from pycocotools import mask as mask_utils

        binary = np.asfortranarray(np.asarray(array).astype(bool).astype(np.uint8))
        if binary.ndim != 2:
            raise InputError(f"a mask must be 2-D, got shape {binary.shape}", field="mask")
        rle = mask_utils.encode(binary)
        return cls(int(binary.shape[0]), int(binary.shape[1]), rle["counts"].decode("ascii"))

    def to_array(self) -> np.ndarray:
        """The mask as a bool array of shape (height, width)."""
        from pycocotools import mask as mask_utils

        rle = {"size": [self.height, self.width], "counts": self.counts.encode("ascii")}
        return mask_utils.decode(rle).astype(bool)

    def to_dict(self) -> dict[str, Any]:
        return {"size": [self.height, self.width], "counts": self.counts}

    @classmethod
    def from_dict(cls, data: Any, *, where: str) -> Mask:
        if not isinstance(data, Mapping) or "size" not in data or "counts" not in data:
            raise InputError(
                "expected a COCO RLE object {'size': [h, w], 'counts': str}", where=where, field="mask"
            )
        size = data["size"]
        if not (isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2
                and all(isinstance(s, int) and not isinstance(s, bool) and MIN_SIDE <= s <= MAX_SIDE
                        for s in size)):
            raise InputError(f"size must be [height, width] integers in [{MIN_SIDE}, {MAX_SIDE}], got {size!r}",
                             where=where, field="mask")
        counts = data["counts"]
        if not isinstance(counts, str) or not counts.isascii():
            # pycocotools encodes the string as ASCII: anything else crashes at decode time.
            raise InputError("counts must be a compressed RLE string (ASCII)", where=where, field="mask")
        runs = _rle_runs(counts)
        if runs is None or sum(runs) != size[0] * size[1]:
            # pycocotools does not check: a corrupt string decodes to garbage.
            raise InputError(f"corrupt RLE: runs do not cover the {size[0]}x{size[1]} mask", where=where, field="mask")
        mask = cls(size[0], size[1], counts)
        if sum(runs[1::2]) == 0:
            raise InputError("mask is empty (no pixel set)", where=where, field="mask")
        return mask


def _rle_runs(counts: str) -> list[int] | None:
    """Run lengths of a COCO compressed RLE string, or None when it is malformed."""
    runs: list[int] = []
    if not counts.isascii():
        return None
    data = counts.encode("ascii")
    position = 0
    while position < len(data):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(data) or not 48 <= data[position] < 48 + 64:
                return None
            chunk = data[position] - 48
            value |= (chunk & 0x1F) << (5 * shift)
            more = bool(chunk & 0x20)
            position += 1
            shift += 1
            if not more and chunk & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return None
        runs.append(value)
    return runs if runs else None


@dataclass(frozen=True)
class Entity:
    """One controlled entity: what it is (prompt, optional description) and where it goes (bbox,
    optional mask)."""

    prompt: str
    """The entity's own short prompt, e.g. 'a red umbrella' (LayoutSAM-Eval: the region caption)."""
    bbox: tuple[float, float, float, float]
    """Normalised xyxy box, 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1."""
    mask: Mask | None = None
    """Optional arbitrary-shape region of the layout's size; the box encloses it."""
    category: str | None = None
    """Optional COCO class name, used by the detector metrics."""
    description: str | None = None
    """Optional detailed caption of the entity (LayoutSAM-Eval: the detail region caption): the
    text of generators whose reference feeds detailed captions, and of the attribute questions
    of the LayoutSAM-Eval judge. Absent from a layout's JSON when None, so suites without
    descriptions keep their content hash."""

    def __post_init__(self) -> None:
        check_text(self.prompt, where=None, what="prompt")
        object.__setattr__(self, "bbox", _check_bbox(self.bbox))
        check_text(self.category, where=None, what="category", optional=True)
        check_text(self.description, where=None, what="description", optional=True)

    def region(self, height: int, width: int) -> np.ndarray:
        """The entity's region as a bool (height, width) array: its mask if it has one, else its box.

        A mask of another size is resized with nearest sampling at pixel centres (PIL NEAREST).
        """
        if self.mask is not None:
            array = self.mask.to_array()
            if array.shape != (height, width):
                array = resize_region(array, height, width, "pil-nearest")
            return array
        return box_region(self.bbox, height, width)

    def source_region(self, height: int, width: int) -> np.ndarray:
        """What a method's reference code resizes to its grid: the mask as stored (at its own
        size), else the box drawn at the generated image's size (`height` x `width`).

        Callers resize it to their grid at once and keep only the small result, so no buffer of
        the layout's size outlives one entity.
        """
        if self.mask is not None:
            return self.mask.to_array()
        return box_region(self.bbox, height, width)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"prompt": self.prompt, "bbox": list(self.bbox)}
        if self.mask is not None:
            data["mask"] = self.mask.to_dict()
        if self.category is not None:
            data["category"] = self.category
        if self.description is not None:
            data["description"] = self.description
        return data


RESIZE_RULES = ("pil-nearest", "nearest-exact", "nearest")
"""Nearest-neighbour rules of the reference codes: PIL's NEAREST (pixel centres, double
precision), torch's ``nearest-exact`` (pixel centres, float32 scale) and torch's legacy
``nearest`` (top-left corners, float32 scale)."""


def resize_index(n_in: int, n_out: int, rule: str) -> np.ndarray:
    """The source index each of `n_out` output pixels takes along one axis of `n_in` pixels."""
    if rule == "pil-nearest":
        # Pillow's NEAREST resize is an affine transform that starts at half a step and adds
        # the step in double precision pixel by pixel; the same running sum keeps its rounding.
        step = n_in / n_out
        src = np.floor(np.cumsum(np.concatenate([[step * 0.5], np.full(n_out - 1, step)])))
    elif rule in ("nearest-exact", "nearest"):
        # ATen's upsample_nearest: a float32 scale in / out, floorf of (x + 0.5) * scale for
        # nearest-exact and of x * scale for nearest, clamped to the last input index.
        scale = np.float32(n_in) / np.float32(n_out)
        offset = np.float32(0.5 if rule == "nearest-exact" else 0.0)
        src = np.floor((np.arange(n_out, dtype=np.float32) + offset) * scale)
    else:
        raise ValueError(f"unknown resize rule {rule!r}; choose one of {RESIZE_RULES}")
    return np.minimum(src.astype(np.int64), n_in - 1)


def resize_region(region: np.ndarray, height: int, width: int, rule: str) -> np.ndarray:
    """A bool region resized to `height` x `width` by nearest sampling with `rule`."""
    rows = resize_index(region.shape[0], height, rule)
    cols = resize_index(region.shape[1], width, rule)
    return np.asarray(region, dtype=bool)[np.ix_(rows, cols)]


def box_region(bbox: Sequence[float], height: int, width: int) -> np.ndarray:
    """The pixels whose centres lie inside the box (x1 <= centre < x2); at least one pixel.

    For a box on integer pixel coordinates this is the reference's ``mask[y1:y2, x1:x2] = 1``
    (antonioo-c/Regional-Prompting-FLUX@5ce6e6e, infer_flux_regional.py). A box too thin to hold
    a pixel centre takes the pixel under its centre, so every valid box has a region.
    """
    x1, y1, x2, y2 = bbox
    rows = _box_span(y1, y2, height)
    cols = _box_span(x1, x2, width)
    region = np.zeros((height, width), dtype=bool)
    region[rows, cols] = True
    return region


def _box_span(low: float, high: float, n: int) -> slice:
    """Pixels i of an axis of `n` with low * n <= i + 0.5 < high * n (else the one under the centre)."""
    start = max(0, math.ceil(low * n - 0.5))
    stop = min(n, math.ceil(high * n - 0.5))
    if stop <= start:
        start = min(n - 1, math.floor((low + high) / 2 * n))
        stop = start + 1
    return slice(start, stop)


def _check_bbox(bbox: Any) -> tuple[float, float, float, float]:
    if not isinstance(bbox, Sequence) or isinstance(bbox, str) or len(bbox) != 4:
        raise InputError(f"expected 4 numbers [x1, y1, x2, y2], got {bbox!r}", field="bbox")
    values = []
    for v in bbox:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"expected finite numbers, got {bbox!r}", field="bbox")
        values.append(float(v))
    x1, y1, x2, y2 = values
    if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
        raise InputError(
            f"{values} is out of range: need normalised xyxy with 0 <= x1 < x2 <= 1 and "
            "0 <= y1 < y2 <= 1",
            field="bbox",
        )
    return (x1, y1, x2, y2)


@dataclass(frozen=True)
class Layout:
    """A global prompt and the entities to place: one benchmark item."""

    id: str
    """Unique within a suite; safe as a file name."""
    prompt: str
    """The global prompt describing the whole image."""
    entities: tuple[Entity, ...] = ()
    """Zero or more entities; zero is plain text-to-image."""
    width: int = 1024
    """Canvas width in pixels the boxes and masks refer to."""
    height: int = 1024
    """Canvas height in pixels."""
    source: str | None = None
    """Where the layout came from, e.g. 'coco2017val:397133'."""
    init_image: str | None = None
    """Input image for inpainting (entities are painted into it): a path, relative to the suite
    file's folder or absolute. Only generators with the `inpainting` capability take it."""
    origin: str | None = field(default=None, compare=False)
    """Where it was read from ('suite.jsonl:12'), for error messages; not part of its content."""

    @property
    def where(self) -> str:
        """The layout's place for error messages: file, line and id when it came from a file."""
        return f"{self.origin}: layout {short_repr(self.id)}" if self.origin else f"layout {short_repr(self.id)}"

    def __post_init__(self) -> None:
        where = self.where
        check_id(self.id, where=where)
        check_text(self.init_image, where=where, what="init_image", optional=True)
        check_text(self.prompt, where=where, what="prompt")
        check_text(self.source, where=where, what="source", optional=True)
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not MIN_SIDE <= value <= MAX_SIDE:
                raise InputError(f"must be an integer in [{MIN_SIDE}, {MAX_SIDE}], got {value!r}", where=where, field=name)
        object.__setattr__(self, "entities", tuple(self.entities))
        for i, entity in enumerate(self.entities):
            if not isinstance(entity, Entity):
                raise InputError("must be Entity objects", where=where, field=f"entities[{i}]")
            if entity.mask is not None and (entity.mask.height, entity.mask.width) != (self.height, self.width):
                raise InputError(
                    f"mask is {entity.mask.height}x{entity.mask.width} (HxW), the layout is "
                    f"{self.height}x{self.width}",
                    where=where,
                    field=f"entities[{i}].mask",
                )

    @property
    def has_masks(self) -> bool:
        return any(e.mask is not None for e in self.entities)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "prompt": self.prompt,
            "width": self.width,
            "height": self.height,
            "entities": [e.to_dict() for e in self.entities],
        }
        if self.source is not None:
            data["source"] = self.source
        if self.init_image is not None:
            data["init_image"] = self.init_image
        return data

    @classmethod
    def from_dict(cls, data: Any, *, where: str | None = None) -> Layout:
        """Build and validate a layout from parsed JSON; errors name `where`, the id and the field.

        `where` ('suite.jsonl:12') is kept as the layout's `origin`.
        """
        origin = where
        where = where or "layout"
        if not isinstance(data, Mapping):
            raise InputError(f"expected a JSON object, got {type(data).__name__}", where=where)
        layout_id = data.get("id")
        for key in ("id", "prompt"):
            if key not in data:
                raise InputError("missing required field", where=where, field=key)
        unknown = set(data) - {"id", "prompt", "entities", "width", "height", "source", "init_image"}
        if unknown:
            raise InputError(f"unknown field(s) {sorted(unknown)}", where=where)
        where = f"{where}: layout {short_repr(layout_id)}"
        raw_entities = data.get("entities", [])
        if not isinstance(raw_entities, list):
            raise InputError("must be a list", where=where, field="entities")
        entities = [_entity_from_dict(raw, where=where, index=i) for i, raw in enumerate(raw_entities)]
        try:
            return cls(
                id=layout_id,
                prompt=data["prompt"],
                entities=tuple(entities),
                width=data.get("width", 1024),
                height=data.get("height", 1024),
                source=data.get("source"),
                init_image=data.get("init_image"),
                origin=origin,
            )
        except InputError as exc:
            raise InputError(exc.message, where=where, field=exc.field) from None


def _entity_from_dict(raw: Any, *, where: str, index: int) -> Entity:
    prefix = f"entities[{index}]"
    if not isinstance(raw, Mapping):
        raise InputError("expected a JSON object", where=where, field=prefix)
    unknown = set(raw) - {"prompt", "bbox", "mask", "category", "description"}
    if unknown:
        raise InputError(f"unknown field(s) {sorted(unknown)}", where=where, field=prefix)
    for key in ("prompt", "bbox"):
        if key not in raw:
            raise InputError("missing required field", where=where, field=f"{prefix}.{key}")
    try:
        mask = None if raw.get("mask") is None else Mask.from_dict(raw["mask"], where=where)
    except InputError as exc:
        raise InputError(exc.message, where=where, field=f"{prefix}.mask") from None
    try:
        return Entity(prompt=raw["prompt"], bbox=raw["bbox"], mask=mask, category=raw.get("category"),
                      description=raw.get("description"))
    except InputError as exc:
        raise InputError(exc.message, where=where, field=f"{prefix}.{exc.field}") from None


_STAND_IN = {"id": "x", "prompt": "x"}
"""A valid layout that one field at a time is put into, to find every problem of a line."""
_STAND_IN_ENTITY = {"prompt": "x", "bbox": [0.0, 0.0, 1.0, 1.0]}
_ENTITY_FIELDS = ("prompt", "bbox", "mask", "category", "description")


def layout_problems(data: Any, *, where: str) -> list[InputError]:
    """Every problem of one layout object, each once (`Layout.from_dict` raises the first only).

    Each field is checked on its own inside a valid stand-in layout (each entity field inside a
    valid stand-in entity), so one bad field never hides another; a problem only the whole layout
    shows (a mask of another size than the layout) is still found by the full check.
    """
    try:
        Layout.from_dict(data, where=where)
        return []
    except InputError as first:
        if not isinstance(data, Mapping):
            return [first]
        problems = _field_problems(data, where)
        return problems or [first]


def _field_problems(data: Mapping, where: str) -> list[InputError]:
    here = f"{where}: layout {short_repr(data.get('id'))}"
    problems = [InputError("missing required field", where=where, field=key) for key in ("id", "prompt")
                if key not in data]
    unknown = set(data) - {"id", "prompt", "entities", "width", "height", "source", "init_image"}
    if unknown:
        problems.append(InputError(f"unknown field(s) {sorted(unknown)}", where=where))
    size = {}
    for key in ("id", "prompt", "width", "height", "source", "init_image"):
        if key in data:
            found = _first_problem({**_STAND_IN, key: data[key]}, where)
            problems += [InputError(p.message, where=here, field=p.field) for p in found]
            if key in ("width", "height") and not found:
                size[key] = data[key]
    entities = data.get("entities", [])
    if not isinstance(entities, list):
        return [*problems, InputError("must be a list", where=here, field="entities")]
    # A mask is checked against the layout's size only when that size is valid itself.
    size_ok = all(key in size or key not in data for key in ("width", "height"))
    for index, raw in enumerate(entities):
        problems += _entity_problems(raw, index, size if size_ok else None, here)
    return problems


def _entity_problems(raw: Any, index: int, size: dict | None, here: str) -> list[InputError]:
    prefix = f"entities[{index}]"
    if not isinstance(raw, Mapping):
        return [InputError("expected a JSON object", where=here, field=prefix)]
    problems = [InputError("missing required field", where=here, field=f"{prefix}.{key}")
                for key in ("prompt", "bbox") if key not in raw]
    unknown = set(raw) - set(_ENTITY_FIELDS)
    if unknown:
        problems.append(InputError(f"unknown field(s) {sorted(unknown)}", where=here, field=prefix))
    for key in _ENTITY_FIELDS:
        if key in raw and (key != "mask" or size is not None):
            entity = {**_STAND_IN_ENTITY, key: raw[key]}
            for p in _first_problem({**_STAND_IN, **(size or {}), "entities": [entity]}, here):
                problems.append(InputError(p.message, where=here, field=(p.field or "").replace("entities[0]", prefix)))
    return problems


def _first_problem(data: dict, where: str) -> list[InputError]:
    try:
        Layout.from_dict(data, where=where)
    except InputError as exc:
        return [exc]
    return []
