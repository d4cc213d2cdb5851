"""The reference's PLMS sampler with the multi-instance sampler (MIS) and the grounding schedule.

A transcription of the procedure of frank-xwang/InstanceDiffusion@722900e,
ldm/models/diffusion/plms_instance.py (`PLMSSamplerInst`), written against a plain
`eps(x, t, alpha) -> noise prediction` function (classifier-free guidance included there):
- LDM's DDPM schedule (`linear`: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2,
  configs/test_mask.yaml `diffusion.params`; ldm/models/diffusion/ddpm.py) and the DDIM
  sub-sequence `range(0, 1000, 1000 // steps) + 1` (`make_ddim_timesteps`, uniform), eta 0;
- PLMS: the first step is a pseudo improved Euler step (a second prediction at the next
  timestep), then Adams-Bashforth of order 2, 3, 4 on the last three predictions;
- MIS: for the first int(steps * mis) steps the full layout and each instance alone are denoised
  separately from the same noise, each with its own PLMS history; their latents are then
  averaged and the remaining steps continue from that average with the full layout's history;
- the grounding schedule `alpha_generator([alpha, 0, 1 - alpha])` (utils/model.py): grounding
  scale 1 for the first int(alpha * steps) steps, 0 after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

EpsFn = Callable[[torch.Tensor, int, float], torch.Tensor]
"""eps(x, timestep, alpha): the guided noise prediction with grounding scale alpha."""

LINEAR_START = 0.00085
LINEAR_END = 0.012
TRAIN_TIMESTEPS = 1000
"""configs/test_mask.yaml@722900e, `diffusion.params`."""


@dataclass(frozen=True)
class PlmsSchedule:
    """Sampling-order timesteps with alpha-bar at each and at the one before it."""

    timesteps: list[int]
    alphas: list[float]
    alphas_prev: list[float]

    @classmethod
    def ldm(cls, steps: int) -> PlmsSchedule:
        betas = np.linspace(LINEAR_START ** 0.5, LINEAR_END ** 0.5, TRAIN_TIMESTEPS, dtype=np.float64) ** 2
        alphacums = np.cumprod(1.0 - betas).astype(np.float32)  # the reference keeps float32 buffers
        ddim = np.arange(0, TRAIN_TIMESTEPS, TRAIN_TIMESTEPS // steps) + 1
        alphas = alphacums[ddim]
        prev = np.concatenate([alphacums[:1], alphacums[ddim[:-1]]])
        return cls([int(t) for t in ddim[::-1]], [float(a) for a in alphas[::-1]],
                   [float(a) for a in prev[::-1]])

    def __len__(self) -> int:
        return len(self.timesteps)


def grounding_alphas(steps: int, alpha: float) -> list[float]:
    """`alpha_generator(steps, [alpha, 0, 1 - alpha])`: 1 for int(alpha * steps) steps, then 0."""
    on = int(alpha * steps)
    return [1.0] * on + [0.0] * (steps - on)


def ddim_update(x: torch.Tensor, eps: torch.Tensor, a_t: float, a_prev: float) -> torch.Tensor:
    """x_{t-1} = sqrt(a_prev) * x0_hat + sqrt(1 - a_prev) * eps (eta 0)."""
    pred_x0 = (x - (1.0 - a_t) ** 0.5 * eps) / a_t ** 0.5
    return a_prev ** 0.5 * pred_x0 + (1.0 - a_prev) ** 0.5 * eps


def plms_step(eps_fn: EpsFn, x: torch.Tensor, i: int, schedule: PlmsSchedule, alpha: float,
              history: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One PLMS step at sampling index i; returns x_{t-1} and this step's prediction."""
    a_t, a_prev = schedule.alphas[i], schedule.alphas_prev[i]
    e_t = eps_fn(x, schedule.timesteps[i], alpha)
    if not history:
        t_next = schedule.timesteps[min(i + 1, len(schedule) - 1)]
        e_next = eps_fn(ddim_update(x, e_t, a_t, a_prev), t_next, alpha)
        e_prime = (e_t + e_next) / 2
    elif len(history) == 1:
        e_prime = (3 * e_t - history[-1]) / 2
    elif len(history) == 2:
        e_prime = (23 * e_t - 16 * history[-1] + 5 * history[-2]) / 12
    else:
        e_prime = (55 * e_t - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
    return ddim_update(x, e_prime, a_t, a_prev), e_t


def _run(eps_fn: EpsFn, x: torch.Tensor, indices: range, schedule: PlmsSchedule, alphas: Sequence[float],
         history: list[torch.Tensor], on_step: Callable[[int, float], None] | None) -> torch.Tensor:
    for i in indices:
        if on_step is not None:
            on_step(i, alphas[i])
        x, e_t = plms_step(eps_fn, x, i, schedule, alphas[i], history)
        history.append(e_t)
        if len(history) > 3:
            history.pop(0)
    return x


def sample_mis(eps_fns: Sequence[EpsFn], noise: torch.Tensor, schedule: PlmsSchedule, mis: float,
               alphas: Sequence[float], on_step: Callable[[int, float], None] | None = None) -> torch.Tensor:
    """Denoise `noise`; eps_fns[0] is the full layout, the others one instance each.

    `on_step(i, alpha)` runs before every step of every pass (the reference restores the first
    convolution there when alpha is 0).
    """
    mis_steps = int(len(schedule) * mis)
    latents, histories = [], []
    for eps_fn in eps_fns:
        history: list[torch.Tensor] = []
        latents.append(_run(eps_fn, noise, range(mis_steps), schedule, alphas, history, on_step))
        histories.append(history)
    x = torch.stack(latents).mean(dim=0)
    return _run(eps_fns[0], x, range(mis_steps, len(schedule)), schedule, alphas, histories[0], on_step)
