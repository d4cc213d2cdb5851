"""`qwen-eligen`: EliGen on Qwen-Image, three released LoRAs as one generator's `version` option.

DiffSynth-Studio's EliGen LoRAs for Qwen-Image (base ``Qwen/Qwen-Image``), each with the
settings of its own example script (modelscope/DiffSynth-Studio@afd101f (v1.1.9),
examples/qwen_image/model_inference/Qwen-Image-EliGen{,-V2,-Poster}.py):

| version | LoRA | steps | size (W x H) | negative prompt |
|---|---|---|---|---|
| v1 | DiffSynth-Studio/Qwen-Image-EliGen | 30 | 1024 x 1024 | "" |
| v2 | DiffSynth-Studio/Qwen-Image-EliGen-V2 | 40 | 1024 x 1024 | the shared one below |
| poster | DiffSynth-Studio/Qwen-Image-EliGen-Poster | 40 | 1280 x 784 | the shared one below |

All three: cfg 4.0, bfloat16, the negative branch without entity control
(``eligen_enable_on_negative=False``), noise from a CPU generator. An option given explicitly
wins over the version's value. The model is diffusers' `QwenImagePipeline` (transformer,
Qwen2.5-VL text encoder, VAE) loaded with `from_pretrained`; the transformer computes as
DiffSynth's `QwenImageDiT` (`numerics`), gets the LoRA merged as DiffSynth merges it (`lora`)
and EliGen's regional attention in every block (`attention`); sampling is DiffSynth's
(`sampling`). DiffSynth has no EliGen inpainting for Qwen-Image, so this generator has none.

With no entities the prompt is the global one alone and attention is the stock processor's:
the image is Qwen-Image's with the LoRA merged.
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
from eligen_bench.generators.qwen_image import reference
from eligen_bench.layout import Layout
from eligen_bench.requests import GenerationRequest

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from eligen_bench.generators.qwen_image.sampling import Branch

log = logging.getLogger(__name__)

QWEN_IMAGE = "Qwen/Qwen-Image"
SHARED_NEGATIVE_PROMPT = (
    "网格化，规则的网格，模糊, 低分辨率, 低质量, 变形, 畸形, 错误的解剖学, 变形的手, 变形的身体, 变形的脸, "
    "变形的头发, 变形的眼睛, 变形的嘴巴"
)
"""The negative prompt of the V2 and Poster examples (Qwen-Image-EliGen-V2.py, -Poster.py at afd101f)."""
VERSIONS: dict[str, dict[str, Any]] = {
    # Qwen-Image-EliGen.py: num_inference_steps=30, 1024x1024, negative_prompt = ""
    "v1": {"lora": "DiffSynth-Studio/Qwen-Image-EliGen", "steps": 30, "width": 1024, "height": 1024,
           "negative_prompt": ""},
    # Qwen-Image-EliGen-V2.py: num_inference_steps=40, 1024x1024
    "v2": {"lora": "DiffSynth-Studio/Qwen-Image-EliGen-V2", "steps": 40, "width": 1024, "height": 1024,
           "negative_prompt": SHARED_NEGATIVE_PROMPT},
    # Qwen-Image-EliGen-Poster.py: num_inference_steps=40, example(..., height=784, width=1280)
    "poster": {"lora": "DiffSynth-Studio/Qwen-Image-EliGen-Poster", "steps": 40, "width": 1280, "height": 784,
               "negative_prompt": SHARED_NEGATIVE_PROMPT},
}
DTYPES = ("bfloat16", "float16", "float32")
NUMERICS = ("diffsynth", "diffusers")
TINY_MODEL = "tiny-random-qwen-image"


class QwenEliGenGenerator(Generator):
    """EliGen V1 / V2 / Poster on Qwen-Image (`version`)."""

    name: ClassVar[str] = "qwen-eligen"
    description: ClassVar[str] = "EliGen on Qwen-Image: regional attention with DiffSynth's EliGen LoRAs (V1, V2, Poster)"
    reference: ClassVar[str] = f"{reference.PIPELINE}, diffsynth/models/qwen_image_dit.py, examples/qwen_image/model_inference"
    # DiffSynth sets no entity limit: the project's bound applies (max_entities=None)
    capabilities: ClassVar[Capabilities] = Capabilities(boxes=True, masks=True, inpainting=False,
                                                        max_entities=None, resolution=(1024, 1024))
    in_default_run: ClassVar[bool] = False  # a 20B-parameter model: opt in with --generators qwen-eligen
    defaults: ClassVar[dict[str, Any]] = {
        "version": "v1",
        "model": QWEN_IMAGE,
        "revision": None,
        "dtype": "bfloat16",  # torch_dtype=torch.bfloat16 in every example
        "cfg_scale": 4.0,  # cfg_scale=4.0 in every example
        **VERSIONS["v1"],
        "lora_file": "model.safetensors",  # allow_file_pattern="model.safetensors"
        "lora_revision": None,
        "lora_scale": 1.0,  # pipe.load_lora(pipe.dit, path): alpha=1
        # None: refuse a file whose alpha keys would rescale it; "ignore" merges B @ A as
        # DiffSynth's loader does; "apply" scales by alpha / rank
        "lora_alpha_mode": None,
        "cfg_entity_control": False,  # eligen_enable_on_negative=False
        "attention_method": "auto",
        # DiffSynth gives an entity whose mask vanishes on the latent grid zero tokens
        "vanishing_mask": "drop",
        # "diffsynth": feed-forward GELU, timestep frequencies and VAE RMS norms as DiffSynth
        # computes them (`numerics`); "diffusers": diffusers' stock modules
        "numerics": "diffsynth",
    }

    def __init__(self, profile: str = "full", device: str | None = None, **options: Any):
        super().__init__(profile=profile, device=device, **options)
        version = self.settings["version"]
        if version not in VERSIONS:
            raise InputError(f"choose one of {tuple(VERSIONS)}", where=f"generator {self.name!r}", field="version")
        # the version's values under the profile's and the caller's
        self.settings = {**self.defaults, **VERSIONS[version], **self.profile_overrides(), **options}
        self._check_settings()
        self._pipe: Any = None
        self._tmpdir: str | None = None

    def profile_overrides(self) -> dict[str, Any]:
        if self.profile != "tiny":
            return {}
        return {"steps": 2, "width": 64, "height": 64, "dtype": "float32"}

    def _check_settings(self) -> None:
        from eligen_bench.generators.flux.attention import METHODS
        from eligen_bench.generators.flux.lora import ALPHA_MODES
        from eligen_bench.generators.flux.regions import VANISHING

        s, where = self.settings, f"generator {self.name!r}"
        for key in ("width", "height"):
            if not isinstance(s[key], int) or s[key] < 16 or s[key] % 16:
                raise InputError(f"must be a positive multiple of 16, got {s[key]!r}", where=where, field=key)
        # one step is undefined in the reference's schedule: its terminal stretch divides 0 by 0
        if not isinstance(s["steps"], int) or isinstance(s["steps"], bool) or s["steps"] < 2:
            raise InputError(f"must be an integer >= 2, got {s['steps']!r}", where=where, field="steps")
        choices = {"dtype": DTYPES, "attention_method": METHODS, "vanishing_mask": VANISHING, "numerics": NUMERICS}
        for key, allowed in choices.items():
            if s[key] not in allowed:
                raise InputError(f"choose one of {allowed}", where=where, field=key)
        if s["lora_alpha_mode"] not in (None, *ALPHA_MODES):
            raise InputError(f"choose one of {ALPHA_MODES} (or leave it unset)", where=where, field="lora_alpha_mode")

    def model_ids(self) -> dict[str, str]:
        s = self.settings
        if self.profile == "tiny":
            return {"qwen-image": f"{TINY_MODEL} (seeded random weights from configs)",
                    "lora": "tiny random LoRA in DiffSynth naming (seeded)"}
        return {"qwen-image": f"{s['model']}@{s['revision'] or 'main'}",
                "lora": f"{s['lora']}/{s['lora_file']}@{s['lora_revision'] or 'main'}"}

    def adapt(self, layout: Layout) -> tuple[Layout, list[str]]:
        layout, notes = super().adapt(layout)
        return layout, notes + self._vanishing_notes(layout)

    # ----- loading --------------------------------------------------------------------
    def load(self) -> None:
        import torch

        from eligen_bench.generators.qwen_image import attention
        from eligen_bench.generators.qwen_image.lora import load_lora

        s = self.settings
        source, lora = s["model"], s["lora"]
        if self.profile == "tiny":
            from eligen_bench.generators.qwen_image.tiny import (
                build_tiny_qwen_image,
                write_tiny_lora,
            )

            self._tmpdir = tempfile.mkdtemp(prefix="eligen-bench-tiny-qwen-")
            source = str(build_tiny_qwen_image(Path(self._tmpdir) / "qwen-image"))
        pipe = load_qwen_pipeline(source, s["revision"], getattr(torch, s["dtype"]))
        pipe.to(self.resolve_device())
        if s["numerics"] == "diffsynth":
            from eligen_bench.generators.qwen_image.numerics import (
                follow_diffsynth,
                follow_diffsynth_vae,
            )

            follow_diffsynth(pipe.transformer)
            follow_diffsynth_vae(pipe.vae)
        if self.profile == "tiny":
            lora = str(write_tiny_lora(pipe.transformer, Path(self._tmpdir) / "lora"))
        modules = load_lora(pipe.transformer, lora, s["lora_file"], alpha=float(s["lora_scale"]),
                            revision=s["lora_revision"], alpha_mode=s["lora_alpha_mode"])
        attention.install(pipe.transformer)
        self._pipe = pipe
        self.load_notes = [f"EliGen LoRA ({s['version']}): {len(set(modules))} modules updated"]
        log.info("%s: %s", self.name, self.load_notes[0])

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
        return [self._decode(self._sample(request)) for request in requests]

    def _sample(self, request: GenerationRequest, on_step: Any = None) -> torch.Tensor:
        """The final packed latents (1, N, 64) of one request."""
        from eligen_bench.generators.qwen_image.sampling import denoise, initial_noise, pack

        self.ensure_loaded()
        s = self.settings
        positive, negative = self._branches(request.layout)
        noise = initial_noise(request.seed, s["height"], s["width"], self._dtype)
        latents = pack(noise).to(self._device, self._dtype)
        return denoise(self._pipe.transformer, latents, positive, negative, steps=s["steps"],
                       cfg_scale=float(s["cfg_scale"]), height=s["height"], width=s["width"], on_step=on_step)

    def _branches(self, layout: Layout) -> tuple[Branch, Branch | None]:
        """The positive branch (EliGen control when there are entities) and the negative one."""
        import torch

        from eligen_bench.generators.qwen_image.sampling import Branch

        s = self.settings
        negative = None
        if float(s["cfg_scale"]) != 1.0:
            negative = Branch(self._encode([s["negative_prompt"]], "global")[0])
        global_embeds = self._encode([layout.prompt], "global")[0]
        if not layout.entities:
            return Branch(global_embeds), negative
        entity_embeds = self._encode([e.prompt for e in layout.entities], "entity")
        embeds = [global_embeds, *entity_embeds]
        masks = self._token_masks(layout)
        positive = Branch(torch.cat(embeds, dim=1), self._control([e.shape[1] for e in embeds], masks))
        if negative is not None and s["cfg_entity_control"]:
            # the reference repeats the negative prompt's embedding for every entity
            count = len(embeds)
            lengths = [negative.prompt_embeds.shape[1]] * count
            negative = Branch(torch.cat([negative.prompt_embeds] * count, dim=1), self._control(lengths, masks))
        return positive, negative

    def _control(self, lengths: list[int], masks: torch.Tensor) -> Any:
        from eligen_bench.generators.flux.attention import build_plan
        from eligen_bench.generators.qwen_image.attention import EliGenQwenControl

        plan = build_plan(lengths, masks).to(self._device)
        return EliGenQwenControl(plan, method=self.settings["attention_method"])

    def _encode(self, prompts: list[str], kind: str) -> list[torch.Tensor]:
        """(1, n_i, hidden) embedding of each prompt, each its own length; `kind` "global" (also
        the negative prompt) or "entity" sets the token limit."""
        from eligen_bench.generators.qwen_image.text import MAX_TOKENS, TemplatedTokenizer, encode
        from eligen_bench.truncation import check_prompts

        pipe = self._pipe
        max_tokens = MAX_TOKENS[kind]
        check_prompts(self, f"qwen2.5-vl ({kind})", TemplatedTokenizer(pipe.tokenizer), prompts, max_tokens)
        return [encode(pipe.text_encoder, pipe.tokenizer, p, max_tokens, self._device, self._dtype) for p in prompts]

    def _token_masks(self, layout: Layout, vanishing: str | None = None) -> torch.Tensor:
        """Bool (k, tokens) entity token masks: DiffSynth's Qwen rule is EliGen's FLUX rule
        (`QwenImageUnit_EntityControl.preprocess_masks`: PIL NEAREST to (H/8, W/8), then a token
        belongs to the entity if any of its 2x2 cells does)."""
        from eligen_bench.generators.flux.regions import eligen_token_masks

        s = self.settings
        return eligen_token_masks(layout, s["height"], s["width"], vanishing or s["vanishing_mask"])

    def _vanishing_notes(self, layout: Layout) -> list[str]:
        from eligen_bench.generators.flux.regions import vanished

        if not layout.entities:
            return []
        s = self.settings
        mode = s["vanishing_mask"]
        effect = "zero tokens, no effect (reference)" if mode == "drop" else "given the tokens under its pixels"
        note = f"entity region covers no token at {s['width']}x{s['height']}: {effect} (vanishing_mask={mode})"
        return [note] * len(vanished(self._token_masks(layout, vanishing="drop")))

    @property
    def _dtype(self) -> torch.dtype:
        return self._pipe.transformer.dtype

    @property
    def _device(self) -> torch.device:
        return self._pipe.transformer.device

    def _decode(self, latents: torch.Tensor) -> Image.Image:
        """VAE decode of packed latents; pixels mapped to uint8 as DiffSynth's `vae_output_to_image`."""
        import torch
        from PIL import Image as PILImage

        from eligen_bench.generators.qwen_image.sampling import unpack

        pipe, s = self._pipe, self.settings
        vae = pipe.vae
        spatial = unpack(latents, s["height"], s["width"]).to(vae.dtype)[:, :, None]  # (B, C, 1, h, w)
        # QwenImageVAE.decode at afd101f: x / (1 / std) + mean, the reciprocal taken in float32
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(spatial.device, spatial.dtype)
        inv_std = (1 / torch.tensor(vae.config.latents_std)).view(1, -1, 1, 1, 1).to(spatial.device, spatial.dtype)
        with torch.no_grad():
            image = vae.decode(spatial / inv_std + mean, return_dict=False)[0][:, :, 0]
        # (x + 1) * 127.5, clipped, truncated to uint8 (diffsynth/utils/__init__.py at afd101f)
        pixels = ((image[0] + 1) * (255 / 2)).clip(0, 255).permute(1, 2, 0).to("cpu", torch.uint8)
        return PILImage.fromarray(pixels.numpy())


def load_qwen_pipeline(source: str, revision: str | None, dtype: torch.dtype) -> Any:
    """diffusers' `QwenImagePipeline.from_pretrained`: the one loader of real and tiny checkpoints."""
    from diffusers import QwenImagePipeline

    return QwenImagePipeline.from_pretrained(source, revision=revision, dtype=dtype)
