"""GLIGEN (Li et al., CVPR 2023): grounded text-to-image generation with gated self-attention.

Runs the diffusers `StableDiffusionGLIGENPipeline` with the text-box generation checkpoint
`masterful/gligen-1-4-generation-text-box` (Stable Diffusion 1.4 + GLIGEN gated layers).
Entity prompts are the grounding phrases and entity boxes (normalised xyxy) the grounding
boxes, exactly the pipeline's format. Masks are reduced to their boxes (GLIGEN takes boxes).

Defaults follow the GLIGEN reference inference script (gligen/GLIGEN@f9dccb9,
`gligen_inference.py`): its PLMS sampler, 50 steps, classifier-free guidance 7.5, grounding on
for the first `int(0.3 * 50) = 15` PLMS steps (`alpha_type=[0.3, 0.0, 0.7]` through
`alpha_generator`), its negative prompt, 512x512, at most 30 grounding tokens.

Sampler. The reference's `PLMSSampler` (`ldm/models/diffusion/plms.py`) is diffusers'
`PNDMScheduler` with `skip_prk_steps=True` (the same pseudo improved Euler first step and
Adams-Bashforth updates); `sampler=plms` builds it with the reference's noise schedule. diffusers'
pipeline instead samples with whatever scheduler the checkpoint ships (its GLIGEN conversion
script, `scripts/convert_gligen_to_diffusers.py`, writes a DDIM scheduler): `sampler=checkpoint`
runs that, `sampler=ddim` the reference's DDIM alternative (`--no_plms`).

Grounding length. The reference sets alpha once per PLMS step, and its first step evaluates the
UNet twice (pseudo improved Euler), both grounded. diffusers' `gligen_scheduled_sampling_beta`
counts scheduler calls instead (51 for 50 PLMS steps, `int(0.3 * 51) = 15` calls, so 14
steps): one step short. Here the gated layers are switched per UNet call to the reference's
count (`grounded_unet_calls`).

Long phrases. The reference tokenises phrases without truncation (a phrase over CLIP's 77
tokens would fail in its text encoder); the global prompt is truncated to 77 tokens by both the
reference's text encoder and diffusers. Phrases are truncated the same way here, and each
truncated phrase is counted in the run's adapt notes.

Zero entities: the pipeline cannot tokenise an empty phrase list, so the layout's global
prompt is passed as a placeholder phrase over the whole canvas and grounding is switched off
from the first step (`gligen_scheduled_sampling_beta=0`): the gated layers never run, and the
image is plain Stable Diffusion 1.4 (the checkpoint's frozen base weights) through the same
pipeline, scheduler and seed handling.

The safety checker is not loaded: it would replace flagged images by black ones and bias the
scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from eligen_bench.api.generator import (
    Capabilities,
    GenerationRequest,
    Generator,
    entity_boxes,
    entity_prompts,
    release_cuda_memory,
)
from eligen_bench.errors import InputError
from eligen_bench.generators.stable_diffusion.common import (
    TINY_MODEL_ID,
    check_fractions,
    check_sd_settings,
    load_sd_source,
    resolve_dtype,
)

if TYPE_CHECKING:
    from PIL import Image

    from eligen_bench.layout import Layout

MAX_GROUNDING_TOKENS = 30
"""The pipeline (and the GLIGEN position net) holds at most 30 grounding tokens."""

REFERENCE_NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, "
    "cropped, worst quality, low quality"
)
"""`--negative_prompt` default of the GLIGEN reference inference script."""


SAMPLERS = ("plms", "ddim", "checkpoint")

TRUNCATED_NOTE = "entity prompt truncated to the CLIP tokenizer's maximum length (as the global prompt is)"


class GligenGenerator(Generator):
    """GLIGEN text-box generation through diffusers, one pipeline call per request."""

    name = "gligen"
    display_name = "GLIGEN"
    description = "GLIGEN (SD 1.4 + gated self-attention), diffusers text-box generation pipeline"
    reference = ("gligen/GLIGEN@f9dccb9: gligen_inference.py, ldm/models/diffusion/plms.py; "
                 "run through diffusers 0.42.1 StableDiffusionGLIGENPipeline")
    capabilities = Capabilities(
        boxes=True, masks=False, inpainting=False, max_entities=MAX_GROUNDING_TOKENS, resolution=(512, 512)
    )
    defaults = {
        "model": "masterful/gligen-1-4-generation-text-box",
        "revision": None,
        "steps": 50,
        "guidance_scale": 7.5,
        "gligen_scheduled_sampling_beta": 0.3,
        # gligen_inference.py@f9dccb9 samples with PLMSSampler unless --no_plms.
        "sampler": "plms",
        "negative_prompt": REFERENCE_NEGATIVE_PROMPT,
        "width": 512,
        "height": 512,
        "dtype": "auto",
    }

    def __init__(self, profile: str = "full", device: str | None = None, **options: Any):
        super().__init__(profile, device, **options)
        check_sd_settings(self.settings, self.name)
        check_fractions(self.settings, self.name, "gligen_scheduled_sampling_beta")
        if self.settings["sampler"] not in SAMPLERS:
            raise InputError(f"must be one of {', '.join(SAMPLERS)}, got {self.settings['sampler']!r}",
                             where=f"generator {self.name!r}", field="sampler")
        self._pipe: Any = None
        self._tokenizer: Any = None

    def profile_overrides(self) -> dict[str, Any]:
        if self.profile != "tiny":
            return {}
        # int(0.3 * 2) = 0 grounded steps would leave grounding untested: 0.5 grounds step 1 of 2
        # (the first PLMS step: two UNet calls of three).
        return {"steps": 2, "width": 64, "height": 64, "gligen_scheduled_sampling_beta": 0.5}

    def model_ids(self) -> dict[str, str]:
        if self.profile == "tiny":
            return {"pipeline": TINY_MODEL_ID}
        return {"pipeline": f"{self.settings['model']}@{self.settings['revision'] or 'main'}"}

    def load(self) -> None:
        device = self.resolve_device()
        dtype = resolve_dtype(self.settings["dtype"], device)
        pipe = load_sd_source(self, _load_pipeline, dtype, gated=True)
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = build_sampler(self.settings["sampler"], pipe.scheduler)
        # A sampler whose grounding length is undefined fails here, not after some images.
        grounded_unet_calls(pipe.scheduler, self.settings["steps"], self.settings["gligen_scheduled_sampling_beta"])
        # Bypass the pipeline's component registry: the wrapper is not a component to save.
        object.__setattr__(pipe, "tokenizer", TruncatingTokenizer(pipe.tokenizer))
        self._pipe = pipe.to(device)

    def adapt(self, layout: Layout) -> tuple[Layout, list[str]]:
        """Boxes for masks (as every boxes-only method), and one note per entity prompt longer
        than the CLIP tokenizer takes: it is truncated at generation."""
        layout, notes = super().adapt(layout)
        tokenizer = self._phrase_tokenizer()
        limit = tokenizer.model_max_length
        notes += [TRUNCATED_NOTE for e in layout.entities if len(tokenizer(e.prompt).input_ids) > limit]
        return layout, notes

    def _phrase_tokenizer(self) -> Any:
        """The checkpoint's tokenizer (the tiny profile's real CLIP BPE), loaded once, without the models."""
        if self._pipe is not None:
            return self._pipe.tokenizer
        if self._tokenizer is None:
            if self.profile == "tiny":
                from eligen_bench.tiny import clip_tokenizer

                self._tokenizer = clip_tokenizer()
            else:
                from transformers import CLIPTokenizer

                try:
                    self._tokenizer = CLIPTokenizer.from_pretrained(
                        self.settings["model"], subfolder="tokenizer", revision=self.settings["revision"])
                except (OSError, ValueError) as exc:  # missing files; a malformed hub id
                    raise InputError(f"cannot load the checkpoint's tokenizer to check entity prompt lengths "
                                     f"({type(exc).__name__})", where=f"generator {self.name!r}",
                                     field="model") from None
        return self._tokenizer

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Image.Image]:
        """One pipeline call per request: grounding phrases are shared by a whole pipeline
        batch, and per-request noise keeps images independent of how requests are batched."""
        self.ensure_loaded()
        return [self._generate_one(request) for request in requests]

    def _generate_one(self, request: GenerationRequest) -> Image.Image:
        import torch

        layout = request.layout
        if len(layout.entities) > MAX_GROUNDING_TOKENS:
            raise InputError(
                f"{len(layout.entities)} entities, but {self.name} supports at most {MAX_GROUNDING_TOKENS}",
                where=f"layout {layout.id!r}",
                field="entities",
            )
        settings = self.settings
        phrases = entity_prompts(layout)
        boxes = [list(box) for box in entity_boxes(layout)]
        beta = float(settings["gligen_scheduled_sampling_beta"])
        if not phrases:
            # Placeholder grounding that never acts: beta 0 turns the gated layers off before step 1.
            phrases, boxes, beta = [layout.prompt], [[0.0, 0.0, 1.0, 1.0]], 0.0
        grounded = grounded_unet_calls(self._pipe.scheduler, settings["steps"], beta)
        generator = torch.Generator("cpu").manual_seed(request.seed)
        latents = initial_latents(self._pipe, settings["height"], settings["width"], generator)
        hook = switch_grounding(self._pipe, grounded)
        try:
            result = self._pipe(
                prompt=layout.prompt,
                negative_prompt=settings["negative_prompt"] or None,
                gligen_phrases=phrases,
                gligen_boxes=boxes,
                # 1.0: the pipeline never switches grounding off itself; `switch_grounding` does.
                gligen_scheduled_sampling_beta=1.0,
                num_inference_steps=settings["steps"],
                guidance_scale=settings["guidance_scale"],
                height=settings["height"],
                width=settings["width"],
                latents=latents,
                generator=generator,
                output_type="pil",
            )
        finally:
            hook.remove()
        return result.images[0]

    def close(self) -> None:
        self._pipe = None
        self._loaded = False
        release_cuda_memory()


def official_grounded_steps(steps: int, beta: float) -> int:
    """Steps with alpha 1 in the reference's `alpha_generator(steps, [beta, 0, 1 - beta])`
    (gligen_inference.py@f9dccb9): `int(beta * steps)`; the rest have alpha 0."""
    return int(beta * steps)


def grounded_unet_calls(scheduler: Any, steps: int, beta: float) -> int:
    """How many UNet calls, from the first, run grounded, so that exactly the reference's
    grounded steps are. PLMS (PNDM with `skip_prk_steps`) makes one call more than it has steps:
    the first step's second evaluation, which the reference runs with that step's alpha."""
    from diffusers import PNDMScheduler

    grounded = official_grounded_steps(steps, beta)
    scheduler.set_timesteps(steps)  # the pipeline sets the same timesteps again
    calls = len(scheduler.timesteps)
    if calls == steps:
        return grounded
    if isinstance(scheduler, PNDMScheduler) and scheduler.config.skip_prk_steps and calls == steps + 1:
        return grounded + 1 if grounded else 0
    raise InputError(f"{type(scheduler).__name__} makes {calls} UNet calls for {steps} steps; the reference's "
                     "grounding length is defined for one call per step or PLMS", where="generator 'gligen'",
                     field="sampler")


def switch_grounding(pipe: Any, grounded_calls: int) -> Any:
    """Gated layers on for the first `grounded_calls` UNet calls, off after; returns the hook handle."""
    calls = 0

    def before_unet(module: Any, args: Any) -> None:
        nonlocal calls
        pipe.enable_fuser(calls < grounded_calls)
        calls += 1

    return pipe.unet.register_forward_pre_hook(before_unet)


def build_sampler(name: str, checkpoint_scheduler: Any) -> Any:
    """The scheduler `sampler=name` asks for; `checkpoint` keeps the checkpoint's own."""
    if name == "checkpoint":
        return checkpoint_scheduler
    from diffusers import DDIMScheduler, PNDMScheduler

    # gligen/GLIGEN@f9dccb9: configs/flickr_text.yaml (1000 steps, linear_start 0.00085,
    # linear_end 0.012) with ldm/modules/diffusionmodules/util.py make_beta_schedule("linear"),
    # a linspace of square roots, squared = diffusers' "scaled_linear"; make_ddim_timesteps
    # ("uniform": range(0, 1000, 1000 // steps) + 1 = "leading" spacing, offset 1); the last
    # step's previous alpha is alphas_cumprod[0] (make_ddim_sampling_parameters) = set_alpha_to_one=False.
    schedule = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                "beta_schedule": "scaled_linear", "steps_offset": 1, "set_alpha_to_one": False,
                "timestep_spacing": "leading", "prediction_type": "epsilon"}
    if name == "plms":
        return PNDMScheduler(skip_prk_steps=True, **schedule)
    return DDIMScheduler(clip_sample=False, **schedule)  # the reference's DDIMSampler, eta 0


class TruncatingTokenizer:
    """The pipeline's CLIP tokenizer, truncating every call that does not choose for itself.

    The pipeline tokenises grounding phrases without truncation, so a phrase over the model's
    77 tokens would fail in the text encoder; it is truncated as the global prompt is. Calls
    that set `truncation` (the prompt encoding) are passed on unchanged.
    """

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer

    def __call__(self, text: Any, *args: Any, **kwargs: Any) -> Any:
        if "truncation" not in kwargs:
            kwargs.update(truncation=True, max_length=self._tokenizer.model_max_length)
        return self._tokenizer(text, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


def _load_pipeline(source: str, revision: str | None, dtype: Any) -> Any:
    """The GLIGEN pipeline from a hub id or a local directory, without the safety checker."""
    from diffusers import StableDiffusionGLIGENPipeline

    return StableDiffusionGLIGENPipeline.from_pretrained(
        source,
        revision=revision,
        torch_dtype=dtype,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def initial_latents(pipe: Any, height: int, width: int, generator: Any) -> Any:
    """Starting noise drawn on the CPU from the request's own generator (device independent)."""
    import torch

    factor = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, height // factor, width // factor)
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    return noise.to(device=pipe.unet.device, dtype=pipe.unet.dtype)
