"""Parity of the FLUX-family defaults with their reference code, each against a transcription
written here from the reference (file and commit cited per test), on inputs where the earlier
rules differ."""

from __future__ import annotations

import math
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from eligen_bench.errors import InputError
from eligen_bench.generators.flux import generator as flux_module
from eligen_bench.generators.flux.generator import (
    ELIGEN_NEGATIVE_PROMPT,
    EliGenGenerator,
    RegionalFluxGenerator,
)
from eligen_bench.generators.flux.lora import convert_diffsynth_lora, random_diffsynth_lora
from eligen_bench.generators.flux.regions import (
    eligen_foreground,
    eligen_token_masks,
    regional_background,
    regional_token_masks,
)
from eligen_bench.generators.flux.sampling import Conditioning, denoise, diffsynth_sigmas
from eligen_bench.generators.stable_diffusion.multidiffusion import region_masks
from eligen_bench.layout import Entity, Layout, Mask, box_region


def _layout(*boxes: tuple[float, float, float, float], width: int = 256, height: int = 256) -> Layout:
    entities = tuple(Entity(f"thing {i}", box) for i, box in enumerate(boxes))
    return Layout(id="l", prompt="a scene", entities=entities, width=width, height=height)


def _pixel_box(box: tuple[float, float, float, float], height: int, width: int) -> np.ndarray:
    """The reference's box on integer pixels: mask[y1:y2, x1:x2] = 1 (infer_flux_regional.py)."""
    x1, y1, x2, y2 = (round(box[0] * width), round(box[1] * height), round(box[2] * width), round(box[3] * height))
    mask = np.zeros((height, width), dtype=np.float32)
    mask[y1:y2, x1:x2] = 1.0
    return mask


# ----- 1. DiffSynth's FLUX schedule ---------------------------------------------------------
def _reference_sigmas(n: int) -> list[float]:
    """modelscope/DiffSynth-Studio@2e59733, diffsynth/schedulers/flow_match.py, FlowMatchScheduler
    (shift=3.0, sigma_max=1.0, sigma_min=0.003/1.002), set_timesteps(n, denoising_strength=1)."""
    sigma_min, sigma_max, shift = 0.003 / 1.002, 1.0, 3.0
    start = sigma_min + (sigma_max - sigma_min) * 1.0
    linear = [start + (sigma_min - start) * i / (n - 1) for i in range(n)]
    return [shift * s / (1 + (shift - 1) * s) for s in linear]


def test_diffsynth_sigma_table() -> None:
    ours = diffsynth_sigmas(50).tolist()
    ref = _reference_sigmas(50)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)
    assert ours[-1] == pytest.approx(0.00895, abs=5e-5)  # diffusers' schedule ends near 0.061


class _TimestepEcho(torch.nn.Module):
    """A stand-in transformer whose velocity is the timestep it receives (times ones)."""

    config = SimpleNamespace(guidance_embeds=False)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, **_: object) -> tuple[torch.Tensor]:
        return (torch.ones_like(hidden_states) * timestep.reshape(-1, 1, 1),)


def test_denoise_feeds_diffsynth_timesteps_and_steps_to_zero() -> None:
    """DiffSynth's loop: the DiT gets timestep = 1000 * sigma (our diffusers transformer takes it
    divided by 1000) and FlowMatchScheduler.step moves x by v * (sigma_next - sigma), to 0 last."""
    n = 7
    noise = torch.zeros(1, 4, 3)
    cond = Conditioning(torch.zeros(1, 2, 8), torch.zeros(1, 8))
    out = denoise(_TimestepEcho(), None, noise, torch.zeros(4, 3), cond, steps=n, guidance=None,
                  schedule="diffsynth")
    sig = _reference_sigmas(n) + [0.0]
    expected = sum((1000 * sig[i] / 1000) * (sig[i + 1] - sig[i]) for i in range(n))
    torch.testing.assert_close(out, torch.full_like(noise, expected), rtol=1e-5, atol=1e-6)


def test_scheduler_defaults_and_choice() -> None:
    assert EliGenGenerator().settings["scheduler"] == "diffsynth"
    assert flux_module.FluxGenerator().settings["scheduler"] == "diffsynth"
    with pytest.raises(InputError, match="scheduler"):
        EliGenGenerator(profile="tiny", scheduler="ddim")


# ----- 2. vanishing entity masks --------------------------------------------------------------
def test_vanishing_mask_gives_zero_tokens_and_is_counted() -> None:
    """DiffSynth (flux_image.py `preprocess_masks` + flux_dit.py `construct_mask`, 2e59733): a mask
    with no latent cell after the NEAREST resize gives an all-False row: the entity has no token."""
    thin = (0.52, 0.52, 0.53, 0.53)  # pixels 133-135 at 256: no cell (132, 140) or token (136) samples them
    lay = _layout((0.0, 0.0, 0.5, 0.5), thin)
    cells = np.asarray(Image.fromarray((_pixel_box(thin, 256, 256) * 255).astype(np.uint8)).resize((32, 32), Image.NEAREST))
    assert not cells.any()  # the transcription: no cell
    tokens = eligen_token_masks(lay, 256, 256)
    assert tokens[0].any() and not tokens[1].any()
    assert eligen_token_masks(lay, 256, 256, "one_token")[1].sum() == 1
    g = EliGenGenerator(profile="tiny", width=256, height=256)
    _, notes = g.adapt(lay)
    assert len([n for n in notes if "covers no token" in n]) == 1 and "vanishing_mask=drop" in notes[-1]
    kept = EliGenGenerator(profile="tiny", width=256, height=256, vanishing_mask="one_token")
    assert "vanishing_mask=one_token" in kept.adapt(lay)[1][-1]
    regional = RegionalFluxGenerator(profile="tiny", width=256, height=256)
    assert len([n for n in regional.adapt(lay)[1] if "covers no token" in n]) == 1


# ----- 3. inpainting foreground ---------------------------------------------------------------
def test_inpainting_foreground_follows_diffsynth() -> None:
    """flux_image.py `prepare_entity_inputs(enable_eligen_inpaint=True)` at 2e59733: RGB mask image
    .resize((W//8, H//8)) (PIL's default filter), preprocess to [-1, 1], mean over channels > 0,
    per mask, then the sum over masks > 0."""
    boxes = ((0.1, 0.1, 0.33, 0.3), (0.6, 0.55, 0.93, 0.9))
    lay = _layout(*boxes)
    expected = np.zeros((32, 32), dtype=bool)
    for box in boxes:
        rgb = Image.fromarray((_pixel_box(box, 256, 256) * 255).astype(np.uint8)).convert("RGB")
        small = np.asarray(rgb.resize((32, 32)), dtype=np.float32) * (2 / 255) - 1
        expected |= small.mean(axis=2) > 0
    got = eligen_foreground(lay, 256, 256)
    assert np.array_equal(got, expected)
    # the earlier rule (any pixel under a latent cell) is larger on these boxes
    anypix = np.zeros((32, 32), dtype=bool)
    for box in boxes:
        anypix |= F.adaptive_max_pool2d(torch.from_numpy(_pixel_box(box, 256, 256))[None, None], (32, 32))[0, 0].numpy() > 0
    assert anypix.sum() > got.sum()


# ----- 4. negative prompt ---------------------------------------------------------------------
def test_negative_prompt_is_the_generation_example() -> None:
    # modelscope/DiffSynth-Studio@afd101f, examples/flux/model_inference/FLUX.1-dev-EliGen.py
    reference = "worst quality, low quality, monochrome, zombie, interlocked fingers, Aissist, cleavage, nsfw,"
    assert reference == ELIGEN_NEGATIVE_PROMPT
    assert EliGenGenerator().settings["negative_prompt"] == reference


# ----- 5. LoRA alpha keys ---------------------------------------------------------------------
def test_lora_alpha_keys_fail_loudly_unless_a_mode_is_given() -> None:
    """DiffSynth merges W + lora_alpha * B @ A with lora_alpha=1 and never reads alpha keys
    (diffsynth/models/lora.py, 2e59733); a file whose alpha differs from its rank is refused."""
    state = random_diffsynth_lora(1, 1, 32, rank=4)
    name = "blocks.0.attn.a_to_out"
    plain = {d.module: d for d in convert_diffsynth_lora(state, 32)}
    rescaled = dict(state, **{f"{name}.alpha": torch.tensor(1.0)})
    with pytest.raises(InputError, match="lora_alpha_mode"):
        convert_diffsynth_lora(rescaled, 32)
    ignored = {d.module: d for d in convert_diffsynth_lora(rescaled, 32, "ignore")}
    applied = {d.module: d for d in convert_diffsynth_lora(rescaled, 32, "apply")}
    target = "transformer_blocks.0.attn.to_out.0"
    assert ignored[target].scale == plain[target].scale == 1.0
    assert applied[target].scale == pytest.approx(1.0 / 4)
    same_rank = dict(state, **{f"{name}.alpha": torch.tensor(4.0)})  # alpha == rank: no rescale
    assert {d.module: d.scale for d in convert_diffsynth_lora(same_rank, 32)}[target] == 1.0
    with pytest.raises(InputError, match="lora_alpha_mode"):
        EliGenGenerator(profile="tiny", lora_alpha_mode="half")


def test_lora_module_count_is_recorded() -> None:
    g = EliGenGenerator(profile="tiny")
    try:
        g.ensure_loaded()
        # the tiny LoRA: 10 DiffSynth modules per double block (qkv split in 3 twice: 14 targets)
        # and 3 per single block (to_qkv_mlp split in 4: 6 targets)
        assert len(set(g.lora_modules)) == 14 + 6
        assert g.load_notes == ["EliGen LoRA: 20 modules updated"]
    finally:
        g.close()


# ----- 6. Regional Prompting FLUX regions ----------------------------------------------------
def _reference_regional(boxes: list[tuple[float, float, float, float]], height: int, width: int):
    """antonioo-c/Regional-Prompting-FLUX@5ce6e6e: infer_flux_regional.py builds pixel masks and
    background = ones - sum, appended when background.sum() > 0; pipeline_flux_regional.py samples
    each with interpolate(..., (H/16, W/16), mode='nearest-exact') and stores it in a bool mask."""
    masks = [torch.from_numpy(_pixel_box(b, height, width)) for b in boxes]
    background = torch.ones(height, width)
    for m in masks:
        background -= m
    if background.sum() > 0:
        masks.append(background)
    grid = (height // 16, width // 16)
    return [F.interpolate(m[None, None], grid, mode="nearest-exact").flatten().bool() for m in masks]


@pytest.mark.parametrize("boxes", [
    [(0.0, 0.0, 0.6, 0.6), (0.4, 0.4, 1.0, 1.0)],  # overlap + uncovered corners
    [(0.0, 0.0, 0.7, 1.0), (0.3, 0.0, 1.0, 1.0)],  # full cover with overlap: sum <= 0, no background
    [(0.1, 0.13, 0.47, 0.52)],  # unaligned edges: one sample per token, not "any of 2x2"
])
def test_regional_masks_and_background_follow_the_reference(boxes) -> None:
    lay = _layout(*boxes)
    ref = _reference_regional(boxes, 256, 256)
    masks = regional_token_masks(lay, 256, 256)
    background = regional_background(lay, masks, 256, 256)
    ours = list(masks) + ([] if background is None else [background])
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref, strict=True):
        assert torch.equal(a, b)


def test_regional_exclusive_overlap_keeps_overlaps_out_of_the_background() -> None:
    lay = _layout((0.0, 0.0, 0.6, 0.6), (0.4, 0.4, 1.0, 1.0))
    masks = regional_token_masks(lay, 256, 256)
    exclusive = regional_background(lay, masks, 256, 256, "exclusive")
    reference = regional_background(lay, masks, 256, 256, "reference")
    both = masks.all(dim=0)
    assert both.any() and reference[both].all() and not exclusive[both].any()
    with pytest.raises(InputError, match="overlap"):
        RegionalFluxGenerator(profile="tiny", overlap="union")


def test_regional_defaults_are_the_active_example() -> None:
    s = RegionalFluxGenerator().settings
    # infer_flux_regional.py at 5ce6e6e: background_prompt = "a photo", base_ratio = 0.3
    assert (s["background_prompt"], s["base_ratio"], s["overlap"]) == ("a photo", 0.3, "reference")


# ----- 7. stale text --------------------------------------------------------------------------
def test_flux_docs_name_every_block() -> None:
    assert "first 18" not in (flux_module.__doc__ or "")


# ----- 9. boxes drawn at image resolution ---------------------------------------------------
def test_eligen_box_tokens_follow_diffsynth() -> None:
    """The box drawn on the image's pixels, PIL NEAREST to (H/8, W/8), > 0 (preprocess_masks,
    flux_image.py at 2e59733), then a token is on if any of its 2x2 cells is (flux_dit.py)."""
    boxes = ((0.05, 0.07, 0.29, 0.23), (0.5, 0.61, 0.58, 0.97))
    lay = _layout(*boxes)
    got = eligen_token_masks(lay, 256, 256)
    for i, box in enumerate(boxes):
        image = Image.fromarray((_pixel_box(box, 256, 256) * 255).astype(np.uint8)).convert("RGB")
        cells = np.asarray(image.resize((32, 32), resample=Image.NEAREST), dtype=np.float32) * (2 / 255) - 1
        cells = torch.from_numpy(cells.mean(axis=2) > 0)
        expected = cells.reshape(16, 2, 16, 2).sum(dim=(1, 3)).flatten() > 0
        assert torch.equal(got[i], expected)
    # the earlier floor/ceil raster on the latent grid is larger
    old = F.max_pool2d(torch.from_numpy(_floor_ceil(boxes[0], 32, 32)).float()[None, None], 2).flatten() > 0
    assert old.sum() > got[0].sum()


def _floor_ceil(box: tuple[float, float, float, float], h: int, w: int) -> np.ndarray:
    """The earlier rule: every pixel the box touches at the target resolution."""
    out = np.zeros((h, w), dtype=bool)
    out[math.floor(box[1] * h):math.ceil(box[3] * h), math.floor(box[0] * w):math.ceil(box[2] * w)] = True
    return out


def test_multidiffusion_regions_follow_region_based_py() -> None:
    """omerbt/MultiDiffusion@69bcdce, region_based.py: preprocess_mask thresholds the image-size
    mask at 0.5 and resizes it with interpolate(mode='nearest') to (H/8, W/8); the background is
    1 - sum(fg), negatives set to 0."""
    boxes = ((0.1, 0.13, 0.47, 0.52), (0.4, 0.4, 0.9, 0.95))
    lay = _layout(*boxes, width=512, height=512)
    fg = torch.cat([F.interpolate(torch.from_numpy(_pixel_box(b, 512, 512))[None, None], (64, 64), mode="nearest")
                    for b in boxes])
    bg = 1 - fg.sum(dim=0, keepdim=True)
    bg[bg < 0] = 0
    expected = torch.cat([bg, fg])[:, 0].numpy()
    got = region_masks(lay, 64, 64, image_size=(512, 512))
    assert np.array_equal(got, expected)


def test_box_region_is_the_reference_pixel_slice() -> None:
    for box in ((0.1, 0.13, 0.47, 0.52), (0.25, 0.0, 0.5, 1.0)):
        assert np.array_equal(box_region(box, 200, 160), _pixel_box(box, 200, 160) > 0)
    assert box_region((0.5, 0.5, 0.5001, 0.5001), 8, 8).sum() == 1  # never empty


# ----- issue 13: no buffer of the layout's size per entity -------------------------------------
def test_huge_layout_builds_regions_at_the_model_grid() -> None:
    side = 8192
    ring = np.zeros((side, side), dtype=bool)
    ring[1000:7000, 1000:7000] = True
    ring[2000:6000, 2000:6000] = False
    mask = Mask.from_array(ring)
    del ring
    entities = [Entity(f"e{i}", (0.01 * i, 0.0, 0.01 * i + 0.4, 0.5)) for i in range(38)]
    entities += [Entity("ring", (0.1, 0.1, 0.9, 0.9), mask=mask)] * 2
    lay = Layout(id="big", prompt="p", entities=tuple(entities), width=side, height=side)
    tracemalloc.start()
    try:
        tokens = eligen_token_masks(lay, 1024, 1024)
        regional = regional_token_masks(lay, 1024, 1024)
        regional_background(lay, regional, 1024, 1024)
        eligen_foreground(lay, 1024, 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert tokens.shape == (40, 4096) and tokens[-1].any()
    # a few copies of one decoded 8192x8192 mask (64 MiB each) at a time, never 40 regions of
    # the layout's size (2.5 GiB)
    assert peak < 5 * 64 * 2**20
