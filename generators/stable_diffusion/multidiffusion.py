"""Region-based MultiDiffusion (Bar-Tal et al., ICML 2023) on Stable Diffusion, implemented here.

At every step the current latent is denoised once per region prompt: the global prompt is the
background region, each entity prompt acts on its mask (or box) region. The per-region
results x_{t-1}^i are fused by the MultiDiffusion closed-form update, the per-pixel average of
the region results weighted by the region masks:

    x_{t-1} = sum_i m_i * x_{t-1}^i / sum_i m_i        (where sum_i m_i > 0, else 0)

Bootstrapping (paper Sec. 4.2, reference `region_based.py`): during the first steps each
entity's latent is composed with a noised, random constant-colour background outside its
region, which pushes each entity to fill its own region tightly.

Defaults follow the reference code (`omerbt/MultiDiffusion@69bcdce`, `region_based.py`):
Stable Diffusion 2 base (`--sd_version 2.0`), the DDIM scheduler built from the model's
scheduler config, 50 steps, guidance 7.5, bootstrapping for 20 of the 50 steps (a fraction
of 0.4 here, so other step counts keep the proportion), `bootstrap_backgrounds` (= 20 in the
reference, one per bootstrap step) random colours, the background region = 1 - sum of the
entity masks (clipped at 0), empty negative prompts. The reference's panorama windows are
not needed: at the model's native 512x512 the whole canvas is a single window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from eligen_bench.api.generator import (
    MAX_ENTITIES,
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
    load_sd_source,
    resolve_dtype,
)
from eligen_bench.layout import Layout, resize_region

if TYPE_CHECKING:
    import torch
    from PIL import Image


class MultiDiffusionGenerator(Generator):
    """Region-based MultiDiffusion: one denoising path per region, fused by masked averaging."""

    name = "multidiffusion"
    display_name = "MultiDiffusion"
    description = "Region-based MultiDiffusion on Stable Diffusion 2 base (native implementation)"
    reference = "omerbt/MultiDiffusion@69bcdce: region_based.py"
    capabilities = Capabilities(boxes=True, masks=True, inpainting=False, max_entities=MAX_ENTITIES,
                                resolution=(512, 512))
    defaults = {
        "model": "stabilityai/stable-diffusion-2-base",
        "revision": None,
        "steps": 50,
        "guidance_scale": 7.5,
        "bootstrap_fraction": 0.4,
        "bootstrap_backgrounds": 20,
        "negative_prompt": "",
        "background_region": "complement",
        "width": 512,
        "height": 512,
        "dtype": "auto",
    }

    def __init__(self, profile: str = "full", device: str | None = None, **options: Any):
        super().__init__(profile, device, **options)
        check_sd_settings(self.settings, self.name)
        where = f"generator {self.name!r}"
        check_fractions(self.settings, self.name, "bootstrap_fraction")
        count = self.settings["bootstrap_backgrounds"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InputError(f"must be a positive integer, got {count!r}", where=where, field="bootstrap_backgrounds")
        if self.settings["background_region"] not in ("complement", "full"):
            raise InputError(
                "must be 'complement' (reference: 1 - sum of entity masks) or 'full' (whole canvas)",
                where=where,
                field="background_region",
            )
        self._parts: dict[str, Any] = {}

    def profile_overrides(self) -> dict[str, Any]:
        if self.profile == "tiny":
            return {"steps": 2, "width": 64, "height": 64, "bootstrap_backgrounds": 2}
        return {}

    def model_ids(self) -> dict[str, str]:
        if self.profile == "tiny":
            return {"stable_diffusion": TINY_MODEL_ID}
        return {"stable_diffusion": f"{self.settings['model']}@{self.settings['revision'] or 'main'}"}

    @property
    def bootstrap_steps(self) -> int:
        """Steps with bootstrapping: the fraction of the steps, rounded half up (20 of 50)."""
        return int(self.settings["bootstrap_fraction"] * self.settings["steps"] + 0.5)

    def load(self) -> None:
        device = self.resolve_device()
        dtype = resolve_dtype(self.settings["dtype"], device)
        parts = load_sd_source(self, load_sd_parts, dtype, gated=False)
        for key in ("vae", "text_encoder", "unet"):
            parts[key] = parts[key].to(device).eval()
        parts["device"], parts["dtype"] = device, dtype
        self._parts = parts

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Image.Image]:
        """One request at a time (its regions batched in one UNet call), each from its own seed."""
        self.ensure_loaded()
        return [self._generate_one(request) for request in requests]

    def close(self) -> None:
        self._parts = {}
        self._loaded = False
        release_cuda_memory()

    # ---- one image ------------------------------------------------------------------------

    def _generate_one(self, request: GenerationRequest) -> Image.Image:
        import torch

        parts, settings = self._parts, self.settings
        unet, scheduler = parts["unet"], parts["scheduler"]
        device, dtype = parts["device"], parts["dtype"]
        factor = 2 ** (len(parts["vae"].config.block_out_channels) - 1)
        height, width = settings["height"] // factor, settings["width"] // factor
        layout = request.layout
        n_entities = len(layout.entities)
        generator = torch.Generator("cpu").manual_seed(request.seed)

        with torch.no_grad():
            latent = torch.randn((1, unet.config.in_channels, height, width), generator=generator)
            latent = (latent * scheduler.init_noise_sigma).to(device=device, dtype=dtype)
            masks = region_masks(layout, height, width, settings["background_region"],
                                 image_size=(settings["height"], settings["width"]))
            masks = torch.from_numpy(masks)
            masks = masks[:, None].to(device=device, dtype=dtype)
            prompts = [layout.prompt] + [e.prompt for e in layout.entities]
            embeds = self._encode_prompts(prompts, settings["negative_prompt"])
            scheduler.set_timesteps(settings["steps"], device=device)
            n_boot = self.bootstrap_steps if n_entities else 0
            backgrounds = self._random_backgrounds(generator) if n_boot else None
            noise = latent.clone()
            for i, t in enumerate(scheduler.timesteps):
                views = latent.repeat(n_entities + 1, 1, 1, 1)
                if i < n_boot:
                    views = bootstrap(views, masks, backgrounds, noise, scheduler, t, generator)
                model_input = scheduler.scale_model_input(torch.cat([views] * 2), t)
                eps = unet(model_input, t, encoder_hidden_states=embeds).sample
                eps_uncond, eps_text = eps.chunk(2)
                eps = eps_uncond + settings["guidance_scale"] * (eps_text - eps_uncond)
                denoised = scheduler.step(eps, t, views).prev_sample
                latent = fuse_regions(denoised, masks)
            return self._decode(latent)

    def _encode_prompts(self, prompts: list[str], negative: str) -> torch.Tensor:
        """CLIP embeddings, unconditional (negative) ones first, as the reference concatenates them."""
        tokenizer, text_encoder = self._parts["tokenizer"], self._parts["text_encoder"]

        def encode(texts: list[str]) -> torch.Tensor:
            ids = tokenizer(
                texts,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(text_encoder.device)
            return text_encoder(ids)[0]

        import torch

        return torch.cat([encode([negative] * len(prompts)), encode(prompts)]).to(self._parts["dtype"])

    def _random_backgrounds(self, generator: torch.Generator) -> torch.Tensor:
        """Latents of images of one random colour each (reference: `get_random_background`)."""
        import torch

        vae, device, dtype = self._parts["vae"], self._parts["device"], self._parts["dtype"]
        count = self.settings["bootstrap_backgrounds"]
        colours = torch.rand(count, 3, generator=generator)
        latents = []
        for colour in colours:  # one image at a time: 20 full-size images at once is a lot of memory
            image = (2 * colour - 1)[None, :, None, None].expand(1, 3, self.settings["height"], self.settings["width"])
            posterior = vae.encode(image.to(device=device, dtype=dtype)).latent_dist
            latents.append(posterior.sample(generator=generator) * vae.config.scaling_factor)
        return torch.cat(latents)

    def _decode(self, latent: torch.Tensor) -> Image.Image:
        from PIL import Image

        vae = self._parts["vae"]
        image = vae.decode(latent / vae.config.scaling_factor).sample
        image = (image / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).float().cpu().numpy()
        return Image.fromarray((image * 255).round().astype(np.uint8))


def load_sd_parts(source: str, revision: str | None, dtype: Any) -> dict[str, Any]:
    """VAE, tokenizer, text encoder, UNet and a DDIM scheduler from a pipeline repo or directory,
    loaded component by component as the reference code does."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    return {
        "vae": AutoencoderKL.from_pretrained(source, subfolder="vae", revision=revision, torch_dtype=dtype),
        "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", revision=revision),
        "text_encoder": CLIPTextModel.from_pretrained(
            source, subfolder="text_encoder", revision=revision, torch_dtype=dtype
        ),
        "unet": UNet2DConditionModel.from_pretrained(source, subfolder="unet", revision=revision, torch_dtype=dtype),
        "scheduler": DDIMScheduler.from_pretrained(source, subfolder="scheduler", revision=revision),
    }


def region_masks(
    layout: Layout, height: int, width: int, background: str = "complement",
    image_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Float masks (1 + entities, height, width) at latent resolution, background first.

    As omerbt/MultiDiffusion@69bcdce (region_based.py, `preprocess_mask`) builds them: each
    region is a binary mask at the image's size (a box drawn there, `box_region`; a mask as
    stored), resized to the latent grid with torch's ``nearest`` (legacy, top-left sampling).
    `image_size` is the image's (height, width), 8x the latent size when not given. The
    background is 1 - sum of the entity masks clipped at 0 (reference), or the whole canvas
    with 'full'.
    """
    image_h, image_w = image_size or (8 * height, 8 * width)
    entity_masks = [
        resize_region(e.source_region(image_h, image_w), height, width, "nearest").astype(np.float32)
        for e in layout.entities
    ]
    if background == "full":
        back = np.ones((height, width), dtype=np.float32)
    else:
        back = np.clip(1.0 - sum(entity_masks, np.zeros((height, width), np.float32)), 0.0, None)
    return np.stack([back, *entity_masks]).astype(np.float32)


def fuse_regions(predictions: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The MultiDiffusion closed-form step: per-pixel mask-weighted average of region results.

    predictions: (regions, C, H, W); masks: (regions, 1, H, W) weights >= 0. Pixels no region
    covers come out 0, as in the reference.
    """
    import torch

    value = (predictions * masks).sum(dim=0, keepdim=True)
    count = masks.sum(dim=0, keepdim=True).expand_as(value)
    return torch.where(count > 0, value / torch.where(count > 0, count, torch.ones_like(count)), value)


def bootstrap(
    views: torch.Tensor,
    masks: torch.Tensor,
    backgrounds: torch.Tensor,
    noise: torch.Tensor,
    scheduler: Any,
    t: Any,
    generator: torch.Generator,
) -> torch.Tensor:
    """Replace each entity view outside its region by a random background noised to step t."""
    import torch

    n_entities = views.shape[0] - 1
    picks = torch.randint(0, backgrounds.shape[0], (n_entities,), generator=generator)
    background = backgrounds[picks.to(backgrounds.device)]
    background = scheduler.add_noise(background, noise.expand_as(background), t.reshape(1))
    entity_masks = masks[1:]
    views = views.clone()
    views[1:] = views[1:] * entity_masks + background * (1 - entity_masks)
    return views
