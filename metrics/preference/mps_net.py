"""The MPS network rebuilt in plain PyTorch + transformers CLIP (imported only when `mps` loads).

MPS (Zhang et al., CVPR 2024, github Kwai-Kolors/MPS) is a CLIP-H/14 whose text and image
*token* features (projected, not pooled) meet in a small cross-modal transformer: 4 layers, each a
cross-attention from image tokens to text tokens (multi-query: one shared key/value head, plus a
parallel SwiGLU feed-forward) followed by a parallel self-attention + feed-forward block with
rotary position embeddings, all with bias-free LayerNorms. The first output token is the image
embedding.

Parameter names mirror the reference module tree (`model.*` for the CLIP, `cross_model.layers.N.
{0,1}.fn.*`), so a state dict taken from the reference model loads here. Verified offline: the
forward pass and round trips on tiny random instances only; equality with the released
checkpoint's outputs needs the real weights (test marked `weights`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class BiasFreeLayerNorm(nn.Module):
    """LayerNorm with a learned scale and a fixed zero bias (kept as a buffer, as the reference)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("bias", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias)


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        return self.fn(x, *args) + x


class RotaryEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, length: int, device: torch.device) -> torch.Tensor:
        positions = torch.arange(length, device=device, dtype=self.inv_freq.dtype)
        freqs = torch.outer(positions, self.inv_freq)
        return torch.cat((freqs, freqs), dim=-1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def _apply_rotary(pos: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return t * pos.cos().to(t.dtype) + _rotate_half(t) * pos.sin().to(t.dtype)


class SwiGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = x.chunk(2, dim=-1)
        return F.silu(gate) * value


class ParallelBlock(nn.Module):
    """Self-attention (multi-query, rotary) and SwiGLU feed-forward computed in parallel."""

    def __init__(self, dim: int, dim_head: int, heads: int, ff_mult: int):
        super().__init__()
        self.norm = BiasFreeLayerNorm(dim)
        self.heads, self.scale = heads, dim_head**-0.5
        self.fused_dims = (dim_head * heads, dim_head, dim_head, dim * ff_mult * 2)
        self.rotary_emb = RotaryEmbedding(dim_head)
        self.fused_attn_ff_proj = nn.Linear(dim, sum(self.fused_dims), bias=False)
        self.attn_out = nn.Linear(dim_head * heads, dim, bias=False)
        self.ff_out = nn.Sequential(SwiGLU(), nn.Linear(dim * ff_mult, dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        q, k, v, ff = self.fused_attn_ff_proj(x).split(self.fused_dims, dim=-1)
        q = q.view(b, n, self.heads, -1).transpose(1, 2)
        pos = self.rotary_emb(n, x.device)
        q, k = _apply_rotary(pos, q) * self.scale, _apply_rotary(pos, k)
        sim = torch.einsum("bhid,bjd->bhij", q, k)
        attn = (sim - sim.amax(dim=-1, keepdim=True).detach()).softmax(dim=-1)
        out = torch.einsum("bhij,bjd->bhid", attn, v).transpose(1, 2).reshape(b, n, -1)
        return self.attn_out(out) + self.ff_out(ff)


class CrossAttention(nn.Module):
    """Queries from image tokens, one shared key/value head over text tokens, additive mask."""

    def __init__(self, dim: int, dim_head: int, heads: int, ff_mult: int):
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        self.norm = BiasFreeLayerNorm(dim)
        self.context_norm = nn.Identity()
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_kv = nn.Linear(dim, dim_head * 2, bias=False)
        self.to_out = nn.Linear(dim_head * heads, dim, bias=False)
        self.ff = nn.Sequential(
            nn.Linear(dim, dim * ff_mult * 2, bias=False), SwiGLU(), nn.Linear(dim * ff_mult, dim, bias=False)
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        q = self.to_q(x).view(b, n, self.heads, -1).transpose(1, 2) * self.scale
        k, v = self.to_kv(self.context_norm(context)).chunk(2, dim=-1)
        sim = torch.einsum("bhid,bjd->bhij", q, k) + mask.unsqueeze(1)
        attn = (sim - sim.amax(dim=-1, keepdim=True)).softmax(dim=-1)
        out = torch.einsum("bhij,bjd->bhid", attn, v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out) + self.ff(x)


class CrossModel(nn.Module):
    """Alternating cross-attention and parallel self-attention blocks, each residual."""

    def __init__(self, dim: int = 1024, layer_num: int = 4, dim_head: int = 64, heads: int = 16, ff_mult: int = 4):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([
                Residual(CrossAttention(dim, dim_head, heads, ff_mult)),
                Residual(ParallelBlock(dim, dim_head, heads, ff_mult)),
            ])
            for _ in range(layer_num)
        )

    def forward(self, query: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for cross, self_block in self.layers:
            query = self_block(cross(query, context, mask))
        return query


class MPSNet(nn.Module):
    """`model`: a transformers CLIPModel (CLIP-H/14 for the release); `cross_model`: the fusion."""

    def __init__(self, clip_config: Any, layer_num: int = 4, dim_head: int = 64, heads: int = 16, ff_mult: int = 4):
        super().__init__()
        from transformers import CLIPModel

        self.model = CLIPModel(clip_config)
        dim = clip_config.projection_dim
        self.cross_model = CrossModel(dim, layer_num, dim_head, heads, ff_mult)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale


def cross_hyperparameters(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Layer count, head size, heads and ff multiplier read off a state dict's shapes."""
    prefix = "cross_model.layers."
    layers = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
    if not layers:
        raise KeyError("no cross_model.layers.* weights in the checkpoint")
    to_kv = state[f"{prefix}0.0.fn.to_kv.weight"]
    to_q = state[f"{prefix}0.0.fn.to_q.weight"]
    ff_in = state[f"{prefix}0.0.fn.ff.0.weight"]
    dim_head = to_kv.shape[0] // 2
    return {
        "layer_num": len(layers),
        "dim_head": dim_head,
        "heads": to_q.shape[0] // dim_head,
        "ff_mult": ff_in.shape[0] // (2 * to_q.shape[1]),
    }
