"""MIGC (Zhou et al., CVPR 2024): multi-instance generation controller on Stable Diffusion 1.4.

Our implementation on current diffusers of limuloo/MIGC@effd6cc (`inference_mig_benchmark.py`,
`migc/migc_pipeline.py`, `migc/migc_arch.py`), loading the released `MIGC_SD14.ckpt`
unchanged (`migc_checkpoint=PATH`: the file is distributed through a file-sharing site, not
the hub). The controller (`migc_controller.py`) replaces the cross-attention of the layers
the checkpoint holds; every other cross-attention stays plain (or uses the naive fuser while
`step <= naive_fuser_steps`).

Layout -> reference inputs: the global prompt, then one phrase per entity in layout order;
boxes stay normalised xyxy for the masks and become [x0, x1, y0, y1] for the box token;
with `aug_phase_with_and` each phrase is repeated min(N, 7) times joined by ", and ".
Masks are replaced by their boxes (MIGC takes boxes; MIGC++ with masks needs its own
checkpoint and controller and is not included). At most 28 instances: the shading
aggregation has 30 slot channels, background and template take two.

Noise is drawn on the CPU from the request's seed, and the same generator then draws the
SAC's random slot orders (the reference draws both from the global RNG).
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
    check_sd_settings,
    resolve_dtype,
)
from eligen_bench.layout import Layout

if TYPE_CHECKING:
    import torch
    from PIL import Image

REFERENCE_SHA = "effd6cc"

MAX_INSTANCES = 28
"""`SAC(number_pro=30)` (migc_arch.py@effd6cc): 30 slots = background + 28 instances + template."""

AUG_MAX_COPIES = 7
"""`aug_phase_with_and_function`: `min(instance_num, 7)` copies (migc_pipeline.py@effd6cc)."""

REFERENCE_NEGATIVE_PROMPT = "worst quality, low quality, bad anatomy"
"""`_encode_prompt`'s negative prompt when none is given, as in the benchmark script
(migc_pipeline.py@effd6cc; inference_mig_benchmark.py passes none)."""

TINY_MIGC_ID = "tiny-random MIGC checkpoint (written in the released format at load time)"
TINY_CHECKPOINT = "migc_tiny.ckpt"


class MigcGenerator(Generator):
    """MIGC on Stable Diffusion 1.4 with the released controller checkpoint."""

    name = "migc"
    display_name = "MIGC"
    description = "MIGC (SD 1.4 + multi-instance generation controller), native implementation"
    reference = f"limuloo/MIGC@{REFERENCE_SHA}: inference_mig_benchmark.py"
    in_default_run = False  # needs the checkpoint file (migc_checkpoint=PATH)
    capabilities = Capabilities(
        boxes=True, masks=False, inpainting=False, max_entities=MAX_INSTANCES, resolution=(512, 512)
    )
    defaults = {
        # inference_mig_benchmark.py@effd6cc: "CompVis/stable-diffusion-v1-4"
        "model": "CompVis/stable-diffusion-v1-4",
        "revision": None,
        # inference_mig_benchmark.py@effd6cc: pretrained_weights/MIGC_SD14.ckpt (a local file)
        "migc_checkpoint": None,
        "allow_pickle": False,
        # inference_mig_benchmark.py@effd6cc: pipe(..., num_inference_steps=50, guidance_scale=7.5,
        # MIGCsteps=25, aug_phase_with_and=True); NaiveFuserSteps keeps the pipeline default -1
        "steps": 50,
        "guidance_scale": 7.5,
        "migc_steps": 25,
        "naive_fuser_steps": -1,
        "aug_phase_with_and": True,
        "negative_prompt": REFERENCE_NEGATIVE_PROMPT,
        # height/width default to unet sample_size (64) x 8 in the pipeline
        "width": 512,
        "height": 512,
        # from_pretrained without torch_dtype in inference_mig_benchmark.py@effd6cc: float32
        "dtype": "float32",
    }

    def __init__(self, profile: str = "full", device: str | None = None, **options: Any):
        super().__init__(profile, device, **options)
        check_sd_settings(self.settings, self.name)
        where = f"generator {self.name!r}"
        for key in ("migc_steps", "naive_fuser_steps"):
            value = self.settings[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"must be an integer, got {value!r}", where=where, field=key)
        checkpoint = self.settings["migc_checkpoint"]
        if profile != "tiny" and not checkpoint:
            raise InputError("needs the released MIGC_SD14.ckpt: migc_checkpoint=PATH", where=where,
                             field="migc_checkpoint")
        if profile != "tiny" and not Path(checkpoint).is_file():
            raise InputError(f"no such file: {checkpoint}", where=where, field="migc_checkpoint")
        self._parts: dict[str, Any] = {}
        self._checkpoint_sha: str | None = None

    def profile_overrides(self) -> dict[str, Any]:
        if self.profile != "tiny":
            return {}
        # MIGC on step 0 only: the 2 tiny steps exercise both the controlled and the plain path.
        return {"steps": 2, "width": 64, "height": 64, "migc_steps": 0}

    def model_ids(self) -> dict[str, str]:
        if self.profile == "tiny":
            return {"stable_diffusion": TINY_MODEL_ID, "migc": TINY_MIGC_ID}
        from eligen_bench.hashing import file_sha256

        path = Path(self.settings["migc_checkpoint"])
        if self._checkpoint_sha is None and path.is_file():
            self._checkpoint_sha = file_sha256(path)
        return {
            "stable_diffusion": f"{self.settings['model']}@{self.settings['revision'] or 'main'}",
            "migc": f"{path.name} sha256:{self._checkpoint_sha or 'missing'}",
        }

    # ---- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        from eligen_bench.generators.migc.checkpoint import build_controllers, read_state_dict

        device = self.resolve_device()
        dtype = resolve_dtype(self.settings["dtype"], device)
        if self.profile == "tiny":
            with tempfile.TemporaryDirectory(prefix="migc-tiny-") as tmp:
                build_tiny_migc(tmp)
                parts = load_sd14_parts(tmp, None, dtype)
                path = Path(tmp) / TINY_CHECKPOINT
                controllers = build_controllers(read_state_dict(path), parts["unet"], where=path.name)
        else:
            path = Path(self.settings["migc_checkpoint"])
            state_dict = read_state_dict(path, allow_pickle=self.settings["allow_pickle"])
            parts = load_sd14_parts(self.settings["model"], self.settings["revision"], dtype)
            controllers = build_controllers(state_dict, parts["unet"], where=str(path))
        for key in ("vae", "text_encoder", "unet"):
            parts[key] = parts[key].to(device).eval()
        parts["state"] = install_controllers(parts["unet"], controllers, self.settings, device, dtype)
        parts["device"], parts["dtype"] = device, dtype
        self._parts = parts

    def close(self) -> None:
        self._parts = {}
        self._loaded = False
        release_cuda_memory()

    # ---- generation ------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Image.Image]:
        """One request at a time: the instance phrases and boxes are per image."""
        self.ensure_loaded()
        return [self._generate_one(request) for request in requests]

    def _generate_one(self, request: GenerationRequest) -> Image.Image:
        import torch

        layout = request.layout
        if len(layout.entities) > MAX_INSTANCES:
            raise InputError(f"{len(layout.entities)} entities, but {self.name} supports at most {MAX_INSTANCES}",
                             where=f"layout {layout.id!r}", field="entities")
        generator = torch.Generator("cpu").manual_seed(request.seed)
        with torch.no_grad():
            latent = self.denoise(layout, generator)
            return self._decode(latent)

    def denoise(self, layout: Layout, generator: torch.Generator) -> torch.Tensor:
        """The final latent for a layout (noise and slot orders drawn from `generator`)."""
        import torch

        parts, settings = self._parts, self.settings
        unet, scheduler, state = parts["unet"], parts["scheduler"], parts["state"]
        device, dtype = parts["device"], parts["dtype"]
        width, height = settings["width"], settings["height"]
        factor = 2 ** (len(parts["vae"].config.block_out_channels) - 1)
        guided = settings["guidance_scale"] > 1.0

        scheduler.set_timesteps(settings["steps"], device=device)
        noise = torch.randn((1, unet.config.in_channels, height // factor, width // factor), generator=generator)
        latent = (noise * scheduler.init_noise_sigma).to(device=device, dtype=dtype)
        phrases, boxes, masks, background = migc_layout(layout, width, height, settings["aug_phase_with_and"])
        texts = ([settings["negative_prompt"]] if guided else []) + [layout.prompt] + phrases
        context, pooled = self._encode(texts)
        state.instances = instance_inputs(boxes, masks, background, pooled[len(texts) - len(phrases):],
                                          (height, width), (height // factor, width // factor), generator,
                                          device, dtype) if phrases else None
        try:
            for i, t in enumerate(scheduler.timesteps):
                state.step = i
                model_input = torch.cat([latent] * 2) if guided else latent
                model_input = scheduler.scale_model_input(model_input, t)
                eps = unet(model_input, t, encoder_hidden_states=context).sample
                if guided:
                    eps_uncond, eps_text = eps.chunk(2)
                    eps = eps_uncond + settings["guidance_scale"] * (eps_text - eps_uncond)
                latent = scheduler.step(eps, t, latent).prev_sample
        finally:
            state.instances = None
        return latent

    def _encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP token embeddings and pooled embeddings, each prompt padded to 77 tokens."""
        tokenizer, text_encoder = self._parts["tokenizer"], self._parts["text_encoder"]
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(text_encoder.device)
        out = text_encoder(ids)
        dtype = self._parts["dtype"]
        return out.last_hidden_state.to(dtype), out.pooler_output.to(dtype)

    def _decode(self, latent: torch.Tensor) -> Image.Image:
        from PIL import Image

        vae = self._parts["vae"]
        image = vae.decode(latent / vae.config.scaling_factor).sample
        image = (image / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).float().cpu().numpy()
        return Image.fromarray((image * 255).round().astype(np.uint8))


# ---- layout conversion -------------------------------------------------------------------------


def augment_phrase(phrase: str, instances: int) -> str:
    """The reference's "X, and X" augmentation: min(instances, 7) copies joined by ', and '."""
    return ", and ".join([phrase] * min(instances, AUG_MAX_COPIES))


def box_mask(bbox: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    """Pixel mask of a normalised xyxy box, truncated to whole pixels as MIGCProcessor does."""
    mask = np.zeros((height, width), dtype=np.float32)
    x0, y0, x1, y1 = bbox
    mask[int(height * y0):int(height * y1), int(width * x0):int(width * x1)] = 1.0
    return mask


def migc_layout(layout: Layout, width: int, height: int, augment: bool
                ) -> tuple[list[str], list[list[float]], np.ndarray, np.ndarray]:
    """(phrases, [x0, x1, y0, y1] boxes, pixel box masks (N, H, W), background (1, H, W))."""
    n_inst = len(layout.entities)
    phrases = [augment_phrase(e.prompt, n_inst) if augment else e.prompt for e in layout.entities]
    boxes = [[e.bbox[0], e.bbox[2], e.bbox[1], e.bbox[3]] for e in layout.entities]
    masks = np.stack([box_mask(e.bbox, width, height) for e in layout.entities]) if n_inst else (
        np.zeros((0, height, width), np.float32))
    background = 1.0 - np.clip(masks.sum(axis=0, keepdims=True), 0.0, 1.0) if n_inst else (
        np.ones((1, height, width), np.float32))
    return phrases, boxes, masks, background.astype(np.float32)


def instance_inputs(boxes: list[list[float]], masks: np.ndarray, background: np.ndarray, pooled: Any,
                    image_size: tuple[int, int], latent_size: tuple[int, int], generator: Any,
                    device: str, dtype: Any) -> Any:
    """The controller's inputs: pixel masks bilinearly resized to the latent grid (as the
    reference's `F.interpolate(..., (height//8, width//8), mode='bilinear')`)."""
    import torch

    from eligen_bench.generators.migc.controller import InstanceInputs, resize

    return InstanceInputs(
        masks=resize(torch.from_numpy(masks), latent_size).to(device=device, dtype=dtype),
        background=resize(torch.from_numpy(background), latent_size).to(device=device, dtype=dtype),
        boxes=torch.tensor(boxes, dtype=torch.float32).to(device=device, dtype=dtype),
        pooled=pooled,
        image_size=image_size,
        generator=generator,
    )


# ---- model parts -------------------------------------------------------------------------------


def load_sd14_parts(source: str, revision: str | None, dtype: Any) -> dict[str, Any]:
    """VAE, tokenizer, text encoder, UNet and the Euler scheduler built from the model's
    scheduler config (`EulerDiscreteScheduler.from_config(pipe.scheduler.config)`,
    inference_mig_benchmark.py@effd6cc)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    return {
        "vae": AutoencoderKL.from_pretrained(source, subfolder="vae", revision=revision, torch_dtype=dtype),
        "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", revision=revision),
        "text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", revision=revision,
                                                      torch_dtype=dtype),
        "unet": UNet2DConditionModel.from_pretrained(source, subfolder="unet", revision=revision, torch_dtype=dtype),
        "scheduler": EulerDiscreteScheduler.from_pretrained(source, subfolder="scheduler", revision=revision),
    }


def install_controllers(unet: Any, controllers: dict[str, Any], settings: dict[str, Any], device: str,
                        dtype: Any) -> Any:
    """Every cross-attention of the UNet gets a MIGC processor (a controller where the
    checkpoint has one); self-attention keeps its own. Returns the shared step state."""
    from eligen_bench.generators.migc.controller import MigcCrossAttnProcessor, MigcState

    state = MigcState(migc_steps=settings["migc_steps"], naive_fuser_steps=settings["naive_fuser_steps"])
    processors = dict(unet.attn_processors)
    for key in processors:
        path = key.removesuffix(".processor")
        if path.endswith("attn2"):
            controller = controllers.get(path)
            if controller is not None:
                controller = controller.to(device=device, dtype=dtype)
            processors[key] = MigcCrossAttnProcessor(state, controller)
    unet.set_attn_processor(processors)
    return state


# ---- tiny profile ------------------------------------------------------------------------------

TINY_LAYERS = (("middle_block", 1), ("output_blocks", 3), ("output_blocks", 4), ("output_blocks", 5))
"""The blocks the released checkpoint covers (mid block and up_blocks.1: 4 x 14.3 M parameters,
the 219 MB of MIGC_SD14.ckpt); the tiny one covers the same."""


def build_tiny_migc(directory: str | Path, seed: int = 0) -> None:
    """A tiny random SD pipeline with SD 1.4's UNet block structure (4 levels, 2 layers per
    block, so the LDM block indices are the real ones) and a tiny random MIGC checkpoint in
    the released format (`{"state_dict": ...}`, LDM names) at `directory/migc_tiny.ckpt`."""
    import torch
    from diffusers import UNet2DConditionModel

    from eligen_bench.generators.migc.checkpoint import ldm_key
    from eligen_bench.generators.migc.controller import MIGCLayer
    from eligen_bench.generators.stable_diffusion.common import build_tiny_sd_pipeline

    directory = Path(directory)
    build_tiny_sd_pipeline(str(directory), gated=False, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8,
            block_out_channels=(8, 8, 16, 16),
            layers_per_block=2,
            norm_num_groups=4,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=32,
            attention_head_dim=8,
        )
        state_dict = {}
        for kind, index in TINY_LAYERS:
            layer = MIGCLayer(channels=16, context_dim=32, box_hidden=16)
            state_dict.update({ldm_key(kind, index, k): v for k, v in layer.state_dict().items()})
    unet.save_pretrained(directory / "unet")
    torch.save({"state_dict": state_dict}, directory / TINY_CHECKPOINT)
