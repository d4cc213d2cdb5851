"""Aesthetic score: the LAION improved aesthetic predictor (EliGen paper, Table 1 "Aesthetic Score").

An MLP on the L2-normalised CLIP ViT-L/14 (OpenAI) image embedding, predicting a 1-10 rating.
Weights: ``sac+logos+ava1-l14-linearMSE.pth`` from github.com/christophschuhmann/
improved-aesthetic-predictor (the repository the paper cites as [LAION, 2022]); the default
``weights`` is its raw-file URL (cached by torch.hub), a local path or ``hf://owner/repo/file``
works too. The file is a plain state dict, read with ``torch.load(weights_only=True)``;
``allow_pickle=True`` opts into full unpickling for files that need it.

Architecture (the repository's ``MLP`` class, rebuilt exactly so its state dict loads strictly;
there are no activations between the linear layers, and dropout is inactive at eval):
``layers = Sequential(Linear(768,1024), Dropout(0.2), Linear(1024,128), Dropout(0.2),
Linear(128,64), Dropout(0.1), Linear(64,16), Linear(16,1))``.

The image embedding comes from the same open_clip model and the same memo as ``clip_global``
(see `clip_scores`): with a shared `ModelCache`, each image passes the ViT-L/14 once for both
metrics. Differences from the reference script: open_clip instead of the ``clip`` package (same
weights and preprocessing), float32 throughout (the script runs CLIP in float16 on GPU).

The ``tiny`` profile: random ViT-B-32 (512-d) and a random MLP of the same architecture with
a 512-d input. Meaningless numbers.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from eligen_bench.api.metric import IMAGE_LEVEL, ScoreItem, ScoreRow, row
from eligen_bench.errors import InputError
from eligen_bench.metrics.clip.scores import ClipBundle, ClipMetric, shared_clip

WEIGHTS_URL = ("https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
               "sac%2Blogos%2Bava1-l14-linearMSE.pth")
HIDDEN = (1024, 128, 64, 16)
DROPOUT = (0.2, 0.2, 0.1, None)  # after the first three hidden linears, none after the fourth


def aesthetic_mlp(input_size: int = 768) -> Any:
    """The predictor's MLP; its state-dict keys are ``layers.{0,2,4,6,7}.{weight,bias}``."""
    from torch import nn

    modules: list[nn.Module] = []
    width = input_size
    for hidden, p in zip(HIDDEN, DROPOUT, strict=True):
        modules.append(nn.Linear(width, hidden))
        if p is not None:
            modules.append(nn.Dropout(p))
        width = hidden
    modules.append(nn.Linear(width, 1))
    # The reference module's forward is `self.layers(x)`: a Sequential holding one child named
    # "layers" computes the same and keeps the reference's state-dict keys.
    mlp = nn.Sequential()
    mlp.add_module("layers", nn.Sequential(*modules))
    return mlp.eval()


def read_state_dict(source: str, *, allow_pickle: bool = False) -> dict[str, Any]:
    """A state dict from a URL (torch.hub cache), ``hf://owner/repo/file`` or a local path."""
    import torch

    try:
        if source.startswith(("http://", "https://")):
            return torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=not allow_pickle)
        if source.startswith("hf://"):
            from huggingface_hub import hf_hub_download

            owner, repo, filename = source[len("hf://"):].split("/", 2)
            source = hf_hub_download(f"{owner}/{repo}", filename)
        if not Path(source).is_file():
            raise InputError(f"no such file {source!r}", field="weights")
        return torch.load(source, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        raise InputError(f"{source} needs unsafe unpickling ({str(exc).splitlines()[0]}); pass "
                         "allow_pickle=True if you trust the file", field="weights") from exc


def load_aesthetic_mlp(source: str, *, allow_pickle: bool = False, expected_dim: int | None = None) -> Any:
    """The MLP with the weights at `source` loaded strictly; input size taken from the weights."""
    state = read_state_dict(source, allow_pickle=allow_pickle)
    if not isinstance(state, dict) or "layers.0.weight" not in state:
        raise InputError(f"{source} is not an aesthetic-predictor state dict (no 'layers.0.weight')", field="weights")
    input_size = int(state["layers.0.weight"].shape[1])
    if expected_dim is not None and input_size != expected_dim:
        raise InputError(f"{source} expects {input_size}-d CLIP embeddings, the CLIP model gives "
                         f"{expected_dim}-d", field="weights")
    mlp = aesthetic_mlp(input_size)
    mlp.load_state_dict(state, strict=True)
    return mlp.eval()


def tiny_mlp(input_size: int, seed: int = 0) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return aesthetic_mlp(input_size)


@dataclass(frozen=True)
class AestheticBundle:
    """The CLIP image tower (shared) and the predictor MLP."""

    clip: ClipBundle
    mlp: Any


class Aesthetic(ClipMetric):
    """LAION improved aesthetic predictor on CLIP ViT-L/14 image embeddings (one row per image)."""

    name = "aesthetic"
    display_name = "Aesthetic Score"
    reference: ClassVar[str] = ("christophschuhmann/improved-aesthetic-predictor@6934dd8: simple_inference.py "
                                "(MLP, sac+logos+ava1-l14-linearMSE.pth); mlfoundations/open_clip@3057361 (CLIP)")
    level = "image"
    description = "LAION improved aesthetic predictor (sac+logos+ava1-l14-linearMSE) on CLIP ViT-L/14"
    defaults: ClassVar[dict[str, Any]] = {**ClipMetric.defaults, "weights": WEIGHTS_URL}

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident.pop("score", None)
        return ident

    def model_ids(self) -> dict[str, str]:
        ids = super().model_ids()
        ids["aesthetic_mlp"] = "random-seed0" if self.profile == "tiny" else str(self.options["weights"])
        return ids

    def load(self) -> AestheticBundle:
        device = self.resolve_device()
        clip = shared_clip(self.cache, self.profile, self.options, device)
        if self.profile == "tiny":
            mlp = self.cache.get(("aesthetic-mlp", "tiny", clip.embed_dim, device),
                                 lambda: tiny_mlp(clip.embed_dim).to(device))
        else:
            source = str(self.options["weights"])
            mlp = self.cache.get(("aesthetic-mlp", source, device), lambda: load_aesthetic_mlp(
                source, allow_pickle=bool(self.options["allow_pickle"]), expected_dim=clip.embed_dim).to(device))
        return AestheticBundle(clip, mlp)

    def clip_bundle(self) -> ClipBundle:
        return self.model.clip

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        import torch

        embeds = self.embedder().scored_images(items)
        with torch.inference_mode():
            scores = self.model.mlp(embeds.to(self.resolve_device())).float().reshape(-1).cpu()
        return [row(self, item, float(s), IMAGE_LEVEL, **self._extra()) for item, s in zip(items, scores, strict=True)]
