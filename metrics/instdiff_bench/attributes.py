"""InstDiff-Bench attribute binding: attribute accuracy and regional CLIP (DEIG Table 3).

Both follow frank-xwang/InstanceDiffusion@722900e ``eval/eval_attribute_binding.py``:

- Model: open_clip ``ViT-L-14`` with ``laion2b_s32b_b82k`` weights and their own eval
  preprocessing (line 153; open_clip normalises the script's tag 'laion2b-s32b-b82k'), tokenizer
  of ViT-L-14 (line 155). Pass the tag, not a local file: open_clip takes the normalisation
  constants of these weights (Inception mean/std) from its pretrained table.
- Crop: ``image.crop((x0 * W, y0 * H, x1 * W, y1 * H))`` with the normalised box (line 189):
  PIL rounds each float coordinate half to even. A crop with no width or height cannot be
  preprocessed; the script's ``try/except`` skips that instance (lines 197-203), so do we.
- Regional CLIP: cosine between the crop's and the instance caption's L2-normalised embeddings
  (lines 39-44), no x100, no clamp. The caption is the whole instance caption ("red dog").
- Accuracy: the crop's similarity to "a {attribute} object" for the 8 attributes (lines
  162-169, 56-59); correct when the argmax (first on ties) is the caption's first word (lines
  46-53). The attribute list is the one the caption's first word belongs to (``attributes="auto"``;
  the script picks it by its ``--test_random_colors`` / ``--test_random_textures`` flag).
- Aggregation: the mean over an image's scored instances, then the mean over images with at
  least one scored instance (lines 205-208). Rows are per image (level 'image', value = the
  image's mean), so the report's mean over rows is the script's number; an image without a
  scored instance is a row with status 'excluded'.
- The image: the generated PNG re-encoded as the script's JPEG (see `images`).

Accuracy is reported x100 (%), regional CLIP as the raw cosine, the units of DEIG's Table 3.
Both metrics read one memo per image in the run's model cache: one CLIP pass serves the two.
The ``tiny`` profile uses open_clip ViT-B-32 with random weights (meaningless numbers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from eligen_bench.api.metric import IMAGE_LEVEL, ScoreItem, ScoreRow, row
from eligen_bench.errors import InputError
from eligen_bench.hashing import content_hash
from eligen_bench.layout import Entity, Layout
from eligen_bench.metrics.clip.scores import ClipMetric
from eligen_bench.metrics.instdiff_bench.images import JPEG_QUALITY, as_scored_pil, check_quality
from eligen_bench.suites.instdiff_bench import COLORS, TEXTURES

REFERENCE = "frank-xwang/InstanceDiffusion@722900e: eval/eval_attribute_binding.py"
VOCABULARIES = {"color": COLORS, "texture": TEXTURES}
ATTRIBUTE_CHOICES = ("auto", "color", "texture")
LABEL_TEMPLATE = "a {} object"
"""eval_attribute_binding.py:163, 165."""


@dataclass(frozen=True)
class InstanceResult:
    """One instance's scores; `cos` None when its crop was empty (skipped, as the script does)."""

    cos: float | None = None
    predicted: str | None = None
    truth: str | None = None

    @property
    def correct(self) -> bool:
        return self.predicted is not None and self.predicted == self.truth


def reference_crop(image: Any, bbox: Sequence[float]) -> Any:
    """``image.crop((x0*W, y0*H, x1*W, y1*H))`` (line 189); None when PIL gives an empty crop."""
    x0, y0, x1, y1 = bbox
    crop = image.crop((x0 * image.width, y0 * image.height, x1 * image.width, y1 * image.height))
    return None if crop.width == 0 or crop.height == 0 else crop


def vocabulary_of(entity: Entity, mode: str, where: str) -> tuple[str, tuple[str, ...]]:
    """The caption's attribute (``text.split(" ")[0]``, lines 47, 51) and its attribute list."""
    word = entity.prompt.split(" ")[0]
    candidates = [mode] if mode != "auto" else [k for k, words in VOCABULARIES.items() if word in words]
    if not candidates or word not in VOCABULARIES[candidates[0]]:
        allowed = "a colour or texture of InstDiff-Bench" if mode == "auto" else f"one of the {mode} list"
        raise InputError(f"caption {entity.prompt!r} does not start with {allowed}; score an "
                         "instdiff-bench suite", where=where, field="entities")
    return word, VOCABULARIES[candidates[0]]


def image_mean(values: Sequence[float]) -> float:
    """The script's per-image mean (``np.mean`` of the list, lines 205-208); NaN when empty."""
    return math.fsum(values) / len(values) if values else math.nan


class InstDiffAttributeMetric(ClipMetric):
    """Shared options, model and per-image memo of the two attribute-binding metrics."""

    level = "image"
    reference: ClassVar[str] = f"{REFERENCE}; mlfoundations/open_clip@3057361: src/open_clip/pretrained.py"
    defaults: ClassVar[dict[str, Any]] = {
        "clip_model": "ViT-L-14",  # eval_attribute_binding.py:153
        "clip_pretrained": "laion2b_s32b_b82k",  # eval_attribute_binding.py:153 ('laion2b-s32b-b82k')
        "clip_activation": "auto",
        "attributes": "auto",  # the script's flag; here read from the captions
        "jpeg_quality": JPEG_QUALITY,  # eval_local.py:92, 98: samples saved as .jpg at PIL's default
        "allow_pickle": False,
    }
    in_default_run = False  # meaningful only on an instdiff-bench suite

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        where = f"metric {self.name!r}"
        if self.options["attributes"] not in ATTRIBUTE_CHOICES:
            raise InputError(f"must be one of {ATTRIBUTE_CHOICES}, got {self.options['attributes']!r}",
                             where=where, field="attributes")
        check_quality(self.options["jpeg_quality"], where)

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["score"] = self.score_rule
        ident["aggregation"] = "mean over an image's scored instances, then over images"
        return ident

    score_rule: ClassVar[str] = ""

    def instances(self, items: Sequence[ScoreItem]) -> list[list[InstanceResult]]:
        """Per item, one result per entity, from the memo or one batched CLIP pass for the misses."""
        embedder = self.embedder()
        mode, quality = self.options["attributes"], int(self.options["jpeg_quality"])
        memo = self.cache.get(("instdiff-attributes", embedder.bundle.key, mode, quality), dict)
        keys = [(item.content_sha256(), content_hash(item.layout.to_dict())) for item in items]
        missing = [(key, item) for key, item in zip(keys, items, strict=True) if key not in memo]
        if missing:
            found = score_instances(embedder, [item for _, item in missing], mode, quality)
            memo.update(zip([key for key, _ in missing], found, strict=True))
        return [memo[key] for key in keys]

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        rows = []
        for item, results in zip(items, self.instances(items), strict=True):
            scored = [r for r in results if r.cos is not None]
            value = image_mean([self.instance_value(r) for r in scored])
            detail = {"instances": [self.instance_detail(r) for r in results], "scored": len(scored),
                      **self._extra()}
            if not scored:
                rows.append(row(self, item, math.nan, IMAGE_LEVEL, status="excluded",
                                reason="no_scored_instance", **detail))
            else:
                rows.append(row(self, item, value, IMAGE_LEVEL, **detail))
        return rows

    def instance_value(self, result: InstanceResult) -> float:
        raise NotImplementedError

    @staticmethod
    def instance_detail(result: InstanceResult) -> list[Any] | None:
        if result.cos is None:
            return None  # empty crop, skipped
        return [round(result.cos, 6), result.predicted, result.truth]


def score_instances(embedder: Any, items: Sequence[ScoreItem], mode: str,
                    quality: int) -> list[list[InstanceResult]]:
    """Every entity of every item: crop, embed (one batch for all crops), compare."""
    import torch

    crops, where, truths = [], [], []
    results: list[list[InstanceResult]] = []
    for k, item in enumerate(items):
        layout: Layout = item.layout
        image = as_scored_pil(item.load_image(), quality) if layout.entities else None
        results.append([InstanceResult() for _ in layout.entities])
        for e, entity in enumerate(layout.entities):
            truth, vocabulary = vocabulary_of(entity, mode, f"layout {layout.id!r}, entity {e}")
            crop = reference_crop(image, entity.bbox)
            if crop is not None:
                crops.append(crop)
                where.append((k, e))
                truths.append((truth, vocabulary))
    if not crops:
        return results
    image_embeds = embedder.images(crops)
    text_embeds = embedder.texts([items[k].layout.entities[e].prompt for k, e in where])
    cosines = (image_embeds * text_embeds).sum(dim=-1)
    for n, ((k, e), (truth, vocabulary)) in enumerate(zip(where, truths, strict=True)):
        labels = embedder.texts([LABEL_TEMPLATE.format(word) for word in vocabulary])
        similarity = labels @ image_embeds[n]
        predicted = vocabulary[int(torch.argmax(similarity))]  # np.argmax: first index on ties
        results[k][e] = InstanceResult(float(cosines[n]), predicted, truth)
    return results


class InstDiffAttributeAccuracy(InstDiffAttributeMetric):
    """Share of an image's instances whose crop CLIP assigns to the caption's attribute (%)."""

    name = "instdiff_attribute_acc"
    display_name = "Attribute Acc (InstDiff-Bench)"
    scale = 100.0
    score_rule = "argmax over 'a {attribute} object' of the 8 attributes == the caption's attribute"
    description = ("InstDiff-Bench attribute accuracy: the box crop classified by open_clip ViT-L-14 "
                   "among 8 colours or textures, per image then over images (%)")

    def instance_value(self, result: InstanceResult) -> float:
        return 1.0 if result.correct else 0.0


class InstDiffRegionalClip(InstDiffAttributeMetric):
    """Mean cosine between an image's instance crops and their captions."""

    name = "instdiff_regional_clip"
    display_name = "Regional CLIP (InstDiff-Bench)"
    score_rule = "cos(crop, instance caption), no scaling"
    description = ("InstDiff-Bench regional CLIP: cosine of the box crop and the instance caption "
                   "(open_clip ViT-L-14), per image then over images")

    def instance_value(self, result: InstanceResult) -> float:
        assert result.cos is not None
        return result.cos
