"""The FLUX denoising loop shared by `flux`, `eligen` and `regional-flux`.

Euler flow matching on one of two sigma schedules:

* ``diffsynth`` (EliGen's): DiffSynth-Studio's `FlowMatchScheduler` for FLUX, the code that
  produced the EliGen paper's numbers (modelscope/DiffSynth-Studio@2e59733 (v1.1.0),
  diffsynth/schedulers/flow_match.py; the same formula is `set_timesteps_flux` in
  diffsynth/diffusion/flow_match.py at fed7b18): ``linspace(1, 0.003/1.002, steps)`` shifted by
  a fixed ``shift = 3`` as ``shift * s / (1 + (shift - 1) * s)``; the transformer gets
  ``1000 * sigma`` as its timestep and the Euler step goes from each sigma to the next, the
  last one to 0, in the latents' dtype (``x + v * (sigma_next - sigma)``). The timestep is
  embedded in float32 as DiffSynth embeds it (`flux_timestep`), not cast to the model's dtype.
* ``diffusers`` (Regional Prompting FLUX's, which runs diffusers' `FluxPipeline`): the
  ``linspace(1, 1/steps, steps)`` schedule shifted by ``mu`` from the image's token count
  through `FlowMatchEulerDiscreteScheduler`, exactly as `FluxPipeline` sets it; the timestep
  is cast to the latents' dtype and embedded by diffusers' transformer, as `FluxPipeline` does.

FLUX.1-dev's embedded guidance goes in as the guidance embedding; true classifier-free guidance (EliGen Sec. 3.4: scale 3 with a negative
prompt) runs the negative conditioning as a second forward pass::

    noise = negative + cfg_scale * (positive - negative)

Inpainting fusion is Algorithm 1 of the EliGen paper: the positive prediction keeps the
model's output inside the union of the entity masks and takes ``(z_t - z_init) / sigma_t``
outside, i.e. the velocity that carries ``z_t`` exactly onto the straight path from noise to
the input image's latents; CFG is applied after the fusion, as in the algorithm. With
``cfg_scale == 1`` the background therefore ends at ``z_init`` up to rounding; with CFG the
negative branch nudges it, as in the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, eq=False)
class Conditioning:
    """What one branch (positive or negative) feeds the transformer."""

    prompt_embeds: torch.Tensor
    """(B, L, joint_attention_dim) T5 embeddings; several prompts are concatenated along L."""
    pooled: torch.Tensor
    """(B, pooled_projection_dim) CLIP pooled embedding."""
    regional: Any = None
    """A `flux_regional` control, or None for plain attention."""
    until_step: int | None = None
    """With `fallback`: this conditioning holds for steps < until_step, `fallback` after."""
    fallback: Conditioning | None = None
    """The conditioning of the later steps (Regional Prompting's injection steps)."""

    def at(self, step: int) -> Conditioning:
        """The conditioning in force at denoising step `step` (0-based)."""
        if self.fallback is not None and self.until_step is not None and step >= self.until_step:
            return self.fallback.at(step)
        return self

    @property
    def batch(self) -> int:
        return int(self.prompt_embeds.shape[0])


@dataclass(frozen=True, eq=False)
class Inpainting:
    """Inputs of the inpainting fusion, in packed-latent layout (1, n_tokens, channels)."""

    init_latents: torch.Tensor
    """z_init: the VAE latents of the input image (scaled and shifted like sampling latents)."""
    foreground: torch.Tensor
    """Bool, same shape: True where the union of the entity masks is (the model paints there)."""


SCHEDULERS = ("diffsynth", "diffusers")

DIFFSYNTH_SHIFT = 3.0
"""modelscope/DiffSynth-Studio@2e59733, diffsynth/schedulers/flow_match.py: FlowMatchScheduler(shift=3.0)."""
DIFFSYNTH_SIGMA_MIN = 0.003 / 1.002
"""Same file: sigma_min=0.003/1.002 (sigma_max=1.0, num_train_timesteps=1000)."""


@dataclass(frozen=True, eq=False)
class Schedule:
    """The sigmas of one sampling run and the timestep the model sees at each step."""

    sigmas: torch.Tensor
    """float32 (steps + 1,): the noise level before each step, then the final one (0)."""
    timesteps: torch.Tensor
    """float32 (steps,): the model's timestep at each step, on the 0-1000 scale."""


def diffsynth_sigmas(steps: int, denoising_strength: float = 1.0, shift: float = DIFFSYNTH_SHIFT) -> torch.Tensor:
    """DiffSynth-Studio's FLUX sigmas (float32, `steps` values, without the final 0)."""
    import torch

    start = DIFFSYNTH_SIGMA_MIN + (1.0 - DIFFSYNTH_SIGMA_MIN) * denoising_strength
    sigmas = torch.linspace(start, DIFFSYNTH_SIGMA_MIN, steps)
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def make_schedule(name: str, scheduler: Any, steps: int, image_seq_len: int, device: Any) -> Schedule:
    """The `name` schedule ("diffsynth" or "diffusers") for `steps` steps on `device`."""
    import torch

    if name == "diffsynth":
        sigmas = diffsynth_sigmas(steps)
        timesteps = sigmas * 1000
        sigmas = torch.cat([sigmas, torch.zeros(1)])  # the last step goes to sigma 0
        # kept on the CPU as DiffSynth keeps them: a CPU scalar enters the Euler step unrounded
        return Schedule(sigmas, timesteps)
    if name == "diffusers":
        timesteps = set_flux_timesteps(scheduler, steps, image_seq_len, device)
        return Schedule(scheduler.sigmas, timesteps)
    raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")


def set_flux_timesteps(scheduler: Any, steps: int, image_seq_len: int, device: Any) -> torch.Tensor:
    """Configure `scheduler` with FLUX's shifted sigmas; returns its timesteps."""
    import numpy as np
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    sigmas = np.linspace(1.0, 1.0 / steps, steps)
    config = scheduler.config
    mu = calculate_shift(
        image_seq_len,
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", 1.15),
    )
    scheduler.set_timesteps(sigmas=sigmas, device=device, mu=mu)
    return scheduler.timesteps


def predict(
    transformer: Any,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    cond: Conditioning,
    guidance: float | None,
    img_ids: torch.Tensor,
    cast_timestep: bool = True,
) -> torch.Tensor:
    """One transformer call at `timestep` (0-1000 scale).

    `cast_timestep` embeds the timestep as diffusers' FluxPipeline does (cast to the latents'
    dtype, then diffusers' conditioning); False embeds it as DiffSynth-Studio does (float32,
    `flux_timestep.as_diffsynth`). Returns batch element 0's velocity, shaped as `latents` (1, N, C).
    """
    import contextlib

    import torch

    from eligen_bench.generators.flux.regional import text_ids
    from eligen_bench.generators.flux.timestep import as_diffsynth

    batch = cond.batch
    hidden = latents.expand(batch, -1, -1)
    # The transformer multiplies its timestep by 1000 again. diffusers' FluxPipeline casts
    # the 0-1000 timestep to the latents' dtype first; DiffSynth keeps it in float32.
    t = timestep.to(latents.device).expand(batch)
    t = t.to(latents.dtype) / 1000 if cast_timestep else t.float() / 1000
    guidance_t = None
    if transformer.config.guidance_embeds:
        if guidance is None:
            raise ValueError("this FLUX model embeds guidance: give an embedded guidance value")
        guidance_t = torch.full((batch,), float(guidance), device=latents.device, dtype=torch.float32)
    kwargs = {"regional": cond.regional} if cond.regional is not None else None
    embedding = (contextlib.nullcontext() if cast_timestep
                 else as_diffsynth(transformer, timestep.expand(batch), guidance, cond.pooled, latents.dtype))
    with embedding:
        out = transformer(
            hidden_states=hidden,
            timestep=t,
            guidance=guidance_t,
            pooled_projections=cond.pooled,
            encoder_hidden_states=cond.prompt_embeds,
            txt_ids=text_ids(cond.prompt_embeds.shape[1], latents.device, latents.dtype),
            img_ids=img_ids,
            joint_attention_kwargs=kwargs,
            return_dict=False,
        )[0]
    return out[:1]


def denoise(
    transformer: Any,
    scheduler: Any,
    noise: torch.Tensor,
    img_ids: torch.Tensor,
    positive: Conditioning,
    negative: Conditioning | None = None,
    *,
    steps: int,
    cfg_scale: float = 1.0,
    guidance: float | None = 3.5,
    inpainting: Inpainting | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    schedule: str = "diffsynth",
) -> torch.Tensor:
    """Run the sampler from packed `noise` (1, N, C) and return the final packed latents.

    `scheduler` is the pipeline's diffusers scheduler; only the ``diffusers`` schedule uses it.
    """
    import torch

    plan = make_schedule(schedule, scheduler, steps, noise.shape[1], noise.device)
    sigmas = plan.sigmas
    latents = noise
    if inpainting is not None:
        init = inpainting.init_latents.to(noise.dtype)
        latents = (sigmas[0] * noise.float() + (1.0 - sigmas[0]) * init.float()).to(noise.dtype)
    use_cfg = negative is not None and cfg_scale != 1.0
    as_pipe = schedule == "diffusers"
    with torch.no_grad():
        for i, t in enumerate(plan.timesteps):
            pred = predict(transformer, latents, t, positive.at(i), guidance, img_ids, as_pipe)
            if inpainting is not None:
                pred = fuse_inpainting(pred, latents, inpainting, sigmas[i])
            if use_cfg:
                neg = predict(transformer, latents, t, negative.at(i), guidance, img_ids, as_pipe)
                pred = neg + cfg_scale * (pred - neg)
            if schedule == "diffusers":
                latents = scheduler.step(pred, t, latents, return_dict=False)[0]
            else:
                latents = euler_step(latents, pred, sigmas[i], sigmas[i + 1])
            if on_step is not None:
                on_step(i, latents)
    return latents


def euler_step(latents: torch.Tensor, velocity: torch.Tensor, sigma: Any, sigma_next: Any) -> torch.Tensor:
    """DiffSynth's `FlowMatchScheduler.step`: ``x + v * (sigma_next - sigma)`` in the latents' dtype
    (modelscope/DiffSynth-Studio@2e59733, diffsynth/schedulers/flow_match.py)."""
    return latents + velocity * (sigma_next - sigma)


def fuse_inpainting(pred: torch.Tensor, latents: torch.Tensor, inpainting: Inpainting, sigma: Any) -> torch.Tensor:
    """Algorithm 1: model velocity in the foreground, ``(z_t - z_init) / sigma_t`` in the background."""
    import torch

    background = (latents.float() - inpainting.init_latents.float()) / float(sigma)
    return torch.where(inpainting.foreground, pred.float(), background).to(pred.dtype)
