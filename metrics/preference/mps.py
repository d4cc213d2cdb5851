"""`mps`: Multi-dimensional Preference Score (Zhang et al., CVPR 2024; github Kwai-Kolors/MPS).

Scoring follows the reference inference code for overall preference: the prompt and a fixed
*condition* text (the list of preference aspects) are encoded into CLIP-H token features; text
tokens whose (max over condition tokens) similarity, divided by its maximum, exceeds
`condition_threshold` stay visible; the image tokens attend to them through the cross-modal
model; score = logit_scale.exp() * cos(first fused image token, prompt EOS embedding).
Per-image scores only: the pairwise win rates of the EliGen paper (Table 2) are computed by the
report stage.

Choices, recorded in the identity:
- `condition`: the 'overall' condition of the MPS README (with its final period).
- `condition_threshold`: 0.3, as in the MPS evaluation scripts and DiffSynth-Studio's MPS
  scorer (the README's pairwise `forward` uses 0.01).
- The reference divides by the maximum over the whole batch and always runs one prompt at a
  time; here the maximum is taken per image, which equals the reference and makes scores
  independent of batching.

Checkpoints (`checkpoint`, a local file; there is no official hub repository, the MPS README links
`MPS_overall_checkpoint.pth` on Google Drive):
- '.pth' (the release): a *pickled full model*. Unpickling runs code, so it is refused unless
  `allow_pickle=True`; it also needs the MPS repository's `trainer` package importable
  (`pip install -e` of Kwai-Kolors/MPS). The unpickled object is scored as is.
- '.safetensors' (e.g. DiffSynth-Studio's conversion `MPS_overall_checkpoint_diffsynth
  .safetensors`): loaded into our rebuild (`mps_net.MPSNet`, CLIP config from `processor_id`)
  without pickle; the cross-model sizes are read off the weight shapes.

Verified offline: the scoring logic and both loaders on tiny random models (saved and reloaded).
Not verified here: numerical agreement with the released checkpoint (needs the weights).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from eligen_bench.api.metric import Metric, ScoreItem, ScoreRow, row
from eligen_bench.errors import InputError
from eligen_bench.tiny import TINY_WARNING

PROCESSOR_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
CHECKPOINT_SOURCE = "https://drive.google.com/file/d/17qrK_aJkVNM75ZEvMEePpLj6L867MLkN (MPS README)"
CONDITION_OVERALL = (
    "light, color, clarity, tone, style, ambiance, artistry, shape, face, hair, hands, limbs, "
    "structure, instance, texture, quantity, attributes, position, number, location, word, things."
)
TINY_ID = "tiny-random-mps"


class MPS(Metric):
    """Per-image MPS (overall condition) of the image vs the global prompt (higher is better)."""

    name = "mps"
    display_name = "MPS"
    reference: ClassVar[str] = "Kwai-Kolors/MPS@be9027f: eval_overall_mps_on_hpdv2.py, trainer/models/cross_modeling.py"
    level = "image"
    higher_is_better = True
    description = "MPS: Multi-dimensional Preference Score (overall condition) vs the global prompt"
    in_default_run = False  # needs a local checkpoint file (and opt-in for the pickled one)
    defaults: ClassVar[dict[str, Any]] = {
        "checkpoint": None,
        "allow_pickle": False,
        "processor_id": PROCESSOR_ID,
        "condition": CONDITION_OVERALL,
        "condition_threshold": 0.3,
        "dtype": None,
    }

    def model_ids(self) -> dict[str, str]:
        if self.profile == "tiny":
            return {"model": TINY_ID, "processor": TINY_ID}
        checkpoint = self.options["checkpoint"]
        return {
            "model": "Kwai-Kolors/MPS overall",
            "checkpoint": Path(checkpoint).name if checkpoint else "unset",
            "processor": self.options["processor_id"],
        }

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["options"].pop("allow_pickle", None)  # how it was allowed to load, not what it scores
        ident["options"]["checkpoint"] = self.model_ids().get("checkpoint")
        if self.profile == "tiny":
            ident["warning"] = TINY_WARNING
        return ident

    def load(self) -> Any:
        device = self.resolve_device()
        key = ("mps", *sorted(self.model_ids().items()), str(self.options["checkpoint"]), self.profile,
               device, self.options["dtype"])
        return self.cache.get(key, lambda: self._build(device))

    def _build(self, device: str) -> tuple[Any, Any, Any]:
        if self.profile == "tiny":
            with tempfile.TemporaryDirectory(prefix="tiny-mps-") as directory:
                save_tiny_mps(directory)
                return load_mps(str(Path(directory) / "mps.safetensors"), directory, device, None, False)
        checkpoint = self.options["checkpoint"]
        if not checkpoint:
            raise InputError(
                f"needs checkpoint=<path to MPS_overall_checkpoint.pth or a .safetensors conversion>; "
                f"download: {CHECKPOINT_SOURCE}",
                where="metric 'mps'",
                field="checkpoint",
            )
        return load_mps(str(checkpoint), self.options["processor_id"], device, self.options["dtype"],
                        bool(self.options["allow_pickle"]))

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        net, tokenizer, image_processor = self.model
        scores = mps_scores(
            net, tokenizer, image_processor, [item.load_image() for item in items],
            [item.layout.prompt for item in items], self.options["condition"],
            float(self.options["condition_threshold"]),
        )
        extra = {"warning": TINY_WARNING} if self.profile == "tiny" else {}
        rows = []
        for item, value in zip(items, scores, strict=True):
            if math.isfinite(value):
                rows.append(row(self, item, value, **extra))
            else:  # e.g. every text token masked out: keep the row, flag it
                rows.append(row(self, item, math.nan, status="invalid", reason="non-finite score", **extra))
        return rows


def mps_scores(net: Any, tokenizer: Any, image_processor: Any, images: Sequence[Any], prompts: Sequence[str],
               condition: str, threshold: float) -> list[float]:
    """MPS of each (image, prompt) pair; `net` is the reference model object or an `MPSNet`.

    Uses only what both expose: `net.model` (a transformers CLIPModel: text_model, vision_model,
    text_projection, visual_projection, logit_scale) and `net.cross_model(image, text, mask)`.
    """
    import torch

    clip = net.model
    param = next(net.parameters())
    device, dtype = param.device, param.dtype

    def tokens(texts: Sequence[str]) -> Any:
        return tokenizer(list(texts), max_length=tokenizer.model_max_length, padding="max_length",
                         truncation=True, return_tensors="pt").input_ids.to(device)

    def text_features(ids: Any) -> tuple[Any, Any]:
        # Reference: projected token features and projected EOS (pooled) feature, no attention mask.
        out = clip.text_model(input_ids=ids)
        return clip.text_projection(out[0]), clip.text_projection(out[1])

    pixels = image_processor(images=list(images), return_tensors="pt")["pixel_values"].to(device, dtype)
    with torch.no_grad():
        text_f, text_eos = text_features(tokens(prompts))
        condition_f, _ = text_features(tokens([condition] * len(prompts)))
        image_f = clip.visual_projection(clip.vision_model(pixel_values=pixels)[0])
        sim = torch.einsum("bid,bjd->bji", text_f, condition_f).amax(dim=1, keepdim=True)
        sim = sim / sim.amax(dim=(1, 2), keepdim=True)
        mask = torch.zeros_like(sim).masked_fill(~(sim > threshold), float("-inf"))
        mask = mask.repeat(1, image_f.shape[1], 1).to(dtype)
        fused = net.cross_model(image_f, text_f, mask)[:, 0, :]
        fused = fused / fused.norm(dim=-1, keepdim=True)
        text_eos = text_eos / text_eos.norm(dim=-1, keepdim=True)
        scores = net.logit_scale.exp() * (fused * text_eos).sum(dim=-1)
    return [float(s) for s in scores.float().cpu()]


def load_mps(checkpoint: str, processor_path: str, device: str, dtype: str | None,
             allow_pickle: bool) -> tuple[Any, Any, Any]:
    """(net, tokenizer, image_processor) from a '.pth' (pickled model) or '.safetensors' file."""
    import torch
    from transformers import AutoTokenizer, CLIPImageProcessor

    path = Path(checkpoint)
    if not path.is_file():
        raise InputError(f"no such file {checkpoint!r} (download: {CHECKPOINT_SOURCE})", field="checkpoint")
    torch_dtype = getattr(torch, dtype) if dtype else (torch.float16 if device.startswith("cuda") else torch.float32)
    if path.suffix == ".safetensors":
        net = _load_safetensors(path, processor_path)
    else:
        net = _load_pickle(path, allow_pickle)
    tokenizer = AutoTokenizer.from_pretrained(processor_path)
    image_processor = CLIPImageProcessor.from_pretrained(processor_path)
    return net.to(device, torch_dtype).eval(), tokenizer, image_processor


def _load_pickle(path: Path, allow_pickle: bool) -> Any:
    import torch

    if not allow_pickle:
        raise InputError(
            f"{path.name} is a pickled full model: loading it runs code from the file. Pass "
            "allow_pickle=True only for a file from a source you trust, or use a .safetensors conversion",
            where="metric 'mps'",
            field="allow_pickle",
        )
    try:
        net = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        raise InputError(
            f"unpickling {path.name} needs module {exc.name!r} from the MPS repository "
            "(github Kwai-Kolors/MPS: pip install -e .)",
            field="checkpoint",
        ) from exc
    for attribute in ("model", "cross_model", "logit_scale"):
        if not hasattr(net, attribute):
            raise InputError(f"{path.name} holds {type(net).__name__}, not an MPS model (no .{attribute})",
                             field="checkpoint")
    return net


def _load_safetensors(path: Path, config_path: str) -> Any:
    from safetensors.torch import load_file
    from transformers import CLIPConfig

    from eligen_bench.metrics.preference.mps_net import MPSNet, cross_hyperparameters

    state = load_file(str(path))
    try:
        sizes = cross_hyperparameters(state)
    except KeyError as exc:
        raise InputError(f"{path.name} is not an MPS state dict ({exc})", field="checkpoint") from exc
    net = MPSNet(CLIPConfig.from_pretrained(config_path), **sizes)
    result = net.load_state_dict(state, strict=False)
    # Buffers that are recomputed (position ids, rotary frequencies) may be absent; weights may not.
    missing = [k for k in result.missing_keys if not k.endswith(("position_ids", "inv_freq", "norm.bias"))]
    if missing or result.unexpected_keys:
        raise InputError(
            f"{path.name} does not match the MPS architecture: missing {missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}",
            field="checkpoint",
        )
    return net


def save_tiny_mps(directory: str, seed: int = 0) -> Any:
    """Save a tiny random MPSNet (as .safetensors) with its CLIP config and an offline processor."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor

    from eligen_bench.metrics.preference.mps_net import MPSNet
    from eligen_bench.metrics.preference.pickscore import tiny_clip_config
    from eligen_bench.tiny import clip_tokenizer

    torch.manual_seed(seed)
    config = tiny_clip_config(projection_dim=32)
    net = MPSNet(config, layer_num=1, dim_head=16, heads=2, ff_mult=2)
    config.save_pretrained(directory)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(Path(directory) / "mps.safetensors"))
    clip_tokenizer().save_pretrained(directory)
    CLIPImageProcessor().save_pretrained(directory)
    return net
