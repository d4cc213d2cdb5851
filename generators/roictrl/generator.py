"""ROICtrl (Gu et al., CVPR 2025): regional instance control of Stable Diffusion 1.x by ROI-Align
and ROI-Unpool, a baseline of the DEIG paper's Tables 1-3.

Our implementation on current diffusers of showlab/ROICtrl@6866543 (`roictrl/models/
stable_diffusion_models/roictrl.py`, `attention.py`, `unet_2d_condition.py`, `roictrl/pipelines/
pipeline_stable_diffusion.py`, the ROI-Unpool CUDA kernel `roictrl/cuda_extension/roiunpool.cu`
in torch), loading the released adapter `guyuchao/ROICtrl` `ROICtrl_sdv14_30K.safetensors`
(cc-by-nc-4.0) unchanged onto the base model's UNet.

The repository has no inference script or benchmark; its README links Colab notebooks, which
are not readable here. The request inputs and defaults follow the author's demo script that
the "community-finetuned models" notebook runs (guyuchao/TestRepo@e26d1d5: inference_roictrl.py,
`encode_roi_input`, `setup_pipeline`, `__main__`) and the reference pipeline's signature:
- each instance caption is encoded alone by the base model's CLIP text encoder (77 tokens,
  padded) and its box given as normalised xyxy, in up to 30 slots;
- classifier-free guidance runs the fusers in both halves (`use_instance_cfg=True`): in the
  unconditional half every used slot attends to the negative prompt's tokens instead of its
  caption, with the same boxes;
- the negative prompt "worst quality, low quality, blurry, low resolution, low quality" for
  the global prompt and the instances, 50 steps, guidance 7.5, the adapter in every step
  (`roictrl_scheduled_sampling_beta=1.0`), the base model's own scheduler, float16;
- noise from a CPU `torch.Generator` seeded with the request's seed, drawn in the model dtype
  as the reference's `randn_tensor` does.

The base model: the demo loads community fine-tunes of SD 1.x (ChilloutMix, Realistic Vision,
GhostMix, Anything v4) to show compatibility. Our default is `CompVis/stable-diffusion-v1-4`, the
model the adapter was trained on (`ROICtrl_sdv14_30K`) and the base of the DEIG paper's other
SD baselines, which trains and evaluates at 512x512 (Appendix, "Implementation Details") without
naming ROICtrl's base; `model=` takes any SD 1.x checkpoint in diffusers format.

A layout without entities runs the base model alone (noted in `adapt_notes`): the reference
cannot take one (the demo's `encode_roi_input` fails on an empty list, and its fusers on an
all-empty batch), and the adapter switched off is its own `roictrl_scheduled_sampling_beta=0`
path, the demo's baseline.

One deviation, recorded in the manifest's `load_notes`: the fusers' random slot orders
(`torch.randperm(30)` per fuser call) are drawn from the request's generator after the noise,
where the reference draws them from the global RNG, so a seed gives one image.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eligen_bench.api.generator import (
    Capabilities,
    GenerationRequest,
    Generator,
    release_cuda_memory,
)
from eligen_bench.errors import InputError
from eligen_bench.generators.stable_diffusion.common import (
    TINY_MODEL_ID,
    check_fractions,
    check_sd_settings,
    resolve_dtype,
)
from eligen_bench.layout import Layout

if TYPE_CHECKING:
    import torch
    from PIL import Image

REFERENCE_COMMIT = "6866543"
DEMO = "guyuchao/TestRepo@e26d1d5: inference_roictrl.py"

MAX_INSTANCES = 30
"""`encode_roi_input(..., max_rois=30)` (inference_roictrl.py@e26d1d5) and the fusers' 30 slots."""

REFERENCE_NEGATIVE_PROMPT = "worst quality, low quality, blurry, low resolution, low quality"
"""inference_roictrl.py@e26d1d5 `__main__`: the `negative_prompt` of `encode_roi_input` and of the pipeline."""

EMPTY_LAYOUT_NOTE = ("no entities: the adapter is off, the base model alone (the reference cannot run without an "
                     "instance; this is its roictrl_scheduled_sampling_beta=0 path, the demo's baseline)")

SLOT_ORDER_NOTE = ("fuser slot orders: torch.randperm(30) per fuser call drawn from the request's CPU generator "
                   "after the initial noise (the reference draws them from torch's global RNG)")


class RoiCtrlGenerator(Generator):
    """ROICtrl on Stable Diffusion 1.x with the released SD 1.4 adapter."""

    name = "roictrl"
    description = "ROICtrl (SD 1.x + ROI-Align / ROI-Unpool instance adapter), native implementation"
    reference = f"showlab/ROICtrl@{REFERENCE_COMMIT}: roictrl/pipelines/pipeline_stable_diffusion.py; {DEMO}"
    in_default_run = False
    """Named explicitly (`--generators roictrl`): its adapter is under a non-commercial licence."""
    capabilities = Capabilities(boxes=True, masks=False, inpainting=False, max_entities=MAX_INSTANCES,
                                resolution=(512, 512))
    defaults = {
        # Trained on SD 1.4 (the checkpoint's name); the demo's fine-tunes are SD 1.x too (module docstring).
        "model": "CompVis/stable-diffusion-v1-4",
        "revision": None,
        "adapter": "guyuchao/ROICtrl",  # the released checkpoint on the hub
        "adapter_file": "ROICtrl_sdv14_30K.safetensors",  # inference_roictrl.py@e26d1d5 `roictrl_path`
        "adapter_revision": None,
        "checkpoint": None,  # a local copy of the adapter file instead of the hub's
        # pipeline_stable_diffusion.py@6866543 `__call__` defaults, which the demo keeps
        "steps": 50,
        "guidance_scale": 7.5,
        "scheduled_sampling_beta": 1.0,  # inference_roictrl.py@e26d1d5 input_data (the adapter in every step)
        "negative_prompt": REFERENCE_NEGATIVE_PROMPT,
        # DEIG (Appendix, Implementation Details): "We train and evaluate models at a resolution of 512x512";
        # the demo's own images are 1024x512.
        "width": 512,
        "height": 512,
        # inference_roictrl.py@e26d1d5: UNet and pipeline in float16 on CUDA ("auto": float32 on the CPU)
        "dtype": "auto",
    }

    def __init__(self, profile: str = "full", device: str | None = None, **options: Any):
        super().__init__(profile, device, **options)
        check_sd_settings(self.settings, self.name)
        check_fractions(self.settings, self.name, "scheduled_sampling_beta")
        for key in ("width", "height"):  # the fusers reshape tokens to grids at 1/8 ... 1/64 of the image
            if self.settings[key] % 64:
                raise InputError(f"must be a multiple of 64, got {self.settings[key]!r}",
                                 where=f"generator {self.name!r}", field=key)
        checkpoint = self.settings["checkpoint"]
        if checkpoint is not None and not Path(str(checkpoint)).is_file():
            raise InputError(f"no such file: {checkpoint}", where=f"generator {self.name!r}", field="checkpoint")
        self._parts: dict[str, Any] = {}

    def profile_overrides(self) -> dict[str, Any]:
        if self.profile != "tiny":
            return {}
        # beta 0.5 of PNDM's 3 timesteps: the adapter on the first, plain blocks after (both paths run).
        return {"steps": 2, "width": 64, "height": 64, "scheduled_sampling_beta": 0.5}

    def adapt(self, layout: Layout) -> tuple[Layout, list[str]]:
        layout, notes = super().adapt(layout)
        if not layout.entities:
            notes.append(EMPTY_LAYOUT_NOTE)
        return layout, notes

    def model_ids(self) -> dict[str, str]:
        if self.profile == "tiny":
            return {"pipeline": TINY_MODEL_ID}
        s = self.settings
        adapter = s["checkpoint"] or f"{s['adapter']}/{s['adapter_file']}@{s['adapter_revision'] or 'main'}"
        return {"stable_diffusion": f"{s['model']}@{s['revision'] or 'main'}", "roictrl": str(adapter)}

    # ---- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        from eligen_bench.generators.roictrl.tiny import build_tiny_pipeline

        device = self.resolve_device()
        dtype = resolve_dtype(self.settings["dtype"], device)
        if self.profile == "tiny":
            with tempfile.TemporaryDirectory(prefix="roictrl-tiny-") as tmp:
                checkpoint = build_tiny_pipeline(tmp)
                parts = load_parts(tmp, None, checkpoint, dtype)
        else:
            parts = load_parts(self.settings["model"], self.settings["revision"], self._adapter_path(), dtype)
        for key in ("vae", "text_encoder", "unet"):
            parts[key] = parts[key].to(device).eval()
        parts["device"], parts["dtype"] = device, dtype
        self._parts = parts
        self.load_notes = [SLOT_ORDER_NOTE]

    def _adapter_path(self) -> str:
        s = self.settings
        if s["checkpoint"]:
            return str(s["checkpoint"])
        from huggingface_hub import hf_hub_download

        return hf_hub_download(s["adapter"], s["adapter_file"], revision=s["adapter_revision"])

    def close(self) -> None:
        self._parts = {}
        self._loaded = False
        release_cuda_memory()

    # ---- generation ------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Image.Image]:
        """One request at a time: the instances are per image."""
        self.ensure_loaded()
        return [self._generate_one(request) for request in requests]

    def _generate_one(self, request: GenerationRequest) -> Image.Image:
        import torch

        layout, _ = self.adapt(request.layout)
        generator = torch.Generator("cpu").manual_seed(request.seed)
        with torch.no_grad():
            return self.decode(self.denoise(layout, generator))

    def denoise(self, layout: Layout, generator: torch.Generator) -> torch.Tensor:
        """The final latent of a layout: noise, then the fusers' slot orders, from `generator`."""
        import torch

        from eligen_bench.generators.roictrl.adapter import instance_control

        parts, s = self._parts, self.settings
        unet, scheduler, state = parts["unet"], parts["scheduler"], parts["state"]
        device, dtype = parts["device"], parts["dtype"]
        guided = s["guidance_scale"] > 1.0
        scheduler.set_timesteps(s["steps"], device=device)
        timesteps = scheduler.timesteps
        factor = 2 ** (len(parts["vae"].config.block_out_channels) - 1)
        shape = (1, unet.config.in_channels, s["height"] // factor, s["width"] // factor)
        # randn_tensor with a CPU generator: drawn on the CPU in the model dtype, then moved.
        latents = torch.randn(shape, generator=generator, dtype=dtype).to(device) * scheduler.init_noise_sigma
        # Encoded one text per call as the pipeline's `encode_prompt` does (the captions as one batch, as
        # `encode_roi_input` does), so each text sees the batch shapes it sees in the reference.
        negative = self._encode([s["negative_prompt"]]) if guided else None
        context = self._encode([layout.prompt])
        context = torch.cat([negative, context]) if guided else context
        if layout.entities:  # without instances the adapter stays off (EMPTY_LAYOUT_NOTE)
            state.control = instance_control(unet, *self._instances(layout, negative), (s["height"], s["width"]),
                                             generator)
        adapter_steps = int(s["scheduled_sampling_beta"] * len(timesteps))
        try:
            for i, t in enumerate(timesteps):
                if i == adapter_steps and state.control is not None:  # the reference's `enable_fuser(False)`
                    state.control.enabled = False
                model_input = torch.cat([latents] * 2) if guided else latents
                model_input = scheduler.scale_model_input(model_input, t)
                eps = unet(model_input, t, encoder_hidden_states=context).sample
                if guided:
                    eps_uncond, eps_text = eps.chunk(2)
                    eps = eps_uncond + s["guidance_scale"] * (eps_text - eps_uncond)
                latents = scheduler.step(eps, t, latents, **step_kwargs(scheduler, generator)).prev_sample
        finally:
            state.control = None
        return latents

    def _instances(self, layout: Layout, negative: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, 4) boxes and (B, K, 77, D) caption tokens, B = [unconditional,] conditional: in
        the unconditional half each slot takes the negative prompt's tokens `negative` (1, 77, D)
        (`encode_roi_input`); without guidance, the conditional half alone."""
        import torch

        dtype, device = self._parts["dtype"], self._parts["device"]
        captions = [e.prompt for e in layout.entities]
        boxes = torch.tensor([list(e.bbox) for e in layout.entities], dtype=torch.float32).reshape(-1, 4)
        boxes = boxes.to(device=device, dtype=dtype)[None]
        tokens = self._encode(captions)[None]
        if negative is None:
            return boxes, tokens
        return torch.cat([boxes, boxes]), torch.cat([negative[None].expand_as(tokens), tokens])

    def _encode(self, texts: list[str]) -> torch.Tensor:
        """CLIP token embeddings, each text padded (and truncated) to the tokenizer's 77 tokens, as the
        reference encodes prompts and captions; the texts cut short go to the manifest."""
        from eligen_bench.truncation import check_prompts

        tokenizer, text_encoder = self._parts["tokenizer"], self._parts["text_encoder"]
        check_prompts(self, "clip", tokenizer, texts, tokenizer.model_max_length)
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(text_encoder.device)
        return text_encoder(ids)[0].to(self._parts["dtype"])

    def decode(self, latents: torch.Tensor) -> Image.Image:
        """VAE decode, (x / 2 + 0.5) clamped to [0, 1], x 255 rounded (diffusers' postprocess)."""
        from PIL import Image

        vae = self._parts["vae"]
        image = vae.decode(latents / vae.config.scaling_factor).sample
        image = (image / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).float().cpu().numpy()
        return Image.fromarray((image * 255).round().astype(np.uint8))


def step_kwargs(scheduler: Any, generator: Any) -> dict[str, Any]:
    """`eta=0.0` and the generator for the schedulers whose `step` takes them (the pipeline's
    `prepare_extra_step_kwargs`)."""
    import inspect

    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


# ---- model parts -------------------------------------------------------------------------------


def load_parts(source: str, revision: str | None, adapter_path: str | Path, dtype: Any) -> dict[str, Any]:
    """The base model's VAE, tokenizer, text encoder and scheduler (as `StableDiffusionPipeline.
    from_pretrained` loads them, the demo's `setup_pipeline`), and its UNet with the adapter
    installed and the released file's tensors loaded."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from eligen_bench.generators.roictrl.adapter import install_adapter
    from eligen_bench.generators.roictrl.checkpoint import load_adapter, read_state_dict

    state_dict = read_state_dict(adapter_path)
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", revision=revision, torch_dtype=dtype)
    try:
        state = install_adapter(unet)
    except ValueError as exc:
        raise InputError(f"the ROICtrl adapter does not fit this UNet: {exc}", where=f"model {source!r}",
                         field="model") from None
    load_adapter(unet, state_dict, where=f"checkpoint {str(adapter_path)!r}")
    pipe = StableDiffusionPipeline.from_pretrained(source, unet=unet, revision=revision, torch_dtype=dtype,
                                                   safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    return {"unet": unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder, "tokenizer": pipe.tokenizer,
            "scheduler": pipe.scheduler, "state": state}
