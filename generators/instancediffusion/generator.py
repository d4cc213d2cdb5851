"""InstanceDiffusion (Wang et al., CVPR 2024): instance-level control of Stable Diffusion 1.5.

Our implementation on current diffusers of the reference code (frank-xwang/InstanceDiffusion at
commit 722900e): UniFusion grounding tokens (`instdiff_unifusion`), the gated self-attention
fuser of every transformer block (diffusers' `GatedSelfAttentionDense`, the same layer),
ScaleU (`instdiff_scaleu`), and the PLMS sampler with the multi-instance sampler
(`instdiff_sampler`). The released `instancediffusion_sd15.pth` loads unchanged
(`instdiff_checkpoint`); the VAE, text encoder and tokenizer are Stable Diffusion 1.5's, which
InstanceDiffusion keeps frozen. Boxes and masks are both honoured: a layout with masks runs the
reference's mask configuration (configs/test_mask.yaml: polygon and mask tokens on), a layout
without runs its box configuration (configs/test_box.yaml: those tokens null). Points are the
box centres, as in the reference evaluation; scribbles are never given (null in every test
configuration).

Defaults: the reference's COCO evaluation (README.md "Model Quantitative Evaluation on MSCOCO":
`eval_local.py --test_config configs/test_mask.yaml --mis 0.36 --alpha 1.0`), whose other
settings are eval_local.py's defaults: PLMS 50 steps, guidance 7.5, its negative prompt,
512x512, at most 30 instances, no masked self-attention (`--use_masked_att` not given).

Classifier-free guidance follows the reference's `p_sample_plms`: the unconditional branch
takes the negative prompt and the null grounding input (every slot empty), through the same
fusers. Phrase features are the pooled output of the text encoder (the reference's CLIP
ViT-L/14 `text_model_output.pooler_output`; SD 1.5's text encoder is that model, frozen).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eligen_bench.api.generator import (
    Capabilities,
    GenerationRequest,
    Generator,
    release_cuda_memory,
)
from eligen_bench.errors import InputError
from eligen_bench.generators.stable_diffusion.common import (
    check_fractions,
    check_sd_settings,
    resolve_dtype,
)
from eligen_bench.layout import Layout

if TYPE_CHECKING:
    import torch
    from PIL import Image

REFERENCE_COMMIT = "722900e"
MAX_INSTANCES = 30
"""`max_objs = 30` (eval_local.py@722900e `main`)."""

REFERENCE_NEGATIVE_PROMPT = (
    "cartoon style, painting style, longbody, lowres, bad anatomy, bad hands, missing fingers, "
    "extra digit, fewer digits, cropped, worst quality, low quality"
)
"""`--negative_prompt` default of eval_local.py@722900e (inference.py's demo default lacks the first two)."""

TINY_MODEL_ID = "tiny-random (built from configs at load time)"


class InstanceDiffusionGenerator(Generator):
    """InstanceDiffusion on SD 1.5: UniFusion, gated fusers, ScaleU and the multi-instance sampler."""

    name = "instancediffusion"
    display_name = "InstanceDiffusion"
    description = "InstanceDiffusion (SD 1.5 + UniFusion, ScaleU, multi-instance sampler), native implementation"
    reference = f"frank-xwang/InstanceDiffusion@{REFERENCE_COMMIT}: eval_local.py, README.md (MSCOCO evaluation command)"
    in_default_run = False
    """Named explicitly (`--generators instancediffusion`): the default run keeps its five methods."""
    capabilities = Capabilities(boxes=True, masks=True, inpainting=False, max_entities=MAX_INSTANCES,
                                resolution=(512, 512))
    defaults = {
        "model": "xudongw/InstanceDiffusion",  # README.md@722900e: the released checkpoint on the hub
        "checkpoint_file": "instancediffusion_sd15.pth",
        "checkpoint": None,  # a local .pth instead of the hub file
        "revision": None,
        "base_model": "stable-diffusion-v1-5/stable-diffusion-v1-5",  # SD 1.5 (README.md@722900e: v1-5-pruned-emaonly)
        "steps": 50,  # eval_local.py@722900e `run`: steps = 50, PLMSSamplerInst
        "guidance_scale": 7.5,  # eval_local.py@722900e --guidance_scale default
        "alpha": 1.0,  # README.md@722900e COCO evaluation command: --alpha 1.0
        "mis": 0.36,  # README.md@722900e COCO evaluation command: --mis 0.36
        "negative_prompt": REFERENCE_NEGATIVE_PROMPT,
        "width": 512,  # configs/test_mask.yaml@722900e image_size 64 (latent) x 8
        "height": 512,
        "dtype": "float32",  # eval_local.py@722900e runs the fp32 model without autocast ("auto": fp16 on CUDA)
        "allow_pickle": False,
    }

    def __init__(self, profile: str = "full", device: str | None = None, **options: Any):
        super().__init__(profile, device, **options)
        check_sd_settings(self.settings, self.name)
        check_fractions(self.settings, self.name, "alpha", "mis")
        if not isinstance(self.settings["allow_pickle"], bool):
            raise InputError("must be true or false", where=f"generator {self.name!r}", field="allow_pickle")
        self._parts: dict[str, Any] = {}

    def profile_overrides(self) -> dict[str, Any]:
        if self.profile != "tiny":
            return {}
        # 2 steps: int(2 * 0.5) = 1 step each of MIS and of grounding, so both switches are crossed.
        return {"steps": 2, "width": 64, "height": 64, "mis": 0.5, "alpha": 0.5}

    def model_ids(self) -> dict[str, str]:
        if self.profile == "tiny":
            return {"pipeline": TINY_MODEL_ID}
        s = self.settings
        checkpoint = s["checkpoint"] or f"{s['model']}/{s['checkpoint_file']}@{s['revision'] or 'main'}"
        return {"checkpoint": str(checkpoint), "base_model": s["base_model"]}

    def adapt(self, layout: Layout) -> tuple[Layout, list[str]]:
        layout, notes = super().adapt(layout)
        if layout.has_masks and any(e.mask is None for e in layout.entities):
            notes.append("entities without a mask take their box as mask (the layout runs the mask configuration)")
        return layout, notes

    # ---- loading ------------------------------------------------------------------------

    def load(self) -> None:
        device = self.resolve_device()
        dtype = resolve_dtype(self.settings["dtype"], device)
        if self.profile == "tiny":
            with tempfile.TemporaryDirectory(prefix="instancediffusion-tiny-") as tmp:
                parts = self._load_tiny(Path(tmp))
        else:
            parts = self._load_parts(self._checkpoint_path(), self.settings["base_model"], None,
                                     self._unet_config())
        for key in ("unet", "vae", "text_encoder", "sd_conv_in"):
            if parts.get(key) is not None:
                parts[key] = parts[key].to(device=device, dtype=dtype).eval()
        self._parts = parts

    def _unet_config(self) -> dict[str, Any]:
        from eligen_bench.generators.instancediffusion.checkpoint import SD15_UNET_CONFIG

        return SD15_UNET_CONFIG

    def _checkpoint_path(self) -> str:
        s = self.settings
        if s["checkpoint"]:
            return str(s["checkpoint"])
        from huggingface_hub import hf_hub_download

        return hf_hub_download(s["model"], s["checkpoint_file"], revision=s["revision"])

    def _load_tiny(self, directory: Path) -> dict[str, Any]:
        from eligen_bench.generators.instancediffusion.tiny import (
            TINY_UNET_CONFIG,
            write_tiny_checkpoint,
        )
        from eligen_bench.generators.stable_diffusion.common import build_tiny_sd_pipeline

        build_tiny_sd_pipeline(str(directory / "base"), gated=False)
        checkpoint = write_tiny_checkpoint(directory / "instancediffusion_tiny.pth")
        return self._load_parts(str(checkpoint), str(directory / "base"), None, TINY_UNET_CONFIG)

    def _load_parts(self, checkpoint: str, base: str, revision: str | None,
                    unet_config: dict[str, Any]) -> dict[str, Any]:
        from diffusers import AutoencoderKL
        from transformers import CLIPTextModel, CLIPTokenizer

        from eligen_bench.generators.instancediffusion.checkpoint import load_unet

        parts: dict[str, Any] = {
            "unet": load_unet(checkpoint, unet_config, self.settings["allow_pickle"]),
            "vae": AutoencoderKL.from_pretrained(base, subfolder="vae", revision=revision),
            "text_encoder": CLIPTextModel.from_pretrained(base, subfolder="text_encoder", revision=revision),
            "tokenizer": CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", revision=revision),
            "sd_conv_in": None,
        }
        if self.settings["alpha"] < 1.0:
            parts["sd_conv_in"] = _sd_conv_in(base, revision, parts["unet"].conv_in)
        return parts

    # ---- generation ---------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Image.Image]:
        self.ensure_loaded()
        return [self._generate_one(request) for request in requests]

    def _generate_one(self, request: GenerationRequest) -> Image.Image:
        import torch

        from eligen_bench.generators.instancediffusion.layout import (
            instance_grounding,
            layout_grounding,
        )
        from eligen_bench.generators.instancediffusion.sampler import (
            PlmsSchedule,
            grounding_alphas,
            sample_mis,
        )

        layout, _ = self.adapt(request.layout)
        s = self.settings
        use_masks = layout.has_masks
        schedule = PlmsSchedule.ldm(s["steps"])
        with torch.no_grad():
            negative = self._encode([s["negative_prompt"]])
            features = self._phrase_features([e.prompt for e in layout.entities])
            null_tokens = self._tokens(layout_grounding(replace(layout, entities=()), use_masks), features[:0],
                                       use_masks)
            inputs = [(layout.prompt, layout_grounding(layout, use_masks), features)]
            if int(len(schedule) * s["mis"]) > 0:
                inputs += [(e.prompt, instance_grounding(layout, i, use_masks), features[i:i + 1])
                           for i, e in enumerate(layout.entities)]
            eps_fns = [self._eps_fn(self._encode([prompt]), negative, self._tokens(g, f, use_masks), null_tokens)
                       for prompt, g, f in inputs]
            noise = self._initial_noise(request.seed)
            self._reset_conv_in()
            latents = sample_mis(eps_fns, noise, schedule, float(s["mis"]),
                                 grounding_alphas(len(schedule), float(s["alpha"])), on_step=self._on_step)
            return self._decode(latents)

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        """Per-token text features of CLIP, 77 tokens (the reference's FrozenCLIPEmbedder)."""
        return self._parts["text_encoder"](self._token_ids(prompts))[0]

    def _phrase_features(self, phrases: list[str]) -> torch.Tensor:
        """Pooled CLIP text features, one per phrase (the reference's `get_clip_feature`)."""
        encoder = self._parts["text_encoder"]
        if not phrases:
            return torch_zeros((0, encoder.config.hidden_size), encoder)
        return encoder(self._token_ids(phrases)).pooler_output

    def _token_ids(self, prompts: list[str]) -> torch.Tensor:
        tokenizer = self._parts["tokenizer"]
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        return ids.to(self._parts["text_encoder"].device)

    def _tokens(self, grounding: Any, features: torch.Tensor, use_masks: bool) -> torch.Tensor:
        """UniFusion tokens of one grounding input (they do not depend on the step: computed once)."""
        import torch

        unet = self._parts["unet"]
        device, dtype = unet.device, unet.dtype
        text = torch.zeros((1, len(grounding.slots), features.shape[-1]), device=device, dtype=dtype)
        text[0, :features.shape[0]] = features.to(dtype)

        def tensor(array: Any) -> torch.Tensor:
            return torch.from_numpy(array).unsqueeze(0).to(device=device, dtype=dtype)

        return unet.position_net.embed(
            boxes=tensor(grounding.boxes), masks=tensor(grounding.slots), positive_embeddings=text,
            points=tensor(grounding.points), polygons=tensor(grounding.polygons),
            segs=tensor(grounding.segs) if grounding.segs is not None else None, use_masks=use_masks)

    def _eps_fn(self, context: torch.Tensor, negative: torch.Tensor, tokens: torch.Tensor,
                null_tokens: torch.Tensor):
        """eps(x, t, alpha) with guidance: [unconditional, conditional] in one UNet batch."""
        import torch

        unet = self._parts["unet"]
        scale = float(self.settings["guidance_scale"])
        both_context = torch.cat([negative, context])
        both_tokens = torch.cat([null_tokens, tokens])

        def eps(x: torch.Tensor, t: int, alpha: float) -> torch.Tensor:
            # alpha is 1 or 0 (grounding_alphas); at 0 the fusers are skipped, which is the
            # reference's scale-0 fuser (x + 0 * ...).
            kwargs = {"gligen": {"tokens": both_tokens}} if alpha > 0 else None
            timestep = torch.full((2,), t, device=x.device, dtype=torch.long)
            out = unet(torch.cat([x, x]), timestep, encoder_hidden_states=both_context,
                       cross_attention_kwargs=kwargs).sample
            uncond, cond = out.chunk(2)
            return uncond + scale * (cond - uncond)

        return eps

    def _reset_conv_in(self) -> None:
        parts = self._parts
        parts.setdefault("instdiff_conv_in", parts["unet"].conv_in)
        parts["unet"].conv_in = parts["instdiff_conv_in"]

    def _on_step(self, index: int, alpha: float) -> None:
        """At an ungrounded step the reference swaps in SD 1.5's first convolution
        (`restore_first_conv_from_SD`, plms_instance.py@722900e); the swap then stays, as there,
        for the rest of this image (it is undone before the next image)."""
        if alpha == 0 and self._parts.get("sd_conv_in") is not None:
            self._parts["unet"].conv_in = self._parts["sd_conv_in"]

    def _initial_noise(self, seed: int) -> torch.Tensor:
        import torch

        unet = self._parts["unet"]
        generator = torch.Generator("cpu").manual_seed(seed)
        shape = (1, unet.config.in_channels, self.settings["height"] // 8, self.settings["width"] // 8)
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(unet.device, unet.dtype)

    def _decode(self, latents: torch.Tensor) -> Image.Image:
        """VAE decode, clamp to [-1, 1], then x 255 truncated to uint8 (eval_local.py@722900e `run`)."""
        import numpy as np
        from PIL import Image

        vae = self._parts["vae"]
        image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        image = (image.clamp(-1, 1) * 0.5 + 0.5)[0].float().cpu().numpy().transpose(1, 2, 0) * 255
        return Image.fromarray(image.astype(np.uint8))

    def close(self) -> None:
        self._parts = {}
        self._loaded = False
        release_cuda_memory()


def torch_zeros(shape: tuple[int, int], module: Any) -> torch.Tensor:
    import torch

    return torch.zeros(shape, device=module.device, dtype=module.dtype)


def _sd_conv_in(base: str, revision: str | None, like: Any) -> Any:
    """SD 1.5's own first convolution (the reference ships it as SD_v1_5_input_conv_weight_bias.pth)."""
    import copy

    from diffusers import UNet2DConditionModel

    conv = copy.deepcopy(like)
    sd_unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", revision=revision)
    conv.load_state_dict(sd_unet.conv_in.state_dict())
    del sd_unet
    return conv
