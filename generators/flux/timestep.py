"""FLUX's conditioning vector (timestep, embedded guidance, pooled CLIP) computed as DiffSynth-Studio
computes it, on the modules of diffusers' `FluxTransformer2DModel`.

diffusers' transformer casts the timestep to the hidden states' dtype before embedding it
(``timestep.to(hidden_states.dtype) * 1000``): in bfloat16 the timestep 909.5, given as the
float32 909.5 / 1000, enters the sinusoidal projection as 912, and the timesteps of the 50-step
DiffSynth schedule move by up to 3.7. DiffSynth-Studio's `FluxDiT` embeds the scheduler's
float32 timestep as it is (modelscope/DiffSynth-Studio@2e59733 (v1.1.0):
diffsynth/pipelines/flux_image.py:325, the float32 timestep goes to the DiT;
diffsynth/models/flux_dit.py:424, ``self.time_embedder(timestep, hidden_states.dtype)``;
diffsynth/models/sd3_dit.py:62-65, `TimestepEmbeddings.forward`: the float32 projection, then
the cast to the model's dtype).
The two also sum the three embeddings in another order, which rounds differently in bfloat16:
DiffSynth ``(time + pooled) + guidance`` (flux_dit.py:424-427), diffusers ``(time + guidance) + pooled``.

The embedded guidance is the same on both sides: DiffSynth makes it a tensor in the latents'
dtype and multiplies by 1000 there (diffsynth/pipelines/flux_image.py:94, flux_dit.py:426), as
diffusers' cast does (3.5 -> 3504 in bfloat16).

`as_diffsynth` replaces the output of the transformer's ``time_text_embed`` for one call by
`diffsynth_conditioning`, so the rest of the model is diffusers' own, bit for bit. The weights
are the module's: nothing is copied or renamed, and LoRAs and checkpoints load as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

GUIDANCE_SCALE = 1000
"""flux_dit.py:426: ``guidance = guidance * 1000`` (in the latents' dtype)."""


def diffsynth_conditioning(
    embed: Any, timestep: torch.Tensor, guidance: float | None, pooled: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """DiffSynth's conditioning vector from diffusers' `CombinedTimestep(Guidance)TextProjEmbeddings`.

    `timestep` is on the 0-1000 scale and stays float32 until after the sinusoidal projection;
    `guidance` is the embedded guidance (None for a model without a guidance embedder).
    """
    import torch

    t = timestep.to(device=pooled.device, dtype=torch.float32).reshape(-1)
    conditioning = embed.timestep_embedder(embed.time_proj(t).to(dtype)) + embed.text_embedder(pooled)
    guidance_embedder = getattr(embed, "guidance_embedder", None)
    if guidance_embedder is not None:
        if guidance is None:
            raise ValueError("this FLUX model embeds guidance: give an embedded guidance value")
        g = torch.full((t.shape[0],), float(guidance), device=pooled.device, dtype=dtype) * GUIDANCE_SCALE
        conditioning = conditioning + guidance_embedder(embed.time_proj(g).to(dtype))
    return conditioning


@contextmanager
def as_diffsynth(
    transformer: Any, timestep: torch.Tensor, guidance: float | None, pooled: torch.Tensor, dtype: torch.dtype
) -> Iterator[None]:
    """Within the block, the transformer's conditioning vector is `diffsynth_conditioning`'s.

    A transformer without diffusers' ``time_text_embed`` (a test stand-in) is left as it is.
    """
    embed = getattr(transformer, "time_text_embed", None)
    if embed is None:
        yield
        return

    def replace(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        return diffsynth_conditioning(module, timestep, guidance, pooled, dtype).to(output.dtype)

    handle = embed.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()
