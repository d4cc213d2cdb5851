"""The Qwen-Image denoising loop as DiffSynth-Studio runs it for the EliGen examples.

modelscope/DiffSynth-Studio@afd101f (v1.1.9), diffsynth/pipelines/qwen_image.py (`__call__`,
`model_fn_qwen_image`) and diffsynth/schedulers/flow_match.py:

* Schedule: ``FlowMatchScheduler(sigma_min=0, sigma_max=1, extra_one_step=True,
  exponential_shift=True, exponential_shift_mu=0.8, shift_terminal=0.02)``, set with
  ``dynamic_shift_len = (H/16) * (W/16)``: ``linspace(1, 0, steps + 1)[:-1]``, shifted as
  ``e^mu / (e^mu + (1/s - 1))`` with ``mu`` linear in the token count (0.5 at 256 tokens, 0.9
  at 8192), then stretched so the last sigma is 0.02; the model's timestep is ``1000 * sigma``.
  diffusers' `QwenImagePipeline` reaches the same shape through another code path (its ``mu``
  ends at 4096 tokens by default); this module transcribes DiffSynth's.
* Timestep dtype: the 0-1000 timestep is cast to the model's dtype, then divided by 1000 in
  that dtype, before the model embeds it (bfloat16 rounding included).
* Guidance: plain CFG ``negative + cfg * (positive - negative)``; diffusers' pipeline rescales
  the guided prediction to the positive prediction's norm, DiffSynth does not.
* Step: ``x + v * (sigma_next - sigma)``, the last step to sigma 0 (the FLUX family's Euler step).
* Noise: ``torch.randn((1, 16, H/8, W/8))`` from a CPU generator seeded with the request's seed,
  drawn directly in the model's dtype (``rand_device="cpu"``, ``rand_torch_dtype=torch_dtype``),
  then packed 2x2 into tokens as ``B C (H P) (W Q) -> B (H W) (C P Q)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

LATENT_CHANNELS = 16
"""`QwenImageUnit_NoiseInitializer`: noise of shape (1, 16, H/8, W/8)."""
SHIFT_TERMINAL = 0.02
BASE_SEQ_LEN, MAX_SEQ_LEN, BASE_SHIFT, MAX_SHIFT = 256, 8192, 0.5, 0.9
"""`FlowMatchScheduler.calculate_shift` defaults."""


@dataclass(frozen=True, eq=False)
class Branch:
    """What one CFG branch feeds the transformer."""

    prompt_embeds: torch.Tensor
    """(1, L, joint_attention_dim) text hidden states; several prompts are concatenated along L."""
    regional: Any = None
    """An `attention.EliGenQwenControl`, or None for plain attention."""


def calculate_shift(image_seq_len: int) -> float:
    """`FlowMatchScheduler.calculate_shift`: mu linear in the token count."""
    m = (MAX_SHIFT - BASE_SHIFT) / (MAX_SEQ_LEN - BASE_SEQ_LEN)
    b = BASE_SHIFT - m * BASE_SEQ_LEN
    return image_seq_len * m + b


def qwen_sigmas(steps: int, height: int, width: int) -> torch.Tensor:
    """DiffSynth's Qwen-Image sigmas (float32, `steps` values, without the final 0)."""
    import torch

    sigmas = torch.linspace(1.0, 0.0, steps + 1)[:-1]
    mu = calculate_shift((height // 16) * (width // 16))
    sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
    one_minus_z = 1 - sigmas
    scale_factor = one_minus_z[-1] / (1 - SHIFT_TERMINAL)
    return 1 - (one_minus_z / scale_factor)


def model_timestep(sigma_timestep: torch.Tensor, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """The (1,) timestep the model gets: ``(1000 * sigma).to(dtype) / 1000`` in `dtype`."""
    return sigma_timestep.unsqueeze(0).to(dtype=dtype, device=device) / 1000


def initial_noise(seed: int, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    """(1, 16, H/8, W/8) noise from a CPU generator, drawn in `dtype`."""
    import torch

    gen = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn((1, LATENT_CHANNELS, height // 8, width // 8), generator=gen, device="cpu", dtype=dtype)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """``B C (H P) (W Q) -> B (H W) (C P Q)`` with P = Q = 2."""
    b, c, h, w = latents.shape
    x = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of `pack` for an image of `height` x `width` pixels."""
    b, _, d = tokens.shape
    h, w = height // 16, width // 16
    x = tokens.reshape(b, h, w, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, h * 2, w * 2)


def predict(transformer: Any, latents: torch.Tensor, timestep: torch.Tensor, branch: Branch,
            height: int, width: int) -> torch.Tensor:
    """One transformer call: the velocity for packed `latents` (1, N, 64)."""
    kwargs = {"regional": branch.regional} if branch.regional is not None else None
    return transformer(
        hidden_states=latents,
        encoder_hidden_states=branch.prompt_embeds,
        encoder_hidden_states_mask=None,  # one prompt per branch, no padding
        timestep=timestep,
        img_shapes=[(1, height // 16, width // 16)],
        attention_kwargs=kwargs,
        return_dict=False,
    )[0]


def denoise(
    transformer: Any,
    noise: torch.Tensor,
    positive: Branch,
    negative: Branch | None,
    *,
    steps: int,
    cfg_scale: float,
    height: int,
    width: int,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Run the sampler from packed `noise` (1, N, 64); returns the final packed latents."""
    import torch

    from eligen_bench.generators.flux.sampling import euler_step

    sigmas = qwen_sigmas(steps, height, width)
    timesteps = sigmas * 1000
    sigmas = torch.cat([sigmas, torch.zeros(1)])  # the last step goes to sigma 0
    latents = noise
    use_cfg = negative is not None and cfg_scale != 1.0
    with torch.no_grad():
        for i in range(steps):
            t = model_timestep(timesteps[i], latents.dtype, latents.device)
            pred = predict(transformer, latents, t, positive, height, width)
            if use_cfg:
                neg = predict(transformer, latents, t, negative, height, width)
                pred = neg + cfg_scale * (pred - neg)
            latents = euler_step(latents, pred, sigmas[i], sigmas[i + 1])
            if on_step is not None:
                on_step(i, latents)
    return latents
