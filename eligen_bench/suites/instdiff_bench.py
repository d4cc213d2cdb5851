"""InstDiff-Bench: COCO 2017 val layouts with one colour or texture per instance, as
InstanceDiffusion's evaluation builds them (the DEIG paper's Table 3 benchmark).

Every default follows frank-xwang/InstanceDiffusion@722900e (``eval_local.py``, the inputs, and
``eval/eval_attribute_binding.py``, the scoring side), cited beside it:

- every val2017 image, in sorted image-id order (eval_local.py:170-171), also images without
  annotations (the script generates them too: their prompt is the caption alone);
- the image's annotations in the annotation file's order, crowd ones included
  (``getAnnIds(imgIds=[id], iscrowd=None)``, eval_local.py:196-197); the first 30 become the
  layout's instances (``max_objs = 30``, eval_local.py:156, 207, 254);
- instance caption "[attribute] [noun]": the COCO class name behind
  ``color_list[ann['id'] % 8]`` or ``texture_list[ann['id'] % 8]`` (eval_local.py:143, 146,
  239-252), or the class name alone for the attribute-free suite behind the AP column;
- global prompt: the image's first COCO caption in the caption file's order (``--use_captions``,
  README.md:232 and 254; eval_local.py:201-202), followed with no separator by every instance
  caption of the image (all of them, not only the first 30) joined with ", " (``make_a_sentence``,
  dataset/decode_item.py:368-385; eval_local.py:255-258);
- boxes normalised by the image size (eval_local.py:102-107) on a 512x512 canvas: the model
  samples 64x64 latents (configs/test_box.yaml:11) and the README's customised annotation file
  "resizes all images to 512x512" (README.md:226).

Deviations, each recorded in the suite's notes: boxes are clamped to the image (the reference
passes them as they are) and a box left empty is dropped; control characters in a caption
become spaces (a layout prompt may not hold them; CLIP's tokenizer treats both as whitespace).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eligen_bench.errors import InputError
from eligen_bench.layout import Entity, Layout, Mask, resize_region
from eligen_bench.suite import Suite
from eligen_bench.suites.coco import CAPTIONS_FILE, INSTANCES_FILE, _digest_note, _load_json, _rle

REFERENCE = "frank-xwang/InstanceDiffusion@722900e"
COLORS = ("black", "white", "red", "green", "yellow", "blue", "pink", "purple")
"""``color_list``: eval_local.py:143 and eval/eval_attribute_binding.py:82 (same order)."""
TEXTURES = ("rubber", "fluffy", "metallic", "wooden", "plastic", "fabric", "leather", "glass")
"""``texture_list``: eval_local.py:146 and eval/eval_attribute_binding.py:85 (same order)."""
VOCABULARIES = {"color": COLORS, "texture": TEXTURES}
ATTRIBUTE_CHOICES = ("color", "texture", "none")
MAX_OBJECTS = 30
"""``max_objs = 30``: eval_local.py:156 (and eval_attribute_binding.py:103)."""
IMAGE_SIZE = 512
"""64x64 latents (configs/test_box.yaml:11, test_mask.yaml:11) x 8; README.md:226."""
SOURCE_PREFIX = "coco2017val:"


@dataclass(frozen=True)
class InstDiffOptions:
    """How the suite is built; the defaults are the reference's."""

    attribute: str = "color"
    """'color' (``--add_random_colors``), 'texture' (``--add_random_textures``) or 'none' (the
    attribute-free captions of the AP evaluation, README.md:229-243)."""
    captions: bool = True
    """Start the global prompt with the first COCO caption (``--use_captions``, README.md:232)."""
    max_objects: int = MAX_OBJECTS
    size: int = IMAGE_SIZE
    """Width and height of every layout in pixels."""
    masks: bool = False
    """Keep each instance's segmentation (PIL-nearest resized to the canvas, utils/input.py:166-169,
    as the mask-conditioned config reads it). The DEIG paper gives boxes only."""

    def __post_init__(self) -> None:
        where = "instdiff-bench options"
        if self.attribute not in ATTRIBUTE_CHOICES:
            raise InputError(f"must be one of {ATTRIBUTE_CHOICES}, got {self.attribute!r}", where=where,
                             field="attribute")
        if not 1 <= self.max_objects <= 64:
            raise InputError(f"must be in [1, 64], got {self.max_objects}", where=where, field="max_objects")
        if not 16 <= self.size <= 8192:
            raise InputError(f"must be in [16, 8192], got {self.size}", where=where, field="size")

    @property
    def suite_name(self) -> str:
        return "instdiff-bench" if self.attribute == "none" else f"instdiff-bench-{self.attribute}"


def attribute_of(annotation_id: int, attribute: str) -> str | None:
    """The attribute the reference gives an annotation: ``list[ann['id'] % len(list)]``
    (eval_local.py:241, 244); None for the attribute-free suite."""
    if attribute == "none":
        return None
    vocabulary = VOCABULARIES[attribute]
    return vocabulary[annotation_id % len(vocabulary)]


def instance_caption(name: str, attribute: str | None) -> str:
    """``attribute + " " + name`` (eval_local.py:250, 252), or the class name alone."""
    return name if attribute is None else f"{attribute} {name}"


def make_a_sentence(names: Sequence[str]) -> str:
    """The names joined with ", " (dataset/decode_item.py:368-385, ``clean=False``)."""
    return ", ".join(names)


def global_prompt(caption: str | None, names: Sequence[str]) -> str:
    """``anns_caption + make_a_sentence(cat_names)``: no separator between them (eval_local.py:255-257)."""
    return (caption or "") + make_a_sentence(names)


def build_instdiff_suite(annotations_dir: Path, options: InstDiffOptions | None = None, *,
                         name: str | None = None, source_notes: tuple[str, ...] = ()) -> Suite:
    """The InstDiff-Bench suite from ``instances_val2017.json`` (and ``captions_val2017.json``
    when `options.captions`) in `annotations_dir`."""
    options = options or InstDiffOptions()
    annotations_dir = Path(annotations_dir)
    instances = _load_json(annotations_dir / INSTANCES_FILE, ("images", "annotations", "categories"))
    captions = _load_json(annotations_dir / CAPTIONS_FILE, ("annotations",)) if options.captions else None
    counts: dict[str, int] = defaultdict(int)
    layouts = _layouts(instances, captions, options, counts)
    notes = _notes(options, counts) + [_digest_note(d) for d in (instances, captions) if d is not None]
    return Suite(
        name=name or options.suite_name,
        version="1",
        layouts=tuple(layouts),
        description=_description(options),
        notes=tuple(notes) + tuple(source_notes),
    )


def _layouts(instances: dict, captions: dict | None, options: InstDiffOptions,
             counts: dict[str, int]) -> list[Layout]:
    where = instances["_path"]
    images = _images(instances)
    names = {int(c["id"]): str(c["name"]) for c in instances["categories"]}
    per_image: dict[int, list[dict]] = defaultdict(list)
    for ann in instances["annotations"]:
        image_id = _int_field(ann, "image_id", where)
        if image_id not in images:
            raise InputError(f"annotation {ann.get('id')!r} names unknown image {image_id}", where=where)
        if _int_field(ann, "category_id", where) not in names:
            raise InputError(f"annotation {ann.get('id')!r} names unknown category {ann['category_id']}",
                             where=where)
        per_image[image_id].append(ann)  # file order, as COCO.getAnnIds returns them
    texts = _first_captions(captions) if captions is not None else {}
    layouts = []
    for image_id in sorted(images):  # eval_local.py:170-171
        if captions is not None and image_id not in texts:
            raise InputError(f"image {image_id} has no caption (the reference indexes its first one)",
                             where=captions["_path"])
        anns = per_image.get(image_id, [])
        phrases = [instance_caption(names[int(a["category_id"])], attribute_of(_int_field(a, "id", where),
                                                                              options.attribute)) for a in anns]
        layout = _layout(image_id, images[image_id], anns, phrases, names, texts.get(image_id), options, counts)
        if layout is not None:
            layouts.append(layout)
    return layouts


def _int_field(record: dict, key: str, where: str) -> int:
    try:
        return int(record[key])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"record {record.get('id')!r} lacks an integer {key!r}", where=where) from None


def _images(instances: dict) -> dict[int, dict]:
    images = {}
    for index, image in enumerate(instances["images"]):
        try:
            images[int(image["id"])] = {"width": int(image["width"]), "height": int(image["height"])}
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"image record {index} lacks id/width/height ({exc})", where=instances["_path"]) from None
    return images


def _first_captions(captions: dict) -> dict[int, str]:
    """Each image's first caption in the file's order (``loadAnns(getAnnIds(...))[0]``), raw."""
    first: dict[int, str] = {}
    for ann in captions["annotations"]:
        image_id = _int_field(ann, "image_id", captions["_path"])
        if image_id not in first:
            text = ann.get("caption")
            if not isinstance(text, str):
                raise InputError(f"caption annotation {ann.get('id')!r} has no text", where=captions["_path"])
            first[image_id] = text
    return first


def _layout(image_id: int, image: dict, anns: list[dict], phrases: list[str], names: dict[int, str],
            caption: str | None, options: InstDiffOptions, counts: dict[str, int]) -> Layout | None:
    if caption is not None:
        caption, replaced = _printable(caption)
        counts["captions with control characters"] += replaced
    prompt = global_prompt(caption, phrases)
    if not prompt.strip():
        counts["images without caption or instance (empty prompt)"] += 1
        return None
    entities = []
    for ann, phrase in zip(anns[: options.max_objects], phrases[: options.max_objects], strict=True):
        entity = _entity(ann, phrase, names[int(ann["category_id"])], image, options)
        if entity is None:
            counts["instances dropped: empty box"] += 1
            continue
        entities.append(entity)
    counts["instances beyond the cap (in the prompt, not placed)"] += max(0, len(anns) - options.max_objects)
    return Layout(id=f"coco-{image_id}", prompt=prompt, entities=tuple(entities), width=options.size,
                  height=options.size, source=f"{SOURCE_PREFIX}{image_id}")


def _printable(text: str) -> tuple[str, int]:
    import unicodedata

    out = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    return out, int(out != text)


def _entity(ann: dict, phrase: str, name: str, image: dict, options: InstDiffOptions) -> Entity | None:
    try:
        x, y, w, h = (float(v) for v in ann["bbox"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"annotation {ann.get('id')!r} has no bbox ({exc})", where="instances file") from None
    width, height = image["width"], image["height"]
    # eval_local.py:102-107: x / width, (x + w) / width; clamped here (the reference is not).
    x1, y1 = min(max(x / width, 0.0), 1.0), min(max(y / height, 0.0), 1.0)
    x2, y2 = min(max((x + w) / width, 0.0), 1.0), min(max((y + h) / height, 0.0), 1.0)
    if not (x1 < x2 and y1 < y2):
        return None
    mask = _mask(ann, image, options.size) if options.masks else None
    return Entity(prompt=phrase, bbox=(x1, y1, x2, y2), mask=mask, category=name)


def _mask(ann: dict, image: dict, size: int) -> Mask | None:
    from pycocotools import mask as mask_utils

    from eligen_bench.suites.coco import _Object

    obj = _Object(ann, "", False, "instances file", (0.0, 0.0, 0.0, 0.0))
    rle = _rle(obj, image)
    if rle is None:
        return None
    # utils/input.py:167-168: the decoded mask, PIL NEAREST to 512x512.
    return Mask.from_array(resize_region(mask_utils.decode(rle).astype(bool), size, size, "pil-nearest"))


def _description(options: InstDiffOptions) -> str:
    what = {"color": "one of 8 colours", "texture": "one of 8 textures",
            "none": "no attribute (the AP evaluation)"}[options.attribute]
    return (f"InstDiff-Bench: every COCO 2017 val image, up to {options.max_objects} instances each with "
            f"{what} by annotation id % 8, on a {options.size}x{options.size} canvas ({REFERENCE}: eval_local.py)")


def _notes(options: InstDiffOptions, counts: dict[str, int]) -> list[str]:
    notes = [
        f"instance captions: {'[attribute] [noun], attribute = list[annotation id % 8]' if options.attribute != 'none' else 'the COCO class name'}",
        "global prompt: " + ("the first COCO caption in file order, then every instance caption joined "
                             "with ', ' (no separator between the two)" if options.captions
                             else "every instance caption joined with ', '"),
        "crowd annotations are instances, as in the reference (getAnnIds with iscrowd=None)",
        "boxes clamped to the image; " + ("masks kept (PIL-nearest resized)" if options.masks else "boxes only"),
    ]
    notes += [f"{count} {why}" for why, count in sorted(counts.items()) if count]
    return notes
