"""CLIP scores of the EliGen paper's Table 1 ("Entity CLIP", "Global CLIP"), with open_clip.

Score = 100 x max(cos(image embedding, text embedding), 0), the torchmetrics / Hessel et al.
CLIPScore with w = 100 instead of 2.5.

- ``clip_global``: the whole generated image vs the layout's global prompt (one row per image).
- ``clip_entity``: each entity's box cropped from the generated image vs the entity's prompt
  (one row per entity). The box is the layout's normalised xyxy ``bbox`` mapped onto the image
  (floor of the left/top edge, ceil of the right/bottom, at least one pixel). ``crop_fit``
  decides how a non-square crop meets CLIP's square input: ``"center_crop"`` (default) is the
  model's own preprocessing (shorter side resized to 224, centre crop), ``"squash"`` resizes the
  crop to 224x224 so nothing of the entity is cut away.

Model: ``clip_model="ViT-L-14"``, ``clip_pretrained="openai"`` (OpenAI CLIP ViT-L/14 at 224 px).
``clip_activation="auto"`` builds the MLP activation the weights were trained with (QuickGELU for
every OpenAI checkpoint, as open_clip's pretrained table says; its architecture configs default
to GELU and open_clip only warns); naming another one, or a ``-quickgelu`` architecture with
GELU weights, is an error. The resolved activation is part of the metric identity. The paper does not name its CLIP; ViT-L/14 (OpenAI) is the most likely reading: it
is torchmetrics' default CLIPScore model and the backbone of the aesthetic predictor the same
table uses, and it gives scores in the paper's range (20-28). Other open_clip models are options.

Sharing: the model lives in the run's `ModelCache` under ``("open_clip", model, pretrained,
activation, device)``, the same key the ``aesthetic`` metric uses, so one ViT-L/14 serves all three
metrics. Whole-image embeddings are memoised in the same cache under ``("clip-embeddings",
<model key>)``, keyed by the sha256 of the PNG's bytes (`ScoreItem.content_sha256`), so
``clip_global`` and ``aesthetic`` run the image tower once per image; prompt embeddings are
memoised by text. The memo grows with the run (768 floats per image, ~35 MB
for 11k images) and is dropped with the cache.

The ``tiny`` profile uses open_clip ViT-B-32 with random weights (seed 0) and its bundled
tokenizer: no download, meaningless numbers.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from eligen_bench.api.metric import IMAGE_LEVEL, Metric, ModelCache, ScoreItem, ScoreRow, row
from eligen_bench.errors import InputError
from eligen_bench.tiny import TINY_WARNING

TINY_CLIP = ("ViT-B-32", "random-seed0")
TINY_ACTIVATION = "gelu"  # ViT-B-32.json's own; random weights have no trained activation
ACTIVATIONS = ("auto", "quick_gelu", "gelu")
CROP_FITS = ("center_crop", "squash")
_NOT_IN_IDENTITY = ("allow_pickle",)


@dataclass(frozen=True)
class ClipBundle:
    """An open_clip model with its eval preprocessing and tokenizer."""

    model: Any
    preprocess: Callable[[Any], Any]
    tokenizer: Callable[[list[str]], Any]
    key: Hashable
    """Identity used to memoise embeddings (model name, weights, device)."""

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)


def clip_activation(model_name: str, pretrained: str | None, requested: str = "auto") -> str:
    """The MLP activation to build `model_name` with: the one its weights were trained with.

    open_clip's pretrained table (open_clip/pretrained.py, mlfoundations/open_clip@3057361,
    v3.3.0) marks QuickGELU-trained weights with ``quick_gelu=True`` (all OpenAI weights), while
    the architecture configs (``ViT-L-14.json``) default to GELU; create_model only warns on
    the mismatch (factory.py, same commit). Here the tag decides and every mismatch is an error:
    `requested` other than 'auto' must agree with the tag, and a ``-quickgelu`` architecture
    cannot take GELU weights. Without a tag (a file, random weights) the architecture decides,
    unless `requested` names the activation.
    """
    import open_clip

    if requested not in ACTIVATIONS:
        raise InputError(f"must be one of {ACTIVATIONS}, got {requested!r}", field="clip_activation")
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise InputError(f"unknown open_clip model {model_name!r}", field="clip_model")
    built_in = "quick_gelu" if config.get("quick_gelu") else "gelu"
    # open_clip lists a "-quickgelu" name only with its QuickGELU tags: read the others' flags
    # from the base architecture.
    base_name = model_name.removesuffix("-quickgelu")
    tag = (open_clip.get_pretrained_cfg(model_name, pretrained)
           or open_clip.get_pretrained_cfg(base_name, pretrained)) if pretrained else {}
    trained = ("quick_gelu" if tag.get("quick_gelu") else "gelu") if tag else None
    wanted = trained or (built_in if requested == "auto" else requested)
    if trained is not None and requested not in ("auto", trained):
        raise InputError(f"{model_name}/{pretrained} was trained with {trained}, not {requested}",
                         field="clip_activation")
    if built_in == "quick_gelu" and wanted == "gelu":
        raise InputError(f"{model_name} always builds QuickGELU, but {pretrained or 'this model'} needs GELU; "
                         f"use the architecture without '-quickgelu'", field="clip_model")
    return wanted


def built_activation(model: Any) -> str:
    """'quick_gelu' or 'gelu': the activation modules inside a built open_clip model."""
    from open_clip.transformer import QuickGELU
    from torch import nn

    found = {"quick_gelu" if isinstance(m, QuickGELU) else "gelu"
             for m in model.modules() if isinstance(m, (QuickGELU, nn.GELU))}
    if len(found) != 1:
        raise RuntimeError(f"expected one activation type in the CLIP model, found {sorted(found)}")
    return found.pop()


def load_clip(model_name: str, pretrained: str | None, device: str, *, allow_pickle: bool = False,
              activation: str = "auto") -> ClipBundle:
    """open_clip model + transforms + tokenizer; `pretrained` is a tag (hub download) or a file path.

    Built with the activation its weights were trained with (`clip_activation`), checked on the
    built modules."""
    import open_clip

    wanted = clip_activation(model_name, pretrained, activation)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device, weights_only=not allow_pickle,
            force_quick_gelu=wanted == "quick_gelu")
    except pickle.UnpicklingError as exc:  # what torch.load(weights_only=True) raises on such files
        raise InputError(f"{pretrained} needs unsafe unpickling ({str(exc).splitlines()[0]}); pass "
                         "allow_pickle=True if you trust the file", field="clip_pretrained") from exc
    if built_activation(model) != wanted:
        raise RuntimeError(f"{model_name} was built with {built_activation(model)}, expected {wanted}")
    model.eval()
    return ClipBundle(model, preprocess, open_clip.get_tokenizer(model_name),
                      clip_cache_key(model_name, pretrained, wanted, device))


def clip_cache_key(model_name: str, pretrained: str | None, activation: str, device: str) -> tuple:
    """The model's identity in the run's cache (and its embedding memo): the activation is part of it."""
    return ("open_clip", model_name, pretrained, activation, device)


def tiny_clip(device: str = "cpu", seed: int = 0) -> ClipBundle:
    """open_clip ViT-B-32 with random weights and the real bundled tokenizer (no download)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return load_clip(TINY_CLIP[0], None, device)


def clip_score(image_embeds: Any, text_embeds: Any) -> Any:
    """100 x max(cos, 0) row by row, for L2-normalised (B, D) tensors."""
    return 100.0 * (image_embeds * text_embeds).sum(dim=-1).clamp(min=0.0)


def shared_clip(cache: ModelCache, profile: str, options: dict[str, Any], device: str) -> ClipBundle:
    """The run's one CLIP bundle for these options (built on first use)."""
    if profile == "tiny":
        return cache.get(clip_cache_key(TINY_CLIP[0], None, TINY_ACTIVATION, device), lambda: tiny_clip(device))
    name, pretrained = options["clip_model"], options["clip_pretrained"]
    activation = clip_activation(name, pretrained, options["clip_activation"])
    return cache.get(clip_cache_key(name, pretrained, activation, device), lambda: load_clip(
        name, pretrained, device, allow_pickle=bool(options["allow_pickle"]), activation=activation))


class Embedder:
    """Batched, memoised CLIP embeddings of one bundle (memo lives in the run's ModelCache)."""

    def __init__(self, bundle: ClipBundle, cache: ModelCache, device: str, batch_size: int = 32):
        self.bundle = bundle
        self.device = device
        self.batch_size = max(1, batch_size)
        self.memo: dict[str, dict] = cache.get(("clip-embeddings", bundle.key), lambda: {"image": {}, "text": {}})

    def _forward(self, tensors: list[Any], encode: Callable[[Any], Any]) -> Any:
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(tensors), self.batch_size):
                batch = torch.stack(tensors[start : start + self.batch_size]).to(self.device)
                out.append(encode(batch).float())
        embeds = torch.cat(out)
        return (embeds / embeds.norm(dim=-1, keepdim=True).clamp(min=1e-12)).cpu()

    def images(self, images: Sequence[Any]) -> Any:
        """(B, D) normalised embeddings of PIL images (no memo: crops and such)."""
        if not images:
            return self._empty()
        return self._forward([self.bundle.preprocess(im) for im in images], self.bundle.model.encode_image)

    def scored_images(self, items: Sequence[ScoreItem]) -> Any:
        """Whole-image embeddings of items, memoised by image hash (one forward for the misses)."""
        import torch

        memo = self.memo["image"]
        keys = [item.content_sha256() for item in items]  # the file's content, never a recorded hash
        missing = {key: item for key, item in zip(keys, items, strict=True) if key not in memo}
        if missing:
            memo.update(zip(missing, self.images([item.load_image() for item in missing.values()]), strict=True))
        return torch.stack([memo[key] for key in keys])

    def texts(self, prompts: Sequence[str]) -> Any:
        """(B, D) normalised text embeddings, memoised by prompt."""
        import torch

        memo = self.memo["text"]
        missing = list(dict.fromkeys(p for p in prompts if p not in memo))
        if missing:
            tokens = list(self.bundle.tokenizer(missing))
            for prompt, embed in zip(missing, self._forward(tokens, self.bundle.model.encode_text), strict=True):
                memo[prompt] = embed
        return torch.stack([memo[p] for p in prompts]) if prompts else self._empty()

    def _empty(self) -> Any:
        import torch

        return torch.zeros((0, self.bundle.embed_dim))


class ClipMetric(Metric):
    """Options, loading and the embedder shared by the CLIP-based metrics."""

    # OpenAI CLIP ViT-L/14 (see the module docstring), built with QuickGELU as its weights need.
    reference: ClassVar[str] = ("mlfoundations/open_clip@3057361: src/open_clip/pretrained.py, factory.py "
                                "(v3.3.0; ViT-L-14 'openai', quick_gelu=True)")
    defaults: ClassVar[dict[str, Any]] = {
        "clip_model": "ViT-L-14",
        "clip_pretrained": "openai",
        "clip_activation": "auto",
        "allow_pickle": False,
    }

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.profile != "tiny":  # a mismatch is refused before anything is scored
            self.activation = clip_activation(self.options["clip_model"], self.options["clip_pretrained"],
                                              self.options["clip_activation"])
        else:
            self.activation = TINY_ACTIVATION

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["options"] = {k: v for k, v in ident["options"].items() if k not in _NOT_IN_IDENTITY}
        ident["score"] = "100 * max(cos, 0)"
        return ident

    def model_ids(self) -> dict[str, str]:
        from importlib.metadata import version

        name, weights = TINY_CLIP if self.profile == "tiny" else (self.options["clip_model"], self.options["clip_pretrained"])
        return {"clip": f"open_clip:{name}/{weights}", "clip_activation": self.activation,
                "open_clip": version("open_clip_torch")}

    def load(self) -> Any:
        return shared_clip(self.cache, self.profile, self.options, self.resolve_device())

    def clip_bundle(self) -> ClipBundle:
        return self.model

    def embedder(self) -> Embedder:
        bundle = self.clip_bundle()
        return Embedder(bundle, self.cache, self.resolve_device(), batch_size=max(self.batch_size, 8))

    def _extra(self) -> dict[str, Any]:
        return {"warning": TINY_WARNING} if self.profile == "tiny" else {}


class ClipGlobal(ClipMetric):
    """CLIP score of the whole image vs the global prompt."""

    name = "clip_global"
    display_name = "Global CLIP"
    level = "image"
    description = "CLIP score (100 x cos, clamped at 0) of the whole image vs the global prompt"

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        embedder = self.embedder()
        scores = clip_score(embedder.scored_images(items), embedder.texts([it.layout.prompt for it in items]))
        return [row(self, item, float(s), IMAGE_LEVEL, **self._extra()) for item, s in zip(items, scores, strict=True)]


def crop_box(size: tuple[int, int], bbox: Sequence[float]) -> tuple[int, int, int, int]:
    """Pixel (left, top, right, bottom) of a normalised xyxy box on an image of `size` (w, h)."""
    width, height = size
    left = min(math.floor(bbox[0] * width), width - 1)
    top = min(math.floor(bbox[1] * height), height - 1)
    right = max(left + 1, min(math.ceil(bbox[2] * width), width))
    bottom = max(top + 1, min(math.ceil(bbox[3] * height), height))
    return left, top, right, bottom


class ClipEntity(ClipMetric):
    """CLIP score of each entity's box crop vs the entity's prompt."""

    name = "clip_entity"
    display_name = "Entity CLIP"
    level = "entity"
    description = "CLIP score (100 x cos, clamped at 0) of each entity's box crop vs its prompt"
    defaults: ClassVar[dict[str, Any]] = {**ClipMetric.defaults, "crop_fit": "center_crop"}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.options["crop_fit"] not in CROP_FITS:
            raise InputError(f"must be one of {CROP_FITS}, got {self.options['crop_fit']!r}",
                             where=f"metric {self.name!r}", field="crop_fit")

    def crops(self, items: Sequence[ScoreItem]) -> tuple[list[Any], list[tuple[int, int]]]:
        """Every entity crop of the batch, with its (item index, entity index)."""
        from PIL import Image

        side = self.clip_bundle().image_size
        crops, where = [], []
        for k, item in enumerate(items):
            if not item.layout.entities:
                continue
            image = item.load_image()
            for e, entity in enumerate(item.layout.entities):
                crop = image.crop(crop_box(image.size, entity.bbox))
                if self.options["crop_fit"] == "squash":
                    crop = crop.resize((side, side), Image.BICUBIC)
                crops.append(crop)
                where.append((k, e))
        return crops, where

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        embedder = self.embedder()
        crops, where = self.crops(items)
        prompts = [items[k].layout.entities[e].prompt for k, e in where]
        scores = clip_score(embedder.images(crops), embedder.texts(prompts))
        return [row(self, items[k], float(s), e, **self._extra()) for (k, e), s in zip(where, scores, strict=True)]
