"""`pickscore`: PickScore (Kirstain et al., 2023) of the image against the layout's global prompt.

Score = logit_scale.exp() * cos(image embedding, text embedding), as in the PickScore reference
code (`yuvalkirstain/PickScore_v1` with the processor of
`laion/CLIP-ViT-H-14-laion2B-s32B-b79K`, both through transformers' CLIPModel / CLIPProcessor).
The EliGen paper (Table 2) reports pairwise win rates between methods on the same layout and
seed; those are computed by the report stage from these per-image rows.

Embeddings are taken as projection(text_model / vision_model pooled output), which is what
`get_text_features` / `get_image_features` return in every transformers version (their return
type changed in transformers 5). Tiny profile: a random small CLIPModel, the real CLIP BPE
tokenizer rebuilt offline and CLIPImageProcessor defaults, saved and reloaded through the same
`from_pretrained` path.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import Any, ClassVar

from eligen_bench.api.metric import Metric, ScoreItem, ScoreRow, row
from eligen_bench.tiny import TINY_WARNING

MODEL_ID = "yuvalkirstain/PickScore_v1"
PROCESSOR_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
TINY_ID = "tiny-random-clip"


class PickScore(Metric):
    """Per-image PickScore of the image vs the global prompt (higher is better)."""

    name = "pickscore"
    display_name = "PickScore"
    reference: ClassVar[str] = "yuvalkirstain/PickScore@f79607f: README.md (calc_probs)"
    level = "image"
    higher_is_better = True
    description = "PickScore: logit_scale * cos(image, global prompt) of the PickScore_v1 CLIP-H"
    defaults: ClassVar[dict[str, Any]] = {
        "model_id": MODEL_ID,
        "processor_id": PROCESSOR_ID,
        "revision": None,
        "dtype": None,
    }

    def model_ids(self) -> dict[str, str]:
        if self.profile == "tiny":
            return {"model": TINY_ID, "processor": TINY_ID}
        return {
            "model": self.options["model_id"],
            "model_revision": self.options["revision"] or "default",
            "processor": self.options["processor_id"],
        }

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        if self.profile == "tiny":
            ident["warning"] = TINY_WARNING
        return ident

    def load(self) -> Any:
        device = self.resolve_device()
        key = ("clip-preference", *sorted(self.model_ids().items()), self.profile, device, self.options["dtype"])
        return self.cache.get(key, lambda: self._build(device))

    def _build(self, device: str) -> tuple[Any, Any]:
        if self.profile == "tiny":
            with tempfile.TemporaryDirectory(prefix="tiny-clip-") as directory:
                save_tiny_clip(directory)
                return load_clip(directory, directory, None, device, None)
        o = self.options
        return load_clip(o["model_id"], o["processor_id"], o["revision"], device, o["dtype"])

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        model, processor = self.model
        images = [item.load_image() for item in items]
        prompts = [item.layout.prompt for item in items]
        scores = pick_scores(model, processor, images, prompts)
        extra = {"warning": TINY_WARNING} if self.profile == "tiny" else {}
        return [row(self, item, value, **extra) for item, value in zip(items, scores, strict=True)]


def pick_scores(model: Any, processor: Any, images: Sequence[Any], prompts: Sequence[str]) -> list[float]:
    """logit_scale.exp() * cos(image_i, prompt_i) for each pair (the reference's diagonal)."""
    import torch

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    image_inputs = processor(images=list(images), return_tensors="pt")
    text_inputs = processor(text=list(prompts), padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        pooled_image = model.vision_model(pixel_values=image_inputs["pixel_values"].to(device, dtype))[1]
        image_embeds = model.visual_projection(pooled_image)
        pooled_text = model.text_model(
            input_ids=text_inputs["input_ids"].to(device),
            attention_mask=text_inputs["attention_mask"].to(device),
        )[1]
        text_embeds = model.text_projection(pooled_text)
        image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
        text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
        scores = model.logit_scale.exp() * (image_embeds * text_embeds).sum(dim=-1)
    return [float(s) for s in scores.float().cpu()]


def load_clip(model_path: str, processor_path: str, revision: str | None, device: str,
              dtype: str | None) -> tuple[Any, Any]:
    """A CLIPModel and CLIPProcessor (hub ids or local directories, same code path)."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    torch_dtype = getattr(torch, dtype) if dtype else (torch.float16 if device.startswith("cuda") else torch.float32)
    processor = CLIPProcessor.from_pretrained(processor_path)
    model = CLIPModel.from_pretrained(model_path, revision=revision, dtype=torch_dtype)
    return model.to(device).eval(), processor


def tiny_clip_config(projection_dim: int = 16) -> Any:
    """A CLIP config with the real vocabulary (49408) and 224 px input, but width 32 and 1 layer."""
    from transformers import CLIPConfig

    text = {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 77, "eos_token_id": 49407,
            "bos_token_id": 49406, "pad_token_id": 49407}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 224, "patch_size": 32}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def save_tiny_clip(directory: str, seed: int = 0) -> None:
    """Save a tiny random CLIPModel + an offline CLIPProcessor (real BPE tokenizer) to `directory`."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    from eligen_bench.tiny import clip_tokenizer

    torch.manual_seed(seed)
    CLIPModel(tiny_clip_config()).save_pretrained(directory)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=clip_tokenizer()).save_pretrained(directory)
