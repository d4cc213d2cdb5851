"""The filtered COCO 2017 val suite, built from the official annotation files.

The filter is the one LostGAN introduced and LayoutDiffusion reuses (`filter_mode='LostGAN'`
of LayoutDiffusion's `CocoSceneGraphDataset`): drop crowd objects and the COCO-Stuff class
"other", keep objects whose *box* covers more than 2% of the image, then keep images with 3 to
8 of the remaining objects. Every rule is an option of `CocoFilter`, so the variants behind the
published counts can be rebuilt (see `CocoFilter.layoutdiffusion` and `CocoFilter.eligen`).

Which settings give which published count (believed, not verified against the real files):
- 3097 images (LostGAN, LayoutDiffusion): `CocoFilter.layoutdiffusion()`: things + stuff counted
  and kept, crowd *objects* dropped, "other" dropped, box area > 2% first, then 3-8 objects,
  only images present in the stuff file. LayoutDiffusion's config also restricts to the
  deprecated COCO-Stuff 2017 challenge val ids, believed to be all 5000 val2017 images; pass them
  as `image_ids` to reproduce that step exactly.
- 2830 pairs (EliGen): `CocoFilter.eligen()`: the same image filter, but only the 80 thing
  classes become entities and layouts without any thing are dropped. The EliGen paper cites
  LayoutDiffusion and evaluates with a COCO detector (thing classes only); its user study samples
  layouts with 1-3 entities, impossible if things alone had to number 3-8.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from eligen_bench.errors import InputError
from eligen_bench.layout import Entity, Layout, Mask
from eligen_bench.suite import Suite

INSTANCES_FILE = "instances_val2017.json"
CAPTIONS_FILE = "captions_val2017.json"
STUFF_FILE = "stuff_val2017.json"
CAPTION_CHOICES = ("first", "shortest", "longest")



@dataclass(frozen=True)
class CocoFilter:
    """The rules that turn COCO 2017 val into layouts. Defaults: the LostGAN rules, things only."""

    min_object_area: float = 0.02
    """Keep objects whose box (w*h, not the mask area) covers strictly more than this fraction."""
    min_objects: int = 3
    """Keep images with at least this many counted objects."""
    max_objects: int = 8
    """Keep images with at most this many counted objects."""
    include_stuff: bool = False
    """Read `stuff_val2017.json`: stuff objects count towards min/max_objects (LostGAN does)."""
    stuff_entities: bool = True
    """With stuff included, also turn the stuff objects into entities (False: they only count)."""
    stuff_images_only: bool = True
    """With stuff included, keep only images present in the stuff file (LostGAN `stuff_only`)."""
    drop_crowd: bool = True
    """Drop iscrowd=1 objects (LostGAN); False keeps them (the older sg2im filter)."""
    drop_crowd_images: bool = False
    """Drop every image that has any iscrowd=1 object (stricter than `drop_crowd`)."""
    drop_other: bool = True
    """Drop the COCO-Stuff class "other" (id 183), noisy per sg2im."""
    count_before_area_filter: bool = False
    """Count objects for min/max_objects before the area filter (LostGAN counts after it)."""
    min_entities: int = 0
    """Drop layouts left with fewer entities (matters when stuff counts but is no entity)."""
    require_mask: bool = False
    """Drop objects whose segmentation is missing or empty, before counting."""
    instance_whitelist: tuple[str, ...] | None = None
    """Thing class names to use; None uses all 80."""
    stuff_whitelist: tuple[str, ...] | None = None
    """Stuff class names to use; None uses all."""
    image_ids: tuple[int, ...] | None = None
    """Only these image ids (e.g. a published split); None uses all images."""
    caption: str = "first"
    """Global prompt: 'first' (lowest caption annotation id), 'shortest' or 'longest' caption."""
    masks: bool = True
    """Keep each object's segmentation as the entity mask (compressed RLE at the image size)."""

    def __post_init__(self) -> None:
        where = "coco filter"
        if not 0.0 <= self.min_object_area < 1.0:
            raise InputError(f"must be in [0, 1), got {self.min_object_area}", where=where, field="min_object_area")
        if not 0 <= self.min_objects <= self.max_objects:
            raise InputError(
                f"need 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}",
                where=where,
                field="min_objects",
            )
        if self.min_entities < 0:
            raise InputError("must be >= 0", where=where, field="min_entities")
        if self.caption not in CAPTION_CHOICES:
            raise InputError(f"must be one of {CAPTION_CHOICES}, got {self.caption!r}", where=where, field="caption")
        for name in ("instance_whitelist", "stuff_whitelist", "image_ids"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def things_only(cls, **changes: Any) -> CocoFilter:
        """LostGAN rules on the instance file alone (no stuff file needed)."""
        return replace(cls(), **changes)

    @classmethod
    def layoutdiffusion(cls, **changes: Any) -> CocoFilter:
        """LostGAN / LayoutDiffusion evaluation set: things + stuff, stuff as entities, boxes only.

        Believed to give the 3097 val2017 images LostGAN and LayoutDiffusion report. Boxes only:
        LayoutDiffusion conditions on boxes and class labels, never on segmentations.
        """
        return replace(cls(include_stuff=True, stuff_entities=True, masks=False), **changes)

    @classmethod
    def eligen(cls, **changes: Any) -> CocoFilter:
        """Our best reading of EliGen's 2830 pairs: the LayoutDiffusion image set, things only.

        Stuff objects count towards the 3-8 rule but are not entities (the paper's detector
        metric only knows the 80 thing classes), and layouts left without an entity are dropped.
        Unverified: the paper gives the count, not the rules.

        Boxes only: the paper's COCO comparison localises entities by boxes for every method
        ("our model converts bounding boxes to masks for input, while others utilize bounding
        box coordinates"), so masks would give EliGen and MultiDiffusion an input GLIGEN never
        sees. `masks=True` is the arbitrary-mask track, a different benchmark.
        """
        return replace(cls(include_stuff=True, stuff_entities=False, min_entities=1, masks=False), **changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("instance_whitelist", "stuff_whitelist", "image_ids"):
            if data[name] is not None:
                data[name] = list(data[name])
        return data

    def changed(self) -> dict[str, Any]:
        """The options that differ from the defaults, for the suite's description."""
        default = CocoFilter()
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)}


def build_coco_suite(
    annotations_dir: Path,
    options: CocoFilter | None = None,
    *,
    stuff_file: Path | None = None,
    name: str = "coco2017val",
    source_notes: tuple[str, ...] = (),
) -> Suite:
    """Apply `options` to the val2017 annotation files in `annotations_dir` and return the suite.

    Layouts follow the image order of `instances_val2017.json` (the order the reference loaders
    iterate in); entities follow the annotation order, things before stuff. `source_notes`
    (where the files came from, their digests) are appended to the suite's notes.
    """
    options = options or CocoFilter()
    annotations_dir = Path(annotations_dir)
    instances = _load_json(annotations_dir / INSTANCES_FILE, ("images", "annotations", "categories"))
    captions = _load_json(annotations_dir / CAPTIONS_FILE, ("annotations",))
    stuff = None
    if options.include_stuff:
        stuff = _load_json(Path(stuff_file) if stuff_file else annotations_dir / STUFF_FILE, ("annotations", "categories"))
    layouts, skipped, crowded = _build_layouts(instances, captions, stuff, options)
    notes = _notes(options, skipped) + _crowd_notes(options, len(layouts), crowded)
    notes += [_digest_note(d) for d in (instances, captions, stuff) if d is not None] + list(source_notes)
    return Suite(
        name=name,
        version="1",
        layouts=tuple(layouts),
        description=_description(options),
        notes=tuple(notes),
    )


def crowd_free_count(suite: Suite) -> int | None:
    """The layout count under the other reading of the crowd rule (every image holding a crowd
    object dropped), as the builder recorded it in the suite's notes; None when not recorded."""
    for note in suite.notes:
        if note.startswith(CROWD_NOTE_PREFIX):
            return int(note.removeprefix(CROWD_NOTE_PREFIX).split()[0])
    return None


def _digest_note(data: dict) -> str:
    """Which file, by content, the suite was built from."""
    from eligen_bench.hashing import file_sha256

    return f"built from {Path(data['_path']).name} (sha256 {file_sha256(data['_path'])})"


def _load_json(path: Path, keys: tuple[str, ...]) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        from eligen_bench.suites.coco_download import offline_help

        raise InputError(f"annotation file not found; {offline_help(path.name == STUFF_FILE)}",
                         where=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read annotation file ({exc})", where=str(path)) from None
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in keys):
        raise InputError(f"not a COCO annotation file: needs the lists {list(keys)}", where=str(path))
    data["_path"] = str(path)
    return data


@dataclass(frozen=True)
class _Object:
    """One candidate object: its annotation, class name and whether it is a stuff class."""

    ann: dict
    name: str
    is_stuff: bool
    source: str
    xywh: tuple[float, float, float, float]


def _build_layouts(
    instances: dict, captions: dict, stuff: dict | None, options: CocoFilter
) -> tuple[list[Layout], dict[str, int], int]:
    """The layouts, the images dropped by reason, and how many kept images hold a crowd object."""
    images = _images(instances)
    objects: dict[int, list[_Object]] = defaultdict(list)
    _add_objects(objects, instances, images, is_stuff=False, whitelist=options.instance_whitelist)
    stuff_image_ids: set[int] | None = None
    if stuff is not None:
        _add_objects(objects, stuff, images, is_stuff=True, whitelist=options.stuff_whitelist)
        stuff_image_ids = {int(a["image_id"]) for a in stuff["annotations"]}
    texts = _captions(captions)
    wanted = None if options.image_ids is None else set(options.image_ids)
    layouts: list[Layout] = []
    skipped = {"no caption": 0}
    crowded = 0
    for image_id, image in images.items():
        if wanted is not None and image_id not in wanted:
            continue
        if stuff_image_ids is not None and options.stuff_images_only and image_id not in stuff_image_ids:
            continue
        kept = _filter_objects(objects.get(image_id, []), image, options)
        if kept is None:
            continue
        if image_id not in texts:
            skipped["no caption"] += 1
            continue
        layouts.append(_layout(image_id, image, kept, _choose_caption(texts[image_id], options.caption), options))
        crowded += any(_is_crowd(o) for o in objects.get(image_id, []))
    return layouts, skipped, crowded


def _images(instances: dict) -> dict[int, dict]:
    images: dict[int, dict] = {}
    for index, image in enumerate(instances["images"]):
        try:
            image_id, width, height = int(image["id"]), int(image["width"]), int(image["height"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"image record {index} lacks id/width/height ({exc})", where=instances["_path"]) from None
        images[image_id] = {"width": width, "height": height}
    return images


def _add_objects(
    objects: dict[int, list[_Object]],
    data: dict,
    images: dict[int, dict],
    *,
    is_stuff: bool,
    whitelist: tuple[str, ...] | None,
) -> None:
    names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    allowed = None if whitelist is None else set(whitelist)
    for ann in data["annotations"]:
        try:
            image_id, category = int(ann["image_id"]), int(ann["category_id"])
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"annotation {ann.get('id')!r} lacks image_id/category_id/bbox ({exc})", where=data["_path"]
            ) from None
        if image_id not in images:
            raise InputError(f"annotation {ann.get('id')!r} names unknown image {image_id}", where=data["_path"])
        if category not in names:
            raise InputError(f"annotation {ann.get('id')!r} names unknown category {category}", where=data["_path"])
        name = names[category]
        if allowed is not None and name not in allowed:
            continue
        objects[image_id].append(_Object(ann, name, is_stuff, data["_path"], (x, y, w, h)))


def _filter_objects(candidates: list[_Object], image: dict, options: CocoFilter) -> list[_Object] | None:
    """The LostGAN per-image rules; None when the image is dropped, else the entity objects."""
    if options.drop_crowd_images and any(_is_crowd(o) for o in candidates):
        return None
    objects = [
        o
        for o in candidates
        if not (options.drop_crowd and _is_crowd(o))
        and not (options.drop_other and o.name == "other")
        and not (options.require_mask and _rle(o, image) is None)
    ]
    image_area = image["width"] * image["height"]
    large = [o for o in objects if o.xywh[2] * o.xywh[3] / image_area > options.min_object_area]
    counted = objects if options.count_before_area_filter else large
    if not options.min_objects <= len(counted) <= options.max_objects:
        return None
    kept = [o for o in large if options.stuff_entities or not o.is_stuff]
    kept = [o for o in kept if _bbox(o.xywh, image) is not None]
    if len(kept) < options.min_entities:
        return None
    return kept


def _is_crowd(obj: _Object) -> bool:
    return obj.ann.get("iscrowd", 0) == 1


def _captions(captions: dict) -> dict[int, list[tuple[int, str]]]:
    texts: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for ann in captions["annotations"]:
        try:
            text = " ".join(str(ann["caption"]).split())
            texts[int(ann["image_id"])].append((int(ann["id"]), text))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"caption annotation {ann.get('id')!r} is malformed ({exc})", where=captions["_path"]) from None
    return {image_id: sorted(t for t in items if t[1]) for image_id, items in texts.items() if any(t[1] for t in items)}


def _choose_caption(items: list[tuple[int, str]], rule: str) -> str:
    """`items` sorted by annotation id; ties in length go to the lowest id, so the choice is stable."""
    if rule == "shortest":
        return min(items, key=lambda t: (len(t[1]), t[0]))[1]
    if rule == "longest":
        return min(items, key=lambda t: (-len(t[1]), t[0]))[1]
    return items[0][1]


def _bbox(xywh: tuple[float, float, float, float], image: dict) -> tuple[float, float, float, float] | None:
    """COCO pixel xywh -> normalised xyxy clamped to the image; None when nothing is left."""
    x, y, w, h = xywh
    width, height = image["width"], image["height"]
    x1, y1 = min(max(x / width, 0.0), 1.0), min(max(y / height, 0.0), 1.0)
    x2, y2 = min(max((x + w) / width, 0.0), 1.0), min(max((y + h) / height, 0.0), 1.0)
    if not (x1 < x2 and y1 < y2):
        return None
    return (x1, y1, x2, y2)


def _rle(obj: _Object, image: dict) -> dict | None:
    """The object's segmentation as compressed RLE at the image size; None when absent or empty."""
    from pycocotools import mask as mask_utils

    seg = obj.ann.get("segmentation")
    height, width = image["height"], image["width"]
    where = f"{obj.source}: annotation {obj.ann.get('id')!r}"
    try:
        if isinstance(seg, list):
            polygons = [p for p in seg if isinstance(p, list) and len(p) >= 6]
            if not polygons:
                return None
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
            if list(seg["size"]) != [height, width]:
                raise InputError(f"segmentation size {seg['size']} is not the image's {[height, width]}", where=where)
            counts = seg["counts"]
            rle = mask_utils.frPyObjects(seg, height, width) if isinstance(counts, list) else {
                "size": [height, width],
                "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
            }
        else:
            return None
        area = int(mask_utils.area(rle))
    except InputError:
        raise
    except Exception as exc:  # pycocotools raises assorted errors on malformed input
        raise InputError(f"malformed segmentation ({exc})", where=where) from None
    return rle if area > 0 else None


def entity_prompt(name: str) -> str:
    """A readable prompt from a class name: COCO-Stuff names like 'sky-other' or
    'wall-concrete' become 'sky' and 'wall concrete'; thing names are used as they are."""
    return name.removesuffix("-other").removesuffix("-merged").replace("-", " ")


def _layout(image_id: int, image: dict, kept: list[_Object], caption: str, options: CocoFilter) -> Layout:
    entities = []
    for obj in kept:
        mask = None
        if options.masks:
            rle = _rle(obj, image)
            if rle is not None:
                counts = rle["counts"]
                mask = Mask(image["height"], image["width"], counts.decode("ascii") if isinstance(counts, bytes) else counts)
        bbox = _bbox(obj.xywh, image)
        assert bbox is not None  # _filter_objects dropped empty boxes
        entities.append(Entity(prompt=entity_prompt(obj.name), bbox=bbox, mask=mask, category=obj.name))
    return Layout(
        id=f"coco-{image_id}",
        prompt=caption,
        entities=tuple(entities),
        width=image["width"],
        height=image["height"],
        source=f"coco2017val:{image_id}",
    )


def _description(options: CocoFilter) -> str:
    changed = options.changed()
    rules = ", ".join(f"{k}={v}" for k, v in changed.items()) if changed else "defaults"
    return (
        "COCO 2017 val filtered with the LostGAN/LayoutDiffusion rules "
        f"(box area > {options.min_object_area:g}, {options.min_objects}-{options.max_objects} objects); "
        f"options: {rules}"
    )


CROWD_NOTE_PREFIX = "other reading of the crowd rule, every image holding a crowd object dropped: "


def _crowd_notes(options: CocoFilter, kept: int, crowded: int) -> list[str]:
    """LostGAN drops crowd *objects*; dropping every image that holds one is the other plausible
    reading of the published counts. The filter is otherwise the same, so that reading keeps
    exactly the layouts whose image holds no crowd object: one pass gives both counts."""
    if options.drop_crowd_images:
        return []
    return [f"{CROWD_NOTE_PREFIX}{kept - crowded} layouts ({crowded} of the {kept} hold a crowd object)"]


def _notes(options: CocoFilter, skipped: dict[str, int]) -> list[str]:
    notes = []
    if not options.include_stuff:
        notes.append("things only (no stuff annotations)")
    elif not options.stuff_entities:
        notes.append("stuff classes count towards the object filter but are not entities")
    else:
        notes.append("entities include COCO-Stuff classes (categories outside the 80 thing classes)")
    notes.append(f"global prompt: the {options.caption} COCO caption" + (" by annotation id" if options.caption == "first" else ""))
    if not options.masks:
        notes.append("boxes only: COCO segmentations not kept")
    notes += [f"{count} images dropped: {why}" for why, count in skipped.items() if count]
    return notes
