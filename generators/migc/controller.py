"""The MIGC controller (Zhou et al., CVPR 2024) as torch modules and a diffusers attention processor.

Reference: limuloo/MIGC@effd6cc, `migc/migc_arch.py` (MIGC, SAC, PositionNet, NaiveFuser),
`migc/migc_layers.py` (CrossAttention, LayoutAttention, CBAM) and `migc/migc_pipeline.py`
(MIGCProcessor). Module attribute names follow the released checkpoint's parameter names
(`ea`, `la`, `norm`, `sac`, `pos_net`, ...), so its tensors load without renaming.

On a controlled cross-attention layer, for the conditional branch only:
1. plain cross-attention of the image tokens with the global prompt and with each instance
   phrase (one batch row each);
2. enhancement attention: each instance's tokens (LayerNorm-ed) attend to two tokens, the
   phrase's pooled CLIP embedding and a box token (Fourier embedding of [x0, x1, y0, y1]
   through an MLP); added to the phrase's cross-attention inside its box;
3. layout attention: self-attention of the image tokens restricted to pairs that share a
   region (an instance box or the background), the "fusion template";
4. the shading aggregation controller (SAC) weighs, per pixel, the background slot (global
   cross-attention times the background mask), the instance slots and the template by a
   softmax over slots of learnt maps (1x1 convolutions and CBAM over 30 slot channels).

This module imports torch at import time: only the `migc` plugin's `load` imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HEADS = 8
"""Heads of the enhancement and layout attention (`MIGC(C, heads=8)`, migc_arch.py@effd6cc)."""

FOURIER_TEMPERATURE = 100.0
"""`FourierEmbedder(temperature=100)`, migc_arch.py@effd6cc."""

NAIVE_INSTANCE_WEIGHT = 10.0
"""Instance weight of the naive fuser (`guidance_mask * 10`, migc_arch.py@effd6cc)."""


def fourier_box_embedding(boxes: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """sin and cos of `boxes * f_k`, f_k = 100 ** (k / num_freqs), grouped per frequency:
    [sin(f_0 b), cos(f_0 b), sin(f_1 b), ...], each block of the 4 box coordinates."""
    freqs = FOURIER_TEMPERATURE ** (torch.arange(num_freqs, dtype=torch.float32) / num_freqs)
    angles = boxes.float()[..., None, :] * freqs.to(boxes.device)[:, None]  # (..., F, 4)
    pairs = torch.stack([angles.sin(), angles.cos()], dim=-2)  # (..., F, 2, 4)
    return pairs.flatten(-3).to(boxes.dtype)


class BoxTokenNet(nn.Module):
    """Box -> one context token: Fourier embedding, then Linear-SiLU-Linear-SiLU-Linear
    (reference `PositionNet`)."""

    def __init__(self, fourier_dim: int, hidden: int, out_dim: int):
        super().__init__()
        if fourier_dim % 8:
            raise ValueError(f"Fourier width {fourier_dim} is not 2 (sin, cos) x 4 (box) x frequencies")
        self.num_freqs = fourier_dim // 8
        self.linears_position = nn.Sequential(
            nn.Linear(fourier_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out_dim)
        )

    def forward(self, boxes: torch.Tensor) -> torch.Tensor:
        return self.linears_position(fourier_box_embedding(boxes, self.num_freqs))


class MultiHeadAttention(nn.Module):
    """q, k, v projections without bias and an output projection (`to_out.0`), scaled dot
    product attention; `allowed` (L_q, L_k) bool restricts which pairs may attend."""

    def __init__(self, query_dim: int, context_dim: int, heads: int = HEADS):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(query_dim, query_dim, bias=False)
        self.to_k = nn.Linear(context_dim, query_dim, bias=False)
        self.to_v = nn.Linear(context_dim, query_dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(query_dim, query_dim)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                allowed: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, L, d)

        q, k, v = split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.to_out[0](out.transpose(1, 2).flatten(-2))


def region_pairs(regions: torch.Tensor) -> torch.Tensor:
    """(R, HW) region weights -> (HW, HW) bool: tokens i and j share a region (some r with
    w_r(i) * w_r(j) != 0), the layout attention's allowed pairs."""
    return (regions.T.float() @ regions.float()) != 0


class ChannelGate(nn.Module):
    """CBAM channel attention: sigmoid(MLP(avg pool) + MLP(max pool)) per channel."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(channels, channels // reduction), nn.ReLU(), nn.Linear(channels // reduction, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.mlp(x.mean(dim=(2, 3), keepdim=True)) + self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(gate)[:, :, None, None]


class _SpatialConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=False)


class SpatialGate(nn.Module):
    """CBAM spatial attention: a 7x7 convolution of the channel max and mean, sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = _SpatialConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial.conv(pooled))


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


def shade(slots: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel softmax over slots of `logits` (S, HW), the weighted sum of `slots` (S, HW, C)."""
    return (slots * logits.softmax(dim=0)[..., None]).sum(dim=0)


class ShadingAggregation(nn.Module):
    """SAC: a logit map per slot from [slot features, slot mask], then CBAM across a fixed
    number of slot channels (background, instances padded with the null slot's map in a
    random order, template), softmax over the real slots."""

    def __init__(self, channels: int, slots: int = 30):
        super().__init__()
        self.slots = slots
        self.conv1 = nn.Conv2d(channels + 1, channels, 1)
        self.cbam1 = CBAM(channels)
        self.conv2 = nn.Conv2d(channels, 1, 1)
        self.cbam2 = CBAM(slots, reduction=1)

    @property
    def max_instances(self) -> int:
        return self.slots - 2

    def slot_logits(self, x: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """x (S, HW, C) = [background, instances..., template], masks (S, h, w) -> logits (S, HW)."""
        count, hw, channels = x.shape
        h, w = masks.shape[-2:]
        n_inst = count - 2
        if n_inst > self.max_instances:
            raise ValueError(f"{n_inst} instances, but the controller has {self.max_instances} instance slots")
        # A null slot (zero features, zero mask) gives the map that pads the unused instance slots.
        feats = torch.cat([x, torch.zeros_like(x[:1])])
        mask = torch.cat([masks.reshape(count, hw, 1), torch.zeros_like(masks[:1]).reshape(1, hw, 1)])
        maps = torch.cat([feats, mask.to(feats.dtype)], dim=-1).reshape(count + 1, h, w, channels + 1)
        maps = self.conv2(self.cbam1(self.conv1(maps.permute(0, 3, 1, 2))))[:, 0]  # (S+1, h, w)
        null = maps[-1:].expand(self.max_instances - n_inst, h, w)
        instance_slots = torch.cat([maps[1:n_inst + 1], null])
        # Trained with instances in random slots: the reference draws a fresh order per call.
        order = torch.randperm(self.max_instances, generator=generator).to(x.device)
        stacked = torch.cat([maps[:1], instance_slots[order], maps[n_inst + 1:n_inst + 2]])
        stacked = self.cbam2(stacked[None])[0]
        instances = stacked[1:-1][torch.argsort(order)][:n_inst]
        return torch.cat([stacked[:1], instances, stacked[-1:]]).reshape(count, hw)

    def forward(self, x: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return shade(x, self.slot_logits(x, masks, generator))


@dataclass
class InstanceInputs:
    """One request's instances at latent resolution, as the controller consumes them."""

    masks: torch.Tensor
    """(N, h, w) box masks, pixel boxes bilinearly resized to the latent grid."""
    background: torch.Tensor
    """(1, h, w) 1 - union of the pixel boxes, resized the same way."""
    boxes: torch.Tensor
    """(N, 4) normalised boxes in the reference's [x0, x1, y0, y1] order."""
    pooled: torch.Tensor
    """(N, D) pooled CLIP embedding of each (augmented) instance phrase."""
    image_size: tuple[int, int]
    """(height, width) of the image in pixels."""
    generator: torch.Generator | None = None
    """Draws the SAC's slot orders (CPU)."""


def layer_size(image_size: tuple[int, int], tokens: int) -> tuple[int, int]:
    """(h, w) of a layer with `tokens` image tokens, by the reference's integer arithmetic."""
    height, width = image_size
    down = int(math.sqrt(height * width // tokens))
    return height // down, width // down


def resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]


class MIGCLayer(nn.Module):
    """The MIGC controller of one cross-attention layer (reference `MIGC`)."""

    def __init__(self, channels: int, context_dim: int, box_hidden: int = 512, fourier_dim: int = 64,
                 slots: int = 30):
        super().__init__()
        self.ea = MultiHeadAttention(channels, context_dim)
        self.la = MultiHeadAttention(channels, channels)
        self.norm = nn.LayerNorm(channels)
        self.sac = ShadingAggregation(channels, slots)
        self.pos_net = BoxTokenNet(fourier_dim, box_hidden, context_dim)

    def forward(self, ca: torch.Tensor, tokens: torch.Tensor, inst: InstanceInputs) -> torch.Tensor:
        """ca (1+N, HW, C): cross-attention with [global, phrases]; tokens (HW, C): the layer's
        input image tokens. Returns the layer's conditional output (HW, C)."""
        n_inst, hw = inst.masks.shape[0], tokens.shape[0]
        size = layer_size(inst.image_size, hw)
        masks = resize(inst.masks, size).to(ca.dtype)
        background = resize(inst.background, size).to(ca.dtype)
        inside = masks.reshape(n_inst, hw, 1)

        box_tokens = self.pos_net(inst.boxes.to(ca.dtype)[:, None, :])  # (N, 1, D)
        context = torch.cat([inst.pooled.to(ca.dtype)[:, None, :], box_tokens], dim=1)  # (N, 2, D)
        enhanced = self.ea(self.norm(tokens).expand(n_inst, hw, -1), context) * inside
        instances = ca[1:] * inside + enhanced

        regions = torch.cat([masks, background]).reshape(n_inst + 1, hw)
        template = self.la(tokens[None], allowed=region_pairs(regions))  # (1, HW, C)
        back = ca[:1] * background.reshape(1, hw, 1)

        slots = torch.cat([back, instances, template])
        slot_masks = torch.cat([background, masks, torch.ones_like(background)])
        return self.sac(slots, slot_masks, inst.generator)


def naive_fuse(ca: torch.Tensor, inst: InstanceInputs) -> torch.Tensor:
    """Reference `NaiveFuser`: per-pixel average of [global, phrases] cross-attention with
    weight 1 for the global prompt and 10 x box mask for each phrase."""
    n_inst, hw = inst.masks.shape[0], ca.shape[1]
    masks = resize(inst.masks, layer_size(inst.image_size, hw)).to(ca.dtype).reshape(n_inst, hw, 1)
    weights = torch.cat([torch.ones_like(masks[:1]), masks * NAIVE_INSTANCE_WEIGHT])
    return (ca * weights).sum(dim=0) / (weights.sum(dim=0) + 1e-6)


@dataclass
class MigcState:
    """What the processors read at each UNet call; the sampling loop sets `step`."""

    migc_steps: int
    naive_fuser_steps: int
    step: int = 0
    instances: InstanceInputs | None = None

    def mode(self, controlled: bool) -> str:
        """'migc', 'naive' or 'plain' for a layer (with or without a controller) at this step.

        As MIGCProcessor: MIGC while step <= MIGCsteps (the comparison is inclusive), else the
        naive fuser while step <= NaiveFuserSteps, else plain cross-attention; layouts without
        instances always plain."""
        if self.instances is None or self.instances.masks.shape[0] == 0:
            return "plain"
        if controlled and self.step <= self.migc_steps:
            return "migc"
        if self.step <= self.naive_fuser_steps:
            return "naive"
        return "plain"


class MigcCrossAttnProcessor:
    """Cross-attention processor of one UNet layer. The text context is ordered
    [negative (with guidance), global, phrase_1..phrase_N] while the latent batch is
    [negative branch (with guidance), conditional branch]: plain layers use the first rows,
    controlled ones give the conditional branch the instance phrases too."""

    def __init__(self, state: MigcState, controller: MIGCLayer | None = None):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.state = state
        self.controller = controller
        self.base = AttnProcessor2_0()

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        if encoder_hidden_states is None:  # not a cross-attention: nothing to control
            return self.base(attn, hidden_states, None, attention_mask, temb)
        rows = hidden_states.shape[0]
        mode = self.state.mode(self.controller is not None)
        if mode == "plain":
            return self.base(attn, hidden_states, encoder_hidden_states[:rows], attention_mask, temb)
        inst = self.state.instances
        assert inst is not None
        if rows != 1 and rows != 2:
            raise ValueError(f"one image per call (latent batch 1 or 2 with guidance), got {rows}")
        n_inst = inst.masks.shape[0]
        cond = hidden_states[-1:]
        queries = torch.cat([hidden_states[:-1], cond.expand(n_inst + 1, -1, -1)])
        out = self.base(attn, queries, encoder_hidden_states, attention_mask, temb)
        uncond, ca = out[: rows - 1], out[rows - 1:]
        if mode == "migc":
            assert self.controller is not None
            fused = self.controller(ca, cond[0], inst)
        else:
            fused = naive_fuse(ca, inst)
        return torch.cat([uncond, fused[None]])
