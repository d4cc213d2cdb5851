"""FLUX.1-dev generators: `flux` (global prompt only), `eligen` (EliGen) and `regional-flux`.

All three load diffusers' `FluxPipeline` with `from_pretrained` (its transformer, VAE, CLIP and
T5 encoders and tokenizers) and sample with `flux_sampling.denoise`; they differ only in the
conditioning they build:

* `flux`: the global prompt; entities are ignored (the no-control floor).
* `eligen`: FLUX + the EliGen LoRA (fused into the weights), prompt ``[global; entities]`` with
  EliGen's regional attention in every block; inpainting fusion when a request has an
  ``init_image``. Defaults are the paper's (Sec. 3.4) as DiffSynth-Studio runs them: 50 Euler
  steps on DiffSynth's FLUX schedule, true CFG 3 with the reference negative prompt, embedded
  guidance 3.5, 1024x1024; the negative branch runs without entity control unless
  ``cfg_entity_control``.
* `regional-flux`: training-free Regional Prompting FLUX; defaults from its reference code's
  active example (24 steps on diffusers' FLUX schedule, embedded guidance 3.5, no true CFG,
  base ratio 0.3, background prompt "a photo", regional control in the first 10 steps and in
  every double- and single-stream block).

With no entities `eligen` and `regional-flux` take the plain path: `regional-flux` then makes
the same image as `flux` with the same sampling settings, and `eligen` the image of FLUX with
the LoRA fused.

The `tiny` profile builds a seeded random FLUX pipeline from configs (and, for `eligen`, a
random LoRA file in DiffSynth naming), saves it to a temporary directory and loads it back
through the same `from_pretrained` / LoRA path as real weights.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from eligen_bench.api.generator import Capabilities, Generator, release_cuda_memory
from eligen_bench.errors import InputError
from eligen_bench.generators.flux.regions import OVERLAPS, VANISHING
from eligen_bench.generators.flux.sampling import SCHEDULERS
from eligen_bench.layout import Layout
from eligen_bench.requests import GenerationRequest

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from eligen_bench.generators.flux.sampling import Conditioning, Inpainting

log = logging.getLogger(__name__)

FLUX_DEV = "black-forest-labs/FLUX.1-dev"
# modelscope/DiffSynth-Studio@afd101f (v1.1.9), examples/flux/model_inference/FLUX.1-dev-EliGen.py
# (the same string in examples/EntityControl/entity_control.py at 2e59733); the trailing
# "blur" of the inpainting example is not part of it.
ELIGEN_NEGATIVE_PROMPT = "worst quality, low quality, monochrome, zombie, interlocked fingers, Aissist, cleavage, nsfw,"
"""The negative prompt of EliGen's generation example."""
DIFFSYNTH_REF = "modelscope/DiffSynth-Studio@2e59733 (v1.1.0): diffsynth/pipelines/flux_image.py"
REGIONAL_REF = "antonioo-c/Regional-Prompting-FLUX@5ce6e6e: pipeline_flux_regional.py, infer_flux_regional.py"
TINY_MODEL = "tiny-random-flux"
DTYPES = ("bfloat16", "float16", "float32")

_COMMON: dict[str, Any] = {
    "model": FLUX_DEV,
    "revision": None,
    "dtype": "bfloat16",
    "steps": 50,
    "cfg_scale": 3.0,
    "embedded_guidance": 3.5,
    "negative_prompt": ELIGEN_NEGATIVE_PROMPT,
    "width": 1024,
    "height": 1024,
    "max_sequence_length": 512,
    # DiffSynth-Studio's FlowMatchScheduler (flux_sampling); "diffusers" is FluxPipeline's
    "scheduler": "diffsynth",
    # "cpu": a seeded CPU generator, float32, cast to the model's dtype (the same noise on any
    # machine); "run": a seeded generator on the run device, drawn in the model's dtype, as both
    # references draw it on their GPU (modelscope/DiffSynth-Studio@2e59733: diffsynth/pipelines/
    # base.py:114-116 with flux_image.py:189; antonioo-c/Regional-Prompting-FLUX@5ce6e6e:
    # infer_flux_regional.py:168, torch.Generator("cuda"), through diffusers' randn_tensor)
    "noise_device": "cpu",
}
NOISE_DEVICES = ("cpu", "run")


class FluxFamily(Generator):
    """Shared loading, sampling and decoding of the FLUX generators."""

    name: ClassVar[str] = "flux-family"
    capabilities: ClassVar[Capabilities] = Capabilities(boxes=False, masks=False, resolution=(1024, 1024))
    defaults: ClassVar[dict[str, Any]] = dict(_COMMON)
    added_options: ClassVar[dict[str, Any]] = {"noise_device": "cpu"}

    def __init__(self, profile: str = "full", device: str | None = None, **options: Any):
        super().__init__(profile=profile, device=device, **options)
        self._check_settings()
        self._pipe: Any = None
        self._tmpdir: str | None = None

    # ----- settings -------------------------------------------------------------------
    def profile_overrides(self) -> dict[str, Any]:
        if self.profile != "tiny":
            return {}
        return {"steps": 2, "width": 128, "height": 128, "max_sequence_length": 16, "dtype": "float32"}

    def _check_settings(self) -> None:
        s = self.settings
        where = f"generator {self.name!r}"
        for key in ("width", "height"):
            if not isinstance(s[key], int) or s[key] < 16 or s[key] % 16:
                raise InputError(f"must be a positive multiple of 16, got {s[key]!r}", where=where, field=key)
        if not isinstance(s["steps"], int) or s["steps"] < 1:
            raise InputError(f"must be an integer >= 1, got {s['steps']!r}", where=where, field="steps")
        if not isinstance(s["max_sequence_length"], int) or not 1 <= s["max_sequence_length"] <= 512:
            raise InputError("must be an integer in [1, 512]", where=where, field="max_sequence_length")
        if s["dtype"] not in DTYPES:
            raise InputError(f"choose one of {DTYPES}", where=where, field="dtype")
        if s["scheduler"] not in SCHEDULERS:
            raise InputError(f"choose one of {SCHEDULERS}", where=where, field="scheduler")
        if s["noise_device"] not in NOISE_DEVICES:
            raise InputError(f"choose one of {NOISE_DEVICES}", where=where, field="noise_device")
        if "vanishing_mask" in s and s["vanishing_mask"] not in VANISHING:
            raise InputError(f"choose one of {VANISHING}", where=where, field="vanishing_mask")

    def identity(self) -> dict[str, Any]:
        """The settings, plus how the timestep and guidance conditioning is computed on
        DiffSynth's schedule. Images made before the model was given DiffSynth's float32
        conditioning (`flux/timestep.py`) differ from today's (bf16 latents by up to 0.035 on the
        tiny model), so their keys differ too and a resumed run remakes them instead of mixing
        the two; `scheduler=diffusers` runs keep diffusers' conditioning and their keys."""
        identity = super().identity()
        if self.settings["scheduler"] == "diffsynth":
            identity["conditioning"] = "diffsynth float32 timestep, (time + pooled) + guidance"
        return identity

    def model_ids(self) -> dict[str, str]:
        if self.profile == "tiny":
            return {"flux": f"{TINY_MODEL} (seeded random weights from configs)"}
        return {"flux": f"{self.settings['model']}@{self.settings['revision'] or 'main'}"}

    # ----- loading --------------------------------------------------------------------
    def load(self) -> None:
        import torch

        dtype = getattr(torch, self.settings["dtype"])
        source = self.settings["model"]
        if self.profile == "tiny":
            self._tmpdir = tempfile.mkdtemp(prefix="eligen-bench-tiny-flux-")
            source = str(build_tiny_flux(Path(self._tmpdir) / "flux"))
        pipe = load_flux_pipeline(source, revision=self.settings["revision"], dtype=dtype)
        pipe.to(self.resolve_device())
        self._pipe = pipe
        self._after_load()

    def _after_load(self) -> None:
        """Hook for subclasses (LoRA, processors)."""

    def close(self) -> None:
        self._pipe = None
        self._loaded = False
        release_cuda_memory()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    # ----- generation -----------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Image.Image]:
        self.ensure_loaded()
        return [self._generate_one(request) for request in requests]

    def _generate_one(self, request: GenerationRequest) -> Image.Image:
        latents = self._sample(request)
        return self._decode(latents)

    def _sample(self, request: GenerationRequest, on_step: Any = None) -> torch.Tensor:
        """The final packed latents of one request."""
        from eligen_bench.generators.flux.sampling import denoise

        self.ensure_loaded()
        layout = request.layout
        positive, negative = self._conditioning(layout)
        inpainting = self._inpainting(request)
        s = self.settings
        return denoise(
            self._pipe.transformer,
            self._pipe.scheduler,
            self._noise(request.seed),
            self._img_ids(),
            positive,
            negative,
            steps=s["steps"],
            cfg_scale=float(s["cfg_scale"]),
            guidance=float(s["embedded_guidance"]),
            inpainting=inpainting,
            on_step=on_step,
            schedule=s["scheduler"],
        )

    def _conditioning(self, layout: Layout) -> tuple[Conditioning, Conditioning | None]:
        """Positive and negative conditioning; the plain FLUX one here (entities ignored)."""
        from eligen_bench.generators.flux.sampling import Conditioning

        embeds, pooled = self._encode([layout.prompt])
        return Conditioning(embeds, pooled), self._negative()

    def _inpainting(self, request: GenerationRequest) -> Inpainting | None:
        if request.init_image is None:
            return None
        raise InputError(
            f"{self.name} does not inpaint (got init_image)", where=f"layout {request.layout.id!r}", field="init_image"
        )

    # ----- pieces ---------------------------------------------------------------------
    @property
    def _dtype(self) -> torch.dtype:
        return self._pipe.transformer.dtype

    @property
    def _device(self) -> torch.device:
        return self._pipe.transformer.device

    def _latent_size(self) -> tuple[int, int]:
        scale = self._pipe.vae_scale_factor
        s = self.settings
        return 2 * (s["height"] // (scale * 2)), 2 * (s["width"] // (scale * 2))

    def _n_channels(self) -> int:
        return self._pipe.transformer.config.in_channels // 4

    def _noise(self, seed: int) -> torch.Tensor:
        """Packed initial noise of `seed`, drawn as the `noise_device` setting says."""
        h, w = self._latent_size()
        noise = draw_noise(seed, (1, self._n_channels(), h, w), self.settings["noise_device"], self._device, self._dtype)
        packed = self._pipe._pack_latents(noise, 1, self._n_channels(), h, w)
        return packed.to(self._device, self._dtype)

    def _img_ids(self) -> torch.Tensor:
        h, w = self._latent_size()
        return self._pipe._prepare_latent_image_ids(1, h // 2, w // 2, self._device, self._dtype)

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(T5 embeddings (n, max_sequence_length, D), CLIP pooled (n, P)) of each prompt."""
        import torch

        from eligen_bench.truncation import check_prompts

        check_prompts(self, "clip", self._pipe.tokenizer, prompts, self._pipe.tokenizer_max_length)
        check_prompts(self, "t5", self._pipe.tokenizer_2, prompts, self.settings["max_sequence_length"])
        with torch.no_grad():
            embeds, pooled, _ = self._pipe.encode_prompt(
                prompt=prompts,
                prompt_2=None,
                device=self._device,
                max_sequence_length=self.settings["max_sequence_length"],
            )
        return embeds.to(self._dtype), pooled.to(self._dtype)

    def _negative(self) -> Conditioning | None:
        from eligen_bench.generators.flux.sampling import Conditioning

        if float(self.settings["cfg_scale"]) == 1.0:
            return None
        embeds, pooled = self._encode([self.settings["negative_prompt"]])
        return Conditioning(embeds, pooled)

    def _token_masks(self, layout: Layout, vanishing: str | None = None) -> torch.Tensor:
        """Bool (k, n_tokens) entity token masks at the generation size, by the method's rule.

        `vanishing` overrides the `vanishing_mask` setting.
        """
        raise NotImplementedError(f"{self.name} uses no entity regions")

    def _vanishing_notes(self, layout: Layout) -> list[str]:
        """One note per entity that covers no token at the generation size (for the manifest)."""
        from eligen_bench.generators.flux.regions import vanished

        if not layout.entities:
            return []
        mode = self.settings["vanishing_mask"]
        s = self.settings
        effect = "zero tokens, no effect (reference)" if mode == "drop" else "given the tokens under its pixels"
        note = f"entity region covers no token at {s['width']}x{s['height']}: {effect} (vanishing_mask={mode})"
        return [note] * len(vanished(self._token_masks(layout, vanishing="drop")))

    def _decode(self, latents: torch.Tensor) -> Image.Image:
        import torch

        pipe, s = self._pipe, self.settings
        with torch.no_grad():
            spatial = pipe._unpack_latents(latents, s["height"], s["width"], pipe.vae_scale_factor)
            spatial = spatial / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
            image = pipe.vae.decode(spatial.to(pipe.vae.dtype), return_dict=False)[0]
        return pipe.image_processor.postprocess(image, output_type="pil")[0]

    def _encode_image(self, path: str) -> torch.Tensor:
        """Packed VAE latents of an input image, resized to the generation size."""
        import torch
        from PIL import Image as PILImage

        pipe, s = self._pipe, self.settings
        try:
            image = PILImage.open(path).convert("RGB")
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {path!r}: {exc}", field="init_image") from exc
        image = image.resize((s["width"], s["height"]), PILImage.BICUBIC)
        pixels = pipe.image_processor.preprocess(image, height=s["height"], width=s["width"])
        with torch.no_grad():
            dist = pipe.vae.encode(pixels.to(self._device, pipe.vae.dtype)).latent_dist
            latents = (dist.mode() - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
        h, w = self._latent_size()
        return pipe._pack_latents(latents, 1, self._n_channels(), h, w).to(self._dtype)

    def _packed_foreground(self, layout: Layout) -> torch.Tensor:
        """Bool packed-latent inpainting foreground by DiffSynth's rule (`flux_regions.eligen_foreground`)."""
        import torch

        from eligen_bench.generators.flux.regions import eligen_foreground

        h, w = self._latent_size()
        s = self.settings
        grid = torch.from_numpy(eligen_foreground(layout, s["height"], s["width"])).float()[None, None]
        grid = grid.expand(1, self._n_channels(), h, w)
        packed = self._pipe._pack_latents(grid, 1, self._n_channels(), h, w)
        return (packed > 0).to(self._device)


class FluxGenerator(FluxFamily):
    """Plain FLUX.1-dev from the global prompt: the no-control floor (entities are ignored)."""

    name: ClassVar[str] = "flux"
    display_name: ClassVar[str] = "FLUX.1-dev"
    description: ClassVar[str] = "FLUX.1-dev, global prompt only (no entity control)"
    reference: ClassVar[str] = DIFFSYNTH_REF
    capabilities: ClassVar[Capabilities] = Capabilities(boxes=False, masks=False, resolution=(1024, 1024))
    defaults: ClassVar[dict[str, Any]] = dict(_COMMON)


class EliGenGenerator(FluxFamily):
    """EliGen: FLUX.1-dev + the EliGen LoRA with regional attention in every block."""

    name: ClassVar[str] = "eligen"
    display_name: ClassVar[str] = "EliGen"
    description: ClassVar[str] = "EliGen: regional attention on FLUX.1-dev with the EliGen LoRA"
    reference: ClassVar[str] = DIFFSYNTH_REF
    capabilities: ClassVar[Capabilities] = Capabilities(
        boxes=True, masks=True, inpainting=True, resolution=(1024, 1024)
    )
    defaults: ClassVar[dict[str, Any]] = {
        **_COMMON,
        "lora": "modelscope/EliGen",
        "lora_file": "model_bf16.safetensors",
        "lora_revision": None,
        "lora_scale": 1.0,
        # None: refuse a file whose alpha keys would rescale it; "ignore" merges B @ A as
        # DiffSynth's loader does (it never reads alpha keys); "apply" scales by alpha / rank
        "lora_alpha_mode": None,
        "cfg_entity_control": False,
        "attention_method": "auto",
        # DiffSynth gives an entity whose mask vanishes on the latent grid zero tokens
        "vanishing_mask": "drop",
    }

    def _check_settings(self) -> None:
        from eligen_bench.generators.flux.lora import ALPHA_MODES

        super()._check_settings()
        if self.settings["lora_alpha_mode"] not in (None, *ALPHA_MODES):
            raise InputError(f"choose one of {ALPHA_MODES} (or leave it unset)",
                             where=f"generator {self.name!r}", field="lora_alpha_mode")
        _check_method(self.settings["attention_method"], "eligen", f"generator {self.name!r}")

    def model_ids(self) -> dict[str, str]:
        ids = super().model_ids()
        if self.profile == "tiny":
            ids["lora"] = "tiny random LoRA in DiffSynth naming (seeded)"
        else:
            s = self.settings
            ids["lora"] = f"{s['lora']}/{s['lora_file']}@{s['lora_revision'] or 'main'}"
        return ids

    def adapt(self, layout: Layout) -> tuple[Layout, list[str]]:
        layout, notes = super().adapt(layout)
        return layout, notes + self._vanishing_notes(layout)

    def _after_load(self) -> None:
        from eligen_bench.generators.flux import regional as flux_regional
        from eligen_bench.generators.flux.lora import load_eligen_lora

        s = self.settings
        lora, lora_file = s["lora"], s["lora_file"]
        if self.profile == "tiny":
            assert self._tmpdir is not None
            lora, lora_file = str(write_tiny_lora(self._pipe.transformer, Path(self._tmpdir) / "lora")), "lora.safetensors"
        self.lora_modules = load_eligen_lora(
            self._pipe.transformer, lora, lora_file, scale=float(s["lora_scale"]), revision=s["lora_revision"],
            alpha_mode=s["lora_alpha_mode"],
        )
        self.load_notes = [f"EliGen LoRA: {len(set(self.lora_modules))} modules updated"]
        log.info("%s: %s", self.name, self.load_notes[0])
        flux_regional.install(self._pipe.transformer)

    def _token_masks(self, layout: Layout, vanishing: str | None = None) -> torch.Tensor:
        from eligen_bench.generators.flux.regions import eligen_token_masks

        s = self.settings
        return eligen_token_masks(layout, s["height"], s["width"], vanishing or s["vanishing_mask"])

    def _conditioning(self, layout: Layout) -> tuple[Conditioning, Conditioning | None]:
        import torch

        from eligen_bench.generators.flux.attention import build_plan
        from eligen_bench.generators.flux.regional import EliGenControl
        from eligen_bench.generators.flux.sampling import Conditioning

        negative = self._negative()
        if not layout.entities:
            embeds, pooled = self._encode([layout.prompt])
            return Conditioning(embeds, pooled), negative
        prompts = [layout.prompt] + [e.prompt for e in layout.entities]
        embeds, pooled = self._encode(prompts)
        length = embeds.shape[1]
        plan = build_plan([length] * len(prompts), self._token_masks(layout)).to(self._device)
        control = EliGenControl(plan, method=self.settings["attention_method"])
        positive = Conditioning(embeds.reshape(1, -1, embeds.shape[-1]), pooled[:1], regional=control)
        if negative is not None and self.settings["cfg_entity_control"]:
            # the reference repeats the negative prompt's embedding for every entity
            neg_embeds = torch.cat([negative.prompt_embeds] * len(prompts), dim=1)
            negative = Conditioning(neg_embeds, negative.pooled, regional=control)
        return positive, negative

    def _inpainting(self, request: GenerationRequest) -> Inpainting | None:
        from eligen_bench.generators.flux.sampling import Inpainting

        if request.init_image is None:
            return None
        where = f"layout {request.layout.id!r}"
        if not request.layout.entities:
            raise InputError("inpainting needs at least one entity mask or box", where=where, field="entities")
        return Inpainting(self._encode_image(request.init_image), self._packed_foreground(request.layout))


class RegionalFluxGenerator(FluxFamily):
    """Training-free Regional Prompting FLUX on the same transformer and sampler."""

    name: ClassVar[str] = "regional-flux"
    display_name: ClassVar[str] = "Regional Prompting FLUX"
    description: ClassVar[str] = "Regional Prompting FLUX (training-free attention masks, base ratio)"
    reference: ClassVar[str] = REGIONAL_REF
    capabilities: ClassVar[Capabilities] = Capabilities(boxes=True, masks=True, resolution=(1024, 1024))
    # Sampling: the reference runs diffusers' FluxPipeline; the rest is the active example of
    # antonioo-c/Regional-Prompting-FLUX@5ce6e6e, infer_flux_regional.py.
    defaults: ClassVar[dict[str, Any]] = {
        **_COMMON,
        "scheduler": "diffusers",
        "steps": 24,  # num_inference_steps = 24
        "cfg_scale": 1.0,  # guidance_scale = 3.5 is the embedded guidance; no true CFG
        "base_ratio": 0.3,  # base_ratio = 0.3
        "inject_steps": 10,  # mask_inject_steps = 10
        "double_inject_interval": 1,  # double_inject_blocks_interval = 1
        "single_inject_interval": 1,  # single_inject_blocks_interval = 1
        "background_prompt": "a photo",  # background_prompt = "a photo"; None: the global prompt
        # "reference": background = 1 - sum(masks) as a bool mask (overlaps join it);
        # "exclusive": only tokens no entity covers
        "overlap": "reference",
        "vanishing_mask": "drop",
        # how the regional mask is applied (flux_regional.PROMPTING_METHODS): the same result
        # each way; "auto" is the block-sparse "flex" on CUDA, the dense mask elsewhere
        "attention_method": "auto",
    }

    def _check_settings(self) -> None:
        super()._check_settings()
        s, where = self.settings, f"generator {self.name!r}"
        if not 0.0 <= float(s["base_ratio"]) <= 1.0:
            raise InputError("must be in [0, 1]", where=where, field="base_ratio")
        if not isinstance(s["inject_steps"], int) or s["inject_steps"] < 0:
            raise InputError("must be an integer >= 0", where=where, field="inject_steps")
        for key in ("double_inject_interval", "single_inject_interval"):
            if not isinstance(s[key], int) or s[key] < 1:
                raise InputError("must be an integer >= 1 (1: every block)", where=where, field=key)
        if s["overlap"] not in OVERLAPS:
            raise InputError(f"choose one of {OVERLAPS}", where=where, field="overlap")
        _check_method(s["attention_method"], "regional-flux", where)

    def adapt(self, layout: Layout) -> tuple[Layout, list[str]]:
        layout, notes = super().adapt(layout)
        return layout, notes + self._vanishing_notes(layout)

    def _after_load(self) -> None:
        from eligen_bench.generators.flux import regional as flux_regional

        flux_regional.install(self._pipe.transformer)

    def _token_masks(self, layout: Layout, vanishing: str | None = None) -> torch.Tensor:
        from eligen_bench.generators.flux.regions import regional_token_masks

        s = self.settings
        return regional_token_masks(layout, s["height"], s["width"], vanishing or s["vanishing_mask"])

    def _conditioning(self, layout: Layout) -> tuple[Conditioning, Conditioning | None]:
        import torch

        from eligen_bench.generators.flux.attention_flex import prompting_bits
        from eligen_bench.generators.flux.regional import (
            RegionalPromptingControl,
            regional_prompting_mask,
        )
        from eligen_bench.generators.flux.regions import regional_background
        from eligen_bench.generators.flux.sampling import Conditioning

        s = self.settings
        base_embeds, pooled = self._encode([layout.prompt])
        base = Conditioning(base_embeds, pooled)
        negative = self._negative()
        if not layout.entities or s["inject_steps"] == 0:
            return base, negative
        masks = self._token_masks(layout)
        prompts = [e.prompt for e in layout.entities]
        background = regional_background(layout, masks, s["height"], s["width"], s["overlap"])
        if background is not None:
            prompts.append(s["background_prompt"] or layout.prompt)
            masks = torch.cat([masks, background[None]])
        embeds, _ = self._encode(prompts)
        length = embeds.shape[1]
        regional = embeds.reshape(1, -1, embeds.shape[-1])
        padded = torch.zeros_like(regional)
        padded[:, :length] = base_embeds
        control = RegionalPromptingControl(
            mask=regional_prompting_mask([length] * len(prompts), masks).to(self._device),
            text_length=regional.shape[1],
            base_length=length,
            base_ratio=float(s["base_ratio"]),
            double_interval=s["double_inject_interval"],
            single_interval=s["single_inject_interval"],
            method=s["attention_method"],
            token_bits=prompting_bits([length] * len(prompts), masks).to(self._device),
        )
        positive = Conditioning(
            torch.cat([regional, padded]), pooled.expand(2, -1), regional=control,
            until_step=s["inject_steps"], fallback=base,
        )  # fmt: skip
        return positive, negative


# ----- module-level helpers (stateless) ---------------------------------------------------
def _check_method(method: Any, kind: str, where: str) -> None:
    """Refuse an attention method the generator's attention does not have."""
    from eligen_bench.generators.flux.attention import METHODS
    from eligen_bench.generators.flux.regional import PROMPTING_METHODS

    choices = METHODS if kind == "eligen" else PROMPTING_METHODS
    if method not in choices:
        raise InputError(f"unknown method {method!r}; choose one of {choices}", where=where, field="attention_method")


def draw_noise(seed: int, shape: tuple[int, ...], where: str, device: Any, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal noise of `seed`, in `dtype` on `device`.

    ``where="cpu"``: a CPU generator in float32, then cast (the same values on every machine);
    ``"run"``: a generator on `device`, drawn in `dtype` there, as DiffSynth-Studio's
    `generate_noise` does (``torch.randn(shape, generator=torch.Generator(device).manual_seed(seed),
    device=device, dtype=dtype)``). On a CPU run the two agree; on a GPU they differ.
    """
    import torch

    if where == "run":
        gen = torch.Generator(device).manual_seed(int(seed))
        return torch.randn(shape, generator=gen, device=device, dtype=dtype)
    gen = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(device, dtype)


def load_flux_pipeline(source: str, revision: str | None, dtype: torch.dtype) -> Any:
    """diffusers' `FluxPipeline.from_pretrained`: the one loader of real and tiny checkpoints."""
    import diffusers
    from diffusers import FluxPipeline
    from packaging.version import Version

    # diffusers renamed `torch_dtype` to `dtype` (the old name warns from 0.36 on)
    key = "dtype" if Version(diffusers.__version__).release >= (0, 36) else "torch_dtype"
    return FluxPipeline.from_pretrained(source, revision=revision, **{key: dtype})


def build_tiny_flux(directory: Path, seed: int = 0) -> Path:
    """Write a seeded random tiny FLUX pipeline (same classes as FLUX.1-dev) to `directory`."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from eligen_bench.tiny import clip_tokenizer, t5_tokenizer

    clip_tok, t5_tok = clip_tokenizer(), t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
            guidance_embeds=True, axes_dims_rope=[4, 4, 8],
        )  # fmt: skip
        clip = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(clip_tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
                bos_token_id=clip_tok.bos_token_id, eos_token_id=clip_tok.eos_token_id,
                pad_token_id=clip_tok.pad_token_id,
            )
        )  # fmt: skip
        t5 = T5EncoderModel(
            T5Config(
                vocab_size=len(t5_tok), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                relative_attention_num_buckets=8, pad_token_id=t5_tok.pad_token_id,
                eos_token_id=t5_tok.eos_token_id, decoder_start_token_id=0,
            )
        )  # fmt: skip
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=1, layers_per_block=1, norm_num_groups=1,
            block_out_channels=(4, 4, 4, 4), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, use_quant_conv=False, use_post_quant_conv=False,
            mid_block_add_attention=False, shift_factor=0.0609, scaling_factor=1.5035, sample_size=128,
        )  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )  # fmt: skip
    pipe = FluxPipeline(
        scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=clip_tok,
        text_encoder_2=t5, tokenizer_2=t5_tok, transformer=transformer,
    )  # fmt: skip
    pipe.save_pretrained(str(directory))
    return directory


def write_tiny_lora(transformer: Any, directory: Path, seed: int = 0) -> Path:
    """Write a seeded random EliGen-style LoRA (DiffSynth naming) for `transformer` to `directory`."""
    from safetensors.torch import save_file

    from eligen_bench.generators.flux.lora import random_diffsynth_lora

    cfg = transformer.config
    state = random_diffsynth_lora(
        cfg.num_layers, cfg.num_single_layers, cfg.num_attention_heads * cfg.attention_head_dim, seed=seed
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "lora.safetensors"
    save_file(state, str(path))
    return directory
