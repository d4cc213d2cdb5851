"""`flux` and `eligen` compute as DiffSynth-Studio v1.1.0 does in bfloat16 too: the timestep is
embedded in float32, the conditioning vector is summed in DiffSynth's order, and the initial
noise can be drawn where DiffSynth draws it (`noise_device=run`). `regional-flux` keeps
diffusers' FluxPipeline embedding, its reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from eligen_bench.cli import main
from eligen_bench.errors import InputError
from eligen_bench.generators.flux.generator import FluxGenerator
from eligen_bench.generators.flux.sampling import Conditioning, denoise, predict

SEED0_FIRST_TOKEN = [-1.1258398294448853, -1.152360200881958, -1.3526537418365479, -1.6959311962127686]
"""torch's CPU generator seeded 0, float32: the draws at latent cells (0,0), (0,1), (1,0), (1,1) of a
(1, 1, 16, 16) tensor (flat indices 0, 1, 16, 17), i.e. the first packed token."""


@pytest.fixture(scope="module", params=["bfloat16", "float32"])
def tiny(request: pytest.FixtureRequest) -> FluxGenerator:
    g = FluxGenerator(profile="tiny", device="cpu", dtype=request.param)
    g.ensure_loaded()
    yield g
    g.close()


def _record(module: torch.nn.Module, calls: list[torch.Tensor], arg: int = 0):
    """Record argument `arg` of every call of `module`; returns the hook handle."""
    return module.register_forward_pre_hook(lambda _m, args: calls.append(args[arg].detach().clone()))


def _inputs(g: FluxGenerator) -> tuple[torch.Tensor, Conditioning]:
    embeds, pooled = g._encode(["a red cat on a sofa"])
    return g._noise(3), Conditioning(embeds, pooled)


def _diffsynth_conditioning(embed, t: float, guidance: float, pooled: torch.Tensor, dtype,
                            order: str = "diffsynth") -> torch.Tensor:
    """Transcription of modelscope/DiffSynth-Studio@2e59733: diffsynth/models/svd_unet.py
    `get_timestep_embedding` (flip_sin_to_cos=True, downscale_freq_shift=0, max_period 10000),
    sd3_dit.py `TimestepEmbeddings.forward` (projection in float32, then to the model dtype),
    flux_image.py:94 (guidance as a tensor in the latents' dtype) and flux_dit.py:424-427
    (``time + pooled``, then ``+ guidance``), on plain tensor ops with the module's weights.
    ``order="diffusers"`` sums as diffusers does, ``(time + guidance) + pooled``."""

    def sinusoid(x: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
        angles = x[:, None].float() * freqs[None, :]
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)

    def mlp(first, second, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.silu(F.linear(x, first.weight, first.bias)), second.weight, second.bias)

    time = mlp(embed.timestep_embedder.linear_1, embed.timestep_embedder.linear_2,
               sinusoid(torch.tensor([t], dtype=torch.float32)).to(dtype))
    text = mlp(embed.text_embedder.linear_1, embed.text_embedder.linear_2, pooled)
    g = torch.tensor([guidance]).to(dtype) * 1000
    guide = mlp(embed.guidance_embedder.linear_1, embed.guidance_embedder.linear_2, sinusoid(g).to(dtype))
    return (time + text) + guide if order == "diffsynth" else (time + guide) + text


# ----- the timestep embedding -------------------------------------------------------------------
def test_timestep_enters_the_projection_in_float32(tiny: FluxGenerator) -> None:
    transformer = tiny._pipe.transformer
    noise, cond = _inputs(tiny)
    calls: list[torch.Tensor] = []
    handle = _record(transformer.time_text_embed.time_proj, calls)
    try:
        predict(transformer, noise, torch.tensor(909.5), cond, 3.5, tiny._img_ids(), cast_timestep=False)
        ours = calls[-2:]  # diffusers' own projection runs first; its output is replaced
        calls.clear()
        predict(transformer, noise, torch.tensor(909.5), cond, 3.5, tiny._img_ids(), cast_timestep=True)
        pipeline = list(calls)
    finally:
        handle.remove()
    assert ours[0].dtype == torch.float32 and ours[0].tolist() == [909.5]
    # guidance: 3.5 in the model dtype times 1000 there (bf16: 3500 rounds to 3504), on both sides
    guidance = 3504.0 if tiny._dtype == torch.bfloat16 else 3500.0
    assert ours[1].dtype == tiny._dtype and ours[1].tolist() == [guidance]
    # FluxPipeline's path: 909.5 -> bf16 908 -> /1000 = 0.90625 -> *1000 = 906.25 -> bf16 908
    expected = 908.0 if tiny._dtype == torch.bfloat16 else 909.5
    assert pipeline[0].dtype == tiny._dtype and pipeline[0].tolist() == pytest.approx([expected], abs=1e-4)


def test_conditioning_is_diffsynths_sum(tiny: FluxGenerator) -> None:
    transformer = tiny._pipe.transformer
    noise, cond = _inputs(tiny)
    seen: list[torch.Tensor] = []
    handle = _record(transformer.norm_out, seen, arg=1)  # AdaLayerNormContinuous(x, conditioning)
    try:
        predict(transformer, noise, torch.tensor(909.5), cond, 3.5, tiny._img_ids(), cast_timestep=False)
        predict(transformer, noise, torch.tensor(909.5), cond, 3.5, tiny._img_ids(), cast_timestep=True)
    finally:
        handle.remove()
    ours, pipeline = seen
    reference = _diffsynth_conditioning(transformer.time_text_embed, 909.5, 3.5, cond.pooled, tiny._dtype)
    assert torch.equal(ours, reference)
    if tiny._dtype == torch.bfloat16:  # each plausible mistake gives another answer here
        embed = transformer.time_text_embed
        assert not torch.equal(pipeline, reference)  # diffusers: bf16 timestep, (time + guidance) + pooled
        assert not torch.equal(_diffsynth_conditioning(embed, 912.0, 3.5, cond.pooled, tiny._dtype), reference)
        assert not torch.equal(_diffsynth_conditioning(embed, 909.5, 3.5, cond.pooled, tiny._dtype, "diffusers"),
                               reference)


def test_each_schedule_embeds_as_its_reference(tiny: FluxGenerator) -> None:
    """DiffSynth's schedule (eligen, flux) embeds float32 timesteps; diffusers' (regional-flux)
    gives the model only timesteps in the latents' dtype, as FluxPipeline does."""
    transformer = tiny._pipe.transformer
    noise, cond = _inputs(tiny)
    dtypes: dict[str, set[torch.dtype]] = {}
    for schedule in ("diffsynth", "diffusers"):
        calls: list[torch.Tensor] = []
        handle = _record(transformer.time_text_embed.time_proj, calls)
        try:
            denoise(transformer, tiny._pipe.scheduler, noise, tiny._img_ids(), cond, steps=2, guidance=3.5,
                    schedule=schedule)
        finally:
            handle.remove()
        dtypes[schedule] = {c.dtype for c in calls}
    assert torch.float32 in dtypes["diffsynth"]
    assert dtypes["diffusers"] == {tiny._dtype}


# ----- the initial noise ------------------------------------------------------------------------
def _diffsynth_noise(seed: int, shape: tuple[int, int, int, int], device: str, dtype) -> torch.Tensor:
    """modelscope/DiffSynth-Studio@2e59733: diffsynth/pipelines/base.py:114-116 `generate_noise`,
    then flux_dit.py `patchify`: ``B C (H P) (W Q) -> B (H W) (C P Q)``."""
    generator = torch.Generator(device).manual_seed(seed)
    noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    b, c, h, w = shape
    return noise.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w // 4, c * 4)


def _noise_of(g: FluxGenerator, seed: int) -> torch.Tensor:
    h, w = g._latent_size()
    return _diffsynth_noise(seed, (1, g._n_channels(), h, w), str(g._device), g._dtype)


def test_cpu_noise_is_the_seeds_cpu_draw_in_any_dtype(tiny: FluxGenerator) -> None:
    noise = tiny._noise(0)
    expected = torch.tensor(SEED0_FIRST_TOKEN).to(tiny._dtype)
    assert noise.dtype == tiny._dtype and torch.equal(noise[0, 0], expected)
    # on a CPU run this is DiffSynth's noise too: drawn in the model dtype or cast, the same values
    assert torch.equal(noise, _noise_of(tiny, 0))


def test_run_noise_on_a_cpu_run_is_diffsynths_and_the_cpu_default() -> None:
    g = FluxGenerator(profile="tiny", device="cpu", dtype="bfloat16", noise_device="run")
    try:
        g.ensure_loaded()
        assert torch.equal(g._noise(5), _noise_of(g, 5))
        assert torch.equal(g._noise(0)[0, 0], torch.tensor(SEED0_FIRST_TOKEN).to(torch.bfloat16))
    finally:
        g.close()


@pytest.mark.gpu
def test_run_noise_on_cuda_is_diffsynths_and_cpu_noise_stays_the_cpu_draw() -> None:
    run = FluxGenerator(profile="tiny", device="cuda", dtype="bfloat16", noise_device="run")
    cpu = FluxGenerator(profile="tiny", device="cuda", dtype="bfloat16")
    try:
        run.ensure_loaded()
        cpu.ensure_loaded()
        on_cuda = run._noise(0)
        assert on_cuda.device.type == "cuda" and torch.equal(on_cuda, _noise_of(run, 0))
        assert torch.equal(cpu._noise(0)[0, 0].cpu(), torch.tensor(SEED0_FIRST_TOKEN).to(torch.bfloat16))
        assert not torch.equal(on_cuda.cpu(), cpu._noise(0).cpu())
    finally:
        run.close()
        cpu.close()


def test_noise_device_is_keyed_only_when_it_changes_the_images() -> None:
    default, run = FluxGenerator(profile="tiny"), FluxGenerator(profile="tiny", noise_device="run")
    assert "noise_device" not in default.identity()["settings"]  # runs made before the option keep their keys
    assert default.unkeyed_settings() == {"noise_device": "cpu"}
    assert run.identity()["settings"]["noise_device"] == "run" and run.unkeyed_settings() == {}
    with pytest.raises(InputError, match="noise_device"):
        FluxGenerator(profile="tiny", noise_device="cuda")


def test_manifest_records_the_noise_device(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["generate", "--profile", "tiny", "--limit", "1", "--device", "cpu", "--no-progress", "--out", str(out),
                 "--generators", "cpu=flux,run=flux[noise_device=run]"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["added_options"] == {"cpu": {"noise_device": "cpu"}, "run": {}}
    assert manifest["config"]["generators"]["run"]["settings"]["noise_device"] == "run"
    assert "noise_device" not in manifest["config"]["generators"]["cpu"]["settings"]
    images = [sorted((out / "images" / label).glob("*.png")) for label in ("cpu", "run")]
    assert len(images[0]) == 1
    pixels = [np.asarray(Image.open(files[0])) for files in images]
    assert np.array_equal(*pixels)  # a CPU run: the same noise either way (the PNGs differ in their recorded key)
