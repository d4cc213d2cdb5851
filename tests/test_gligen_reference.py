"""GLIGEN against its reference code (gligen/GLIGEN@f9dccb9): grounding length, sampler, long phrases.

Each test transcribes the reference procedure independently and runs our generator on a tiny
random pipeline (offline, CPU).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from eligen_bench.layout import Entity, Layout
from eligen_bench.requests import GenerationRequest

from fixtures import TWO_PETS


def reference_alphas(length: int, alpha_type: list[float]) -> list[float]:
    """gligen_inference.py@f9dccb9 `alpha_generator`, transcribed: alpha 1 for int(a*N) steps,
    a linear decay for int(b*N), then 0."""
    stage0, stage1 = int(alpha_type[0] * length), int(alpha_type[1] * length)
    stage2 = length - stage0 - stage1
    decay = list(np.arange(0, 1, 1 / stage1)[::-1]) if stage1 else []
    return [1] * stage0 + decay + [0] * stage2


def reference_alpha_per_model_call(steps: int, beta: float) -> list[float]:
    """ldm/models/diffusion/plms.py@f9dccb9: the alpha of step i is set before the step, and the
    first step (no previous eps yet) calls the model twice (pseudo improved Euler)."""
    alphas = reference_alphas(steps, [beta, 0.0, 1.0 - beta])
    return [alphas[0]] + alphas


def test_grounded_call_count_at_the_reference_settings() -> None:
    from eligen_bench.generators.stable_diffusion.gligen import build_sampler, grounded_unet_calls

    expected = sum(alpha == 1 for alpha in reference_alpha_per_model_call(50, 0.3))
    assert expected == 16  # 15 PLMS steps, the first evaluated twice
    assert grounded_unet_calls(build_sampler("plms", None), 50, 0.3) == expected
    assert grounded_unet_calls(build_sampler("ddim", None), 50, 0.3) == 15  # one call per step


def test_grounded_unet_calls_follow_the_reference_in_the_pipeline() -> None:
    """10 steps at 0.3: the reference grounds 3 steps (4 UNet calls); diffusers' own
    `int(0.3 * 11)` would ground 3 calls."""
    from diffusers.models.attention import GatedSelfAttentionDense

    from eligen_bench.generators.stable_diffusion.gligen import GligenGenerator

    steps, beta = 10, 0.3
    generator = GligenGenerator(profile="tiny", device="cpu", steps=steps, gligen_scheduled_sampling_beta=beta)
    generator.ensure_loaded()
    gated = next(m for m in generator._pipe.unet.modules() if isinstance(m, GatedSelfAttentionDense))
    seen: list[bool] = []
    gated.register_forward_pre_hook(lambda module, args: seen.append(module.enabled))
    generator.generate([GenerationRequest(TWO_PETS, 0, 1, generator.identity())])
    expected = [alpha == 1 for alpha in reference_alpha_per_model_call(steps, beta)]
    assert seen == expected


def reference_plms(eps, x: np.ndarray, steps: int) -> np.ndarray:
    """ldm/models/diffusion/plms.py@f9dccb9 `plms_sampling` (eta 0), transcribed with the
    reference's schedule: make_beta_schedule('linear', 1000, 0.00085, 0.012) (util.py) and
    make_ddim_timesteps('uniform') + make_ddim_sampling_parameters."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    cumprod = np.cumprod(1.0 - betas)
    timesteps = np.arange(0, 1000, 1000 // steps) + 1
    a = cumprod[timesteps]
    a_prev = np.concatenate([[cumprod[0]], cumprod[timesteps[:-1]]])
    time_range = timesteps[::-1]
    old: list[np.ndarray] = []

    def step(x: np.ndarray, e: np.ndarray, index: int) -> np.ndarray:
        pred_x0 = (x - np.sqrt(1 - a[index]) * e) / np.sqrt(a[index])
        return np.sqrt(a_prev[index]) * pred_x0 + np.sqrt(1 - a_prev[index]) * e

    for i, t in enumerate(time_range):
        index = steps - i - 1
        e_t = eps(x, t)
        if not old:
            t_next = time_range[min(i + 1, steps - 1)]
            e_prime = (e_t + eps(step(x, e_t, index), t_next)) / 2
        elif len(old) == 1:
            e_prime = (3 * e_t - old[-1]) / 2
        elif len(old) == 2:
            e_prime = (23 * e_t - 16 * old[-1] + 5 * old[-2]) / 12
        else:
            e_prime = (55 * e_t - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
        x = step(x, e_prime, index)
        old = (old + [e_t])[-3:]
    return x


def test_plms_sampler_is_the_reference_plms() -> None:
    import torch

    from eligen_bench.generators.stable_diffusion.gligen import build_sampler

    def eps(x, t):  # any smooth noise predictor that depends on x and t
        return np.sin(x * 0.7 + float(t) / 300.0) * 0.8

    start = np.random.default_rng(0).standard_normal((1, 4, 3, 3))
    steps = 10
    for name in ("plms", "ddim"):
        scheduler = build_sampler(name, None)
        scheduler.set_timesteps(steps)
        x = torch.tensor(start)
        for t in scheduler.timesteps:
            x = scheduler.step(torch.tensor(eps(x.numpy(), int(t))), t, x).prev_sample
        reference = reference_plms(eps, start, steps)
        difference = float(np.abs(x.numpy() - reference).max())
        if name == "plms":
            assert difference < 1e-5
        else:
            assert difference > 1e-3  # DDIM is another sampler: the check can tell them apart


def test_default_sampler_is_plms_whatever_the_checkpoint_ships(tmp_path) -> None:
    from diffusers import DDIMScheduler, PNDMScheduler

    from eligen_bench.generators.stable_diffusion.common import build_tiny_sd_pipeline
    from eligen_bench.generators.stable_diffusion.gligen import GligenGenerator

    build_tiny_sd_pipeline(str(tmp_path), gated=True)
    # As diffusers' scripts/convert_gligen_to_diffusers.py writes it.
    DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                  clip_sample=False, set_alpha_to_one=False).save_pretrained(tmp_path / "scheduler")
    index = json.loads((tmp_path / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "DDIMScheduler"]
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    options = {"model": str(tmp_path), "steps": 2, "width": 64, "height": 64}
    default = GligenGenerator(profile="full", device="cpu", **options)
    default.ensure_loaded()
    assert isinstance(default._pipe.scheduler, PNDMScheduler) and default._pipe.scheduler.config.skip_prk_steps
    assert default.identity()["settings"]["sampler"] == "plms"
    checkpoint = GligenGenerator(profile="full", device="cpu", sampler="checkpoint", **options)
    checkpoint.ensure_loaded()
    assert isinstance(checkpoint._pipe.scheduler, DDIMScheduler)


LONG = " ".join(["a very small red wooden toy car with shiny wheels"] * 10)  # about 100 CLIP tokens


def test_long_phrase_is_truncated_and_counted_through_the_cli(tmp_path) -> None:
    from eligen_bench.cli import main
    from eligen_bench.generators.stable_diffusion.gligen import TRUNCATED_NOTE
    from eligen_bench.suite import Suite
    from eligen_bench.tiny import clip_tokenizer

    assert len(clip_tokenizer()(LONG).input_ids) > 77
    box = (0.1, 0.1, 0.6, 0.6)
    layouts = (
        Layout(id="two-long", prompt="toys", entities=(Entity(LONG, box), Entity(LONG + " again", box),
                                                        Entity("a ball", box))),
        Layout(id="one-long", prompt="a toy", entities=(Entity(LONG, box),)),
        Layout(id="short", prompt="a ball", entities=(Entity("a ball", box),)),
    )
    suite_file = tmp_path / "long.jsonl"
    Suite(name="long-phrases", version="1", layouts=layouts).write(suite_file)
    assert main(["validate", str(suite_file), "--generators", "gligen"]) == 0
    out = tmp_path / "run"
    assert main(["run", "--profile", "tiny", "--suite", str(suite_file), "--generators", "gligen",
                 "--metrics", "background_psnr", "--out", str(out), "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["adapt_notes"]["gligen"][TRUNCATED_NOTE] == 3  # phrases, not layouts
    assert sorted(p.name for p in (out / "images" / "gligen").glob("*.png")) == [
        "one-long_0.png", "short_0.png", "two-long_0.png"]


def test_reference_is_declared() -> None:
    from eligen_bench.generators.stable_diffusion.gligen import GligenGenerator
    from eligen_bench.generators.stable_diffusion.multidiffusion import MultiDiffusionGenerator

    assert GligenGenerator.reference.startswith("gligen/GLIGEN@f9dccb9")
    assert MultiDiffusionGenerator.reference.startswith("omerbt/MultiDiffusion@69bcdce")


def test_full_profile_counts_with_the_checkpoint_tokenizer(tmp_path) -> None:
    from eligen_bench.errors import InputError
    from eligen_bench.generators.stable_diffusion.common import build_tiny_sd_pipeline
    from eligen_bench.generators.stable_diffusion.gligen import TRUNCATED_NOTE, GligenGenerator

    build_tiny_sd_pipeline(str(tmp_path / "ckpt"), gated=True)
    generator = GligenGenerator(profile="full", device="cpu", model=str(tmp_path / "ckpt"))
    layout = Layout(id="long", prompt="toys", entities=(Entity(LONG, (0.1, 0.1, 0.6, 0.6)),))
    assert generator.adapt(layout)[1] == [TRUNCATED_NOTE]
    missing = GligenGenerator(profile="full", device="cpu", model=str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="tokenizer"):
        missing.adapt(layout)
