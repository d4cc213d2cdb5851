"""The ROICtrl adapter (Gu et al., CVPR 2025) on a diffusers Stable Diffusion 1.x UNet.

Reference: showlab/ROICtrl@6866543, `roictrl/models/stable_diffusion_models/roictrl.py`
(`ROIFuser`, `FuseWeightGenerator`, `ChannelGate`, `BoundingboxProjection`) and `attention.py`
(`BasicTransformerBlock` with `attention_type="roictrl"`). Module and parameter names are the
reference's, so the released state dict (`...transformer_blocks.0.roifuser.*`, `position_net.*`)
loads onto the UNet unchanged.

In every transformer block, after the frozen cross-attention of the image tokens with the
global prompt, the block's `roifuser`:
1. ROI-Aligns each instance's box out of the cross-attention's (normed) input;
2. attends each ROI to its own caption through that same frozen cross-attention, then a
   learned self-attention over the ROI (tanh gate `alpha_roi_self_attn`, 0 at initialisation);
3. ROI-Unpools every ROI back to the feature map and fuses the global output with the instance
   maps by a per-pixel softmax over 31 slots (global + 30 instances), the logits from a 1x1
   convolution and a channel gate across the slots, with the instance slots in a random order
   (`torch.randperm(30)` per call, drawn here from the request's generator);
4. adds a learned self-attention over the image tokens and the 30 box tokens
   (`position_net`: Fourier features of the boxes through an MLP; tanh gate
   `alpha_coord_self_attn`) and a learned feed-forward (tanh gate `alpha_dense`).

Torch is imported at module import: only the `roictrl` generator's `load` imports this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.attention import BasicTransformerBlock, FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from eligen_bench.generators.roictrl.roi_ops import boxes_in_pixels, roi_align, roi_unpool

NUM_ROIS = 30
"""`FuseWeightGenerator(in_channels=query_dim, num_rois=30)` (roictrl.py@6866543) and `max_rois=30`
of the demo's `encode_roi_input`: instance slots of every fuser."""

FOURIER_FREQS = 8
"""`BoundingboxProjection(fourier_freqs=8)` (roictrl.py@6866543): 8 x 2 (sin, cos) x 4 (xyxy) = 64."""

POSITION_HIDDEN = 512
"""Width of `BoundingboxProjection.linears` (roictrl.py@6866543, fixed)."""

ADAPTER_DROPOUT = 0.2
"""Dropout of the adapter's attentions and feed-forward (roictrl.py@6866543); inactive in eval mode."""


def fourier_box_embedding(boxes: torch.Tensor, num_freqs: int = FOURIER_FREQS) -> torch.Tensor:
    """(B, N, 4) boxes -> (B, N, num_freqs * 8): per frequency f_k = 100^(k / F), sin of the four
    coordinates then their cos, computed in the boxes' dtype as the reference does
    (`get_fourier_embeds_from_boundingbox`, roictrl.py@6866543)."""
    batch, count = boxes.shape[:2]
    freqs = 100 ** (torch.arange(num_freqs) / num_freqs)
    angles = freqs[None, None, None].to(device=boxes.device, dtype=boxes.dtype) * boxes.unsqueeze(-1)
    pairs = torch.stack((angles.sin(), angles.cos()), dim=-1)  # (B, N, 4, F, 2)
    return pairs.permute(0, 1, 3, 4, 2).reshape(batch, count, num_freqs * 2 * 4)


class BoundingboxProjection(nn.Module):
    """`position_net`: box -> one 64-wide token, a learned null feature for empty slots."""

    def __init__(self, fourier_freqs: int = FOURIER_FREQS):
        super().__init__()
        self.fourier_freqs = fourier_freqs
        dim = fourier_freqs * 2 * 4
        self.linears = nn.Sequential(nn.Linear(dim, POSITION_HIDDEN), nn.SiLU(),
                                     nn.Linear(POSITION_HIDDEN, POSITION_HIDDEN), nn.SiLU(),
                                     nn.Linear(POSITION_HIDDEN, dim))
        self.null_position_feature = nn.Parameter(torch.zeros(dim))

    def forward(self, boxes: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        masks = masks.unsqueeze(-1)
        embedding = fourier_box_embedding(boxes, self.fourier_freqs)
        null = self.null_position_feature.view(1, 1, -1)
        return self.linears(embedding * masks + (1 - masks) * null)


class ChannelGate(nn.Module):
    """Channel attention over the 31 slot logit maps: x * sigmoid(MLP(spatial max)).

    The reference also runs the MLP on an average pool, but multiplies by the sigmoid of the
    last pool's output only (`scale = F.sigmoid(channel_att_raw)`, the max pool): the average
    never reaches the result, so it is not computed here.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.mlp(x.amax(dim=(2, 3))))
        return x * scale[:, :, None, None]


class FuseWeightGenerator(nn.Module):
    """Per-pixel softmax weights over [global, 30 instance slots] and the weighted sum."""

    def __init__(self, in_channels: int, num_rois: int = NUM_ROIS):
        super().__init__()
        self.channel_reduction = nn.Conv2d(in_channels, 1, kernel_size=1, bias=False)
        self.channel_gate = ChannelGate(num_rois + 1)
        self.num_rois = num_rois

    def forward(self, slots: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """slots (B, 1 + K, C, h, w): the global output then the K used instances' unpooled maps
        (the other 30 - K slots are zero maps in the reference: logit 0, never in the softmax)."""
        batch, used, _, height, width = slots.shape
        present = slots.sum(2) != 0  # the reference's fg_mask: a slot counts where its channel sum is non-zero
        logits = slots.new_zeros(batch, self.num_rois + 1, height, width)
        logits[:, :used] = self.channel_reduction(slots.flatten(0, 1)).view(batch, used, height, width)
        # Trained with instances in random slots: a fresh order per call, as the reference draws it.
        order = torch.randperm(self.num_rois, generator=generator).to(slots.device)
        shuffled = torch.cat([logits[:, :1], logits[:, 1:][:, order]], dim=1)
        gated = self.channel_gate(shuffled)
        logits = torch.cat([gated[:, :1], gated[:, 1:][:, torch.argsort(order)]], dim=1)
        mask = torch.zeros_like(logits, dtype=torch.bool)
        mask[:, :used] = present
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        weights = logits.softmax(dim=1)[:, :used].unsqueeze(2)
        return (slots * weights).sum(dim=1)


@dataclass
class RoiControl:
    """One request's instances, as every fuser of the UNet consumes them (batch = CFG halves)."""

    boxes: torch.Tensor
    """(B, K, 4) normalised xyxy boxes of the K instances, in the model dtype."""
    embeddings: torch.Tensor
    """(B, K, L, D) text-encoder tokens of each instance caption (of the negative prompt in the
    unconditional half, as the reference's `encode_roi_input` builds them)."""
    position_tokens: torch.Tensor
    """(B, 30, 64) `position_net` tokens of all 30 slots (empty slots take the null feature)."""
    image_size: tuple[int, int]
    """(height, width) of the image in pixels (the reference's `spatial_size`)."""
    generator: torch.Generator | None = None
    """Draws the slot orders (CPU)."""
    enabled: bool = True
    """False after the scheduled-sampling step: the blocks run plain cross-attention."""


@dataclass
class RoiCtrlState:
    """Holder shared by every fuser of one UNet; the generator sets `control` per request."""

    control: RoiControl | None = None


class ROIFuser(nn.Module):
    """The adapter of one transformer block (reference `ROIFuser`, same parameter names)."""

    def __init__(self, query_dim: int, num_attention_heads: int, attention_head_dim: int, state: RoiCtrlState):
        super().__init__()
        heads, head_dim = num_attention_heads, attention_head_dim
        self.norm1 = nn.LayerNorm(query_dim)
        self.roi_self_attn = Attention(query_dim=query_dim, heads=heads, dim_head=head_dim, dropout=ADAPTER_DROPOUT)
        self.alpha_roi_self_attn = nn.Parameter(torch.tensor(0.0))
        self.roiattn_fuser = FuseWeightGenerator(query_dim, NUM_ROIS)
        self.norm2 = nn.LayerNorm(query_dim)
        self.context_proj = nn.Linear(FOURIER_FREQS * 2 * 4, query_dim)
        self.coord_self_attn = Attention(query_dim=query_dim, heads=heads, dim_head=head_dim, dropout=ADAPTER_DROPOUT)
        self.alpha_coord_self_attn = nn.Parameter(torch.tensor(0.0))
        self.norm3 = nn.LayerNorm(query_dim)
        self.ff = FeedForward(query_dim, activation_fn="geglu", dropout=ADAPTER_DROPOUT)
        self.alpha_dense = nn.Parameter(torch.tensor(0.0))
        self.state = state

    def forward(self, normed: torch.Tensor, hidden: torch.Tensor, attn_output: torch.Tensor,
                cross_attention: Attention, control: RoiControl) -> torch.Tensor:
        """The block's residual stream after its cross-attention step (reference `ROIFuser.forward`)."""
        batch, tokens, channels = normed.shape
        height, width = control.image_size
        downsample = int(math.sqrt(height * width / tokens))
        grid = (int(height * (1 / downsample)), int(width * (1 / downsample)))
        global_map = attn_output.transpose(1, 2).reshape(batch, 1, channels, *grid)
        slots = global_map
        if control.boxes.shape[1]:
            instances = self._instance_maps(normed, cross_attention, control, downsample, grid)
            slots = torch.cat([global_map, instances], dim=1)
        fused = self.roiattn_fuser(slots, control.generator)
        hidden = hidden + fused.flatten(2).transpose(1, 2)
        position = self.context_proj(control.position_tokens)
        joint = self.coord_self_attn(self.norm2(torch.cat([hidden, position], dim=1)))[:, :tokens]
        hidden = hidden + self.alpha_coord_self_attn.tanh() * joint
        return hidden + self.alpha_dense.tanh() * self.ff(self.norm3(hidden))

    def _instance_maps(self, normed: torch.Tensor, cross_attention: Attention, control: RoiControl,
                       downsample: int, grid: tuple[int, int]) -> torch.Tensor:
        """(B, K, C, h, w): each instance's ROI attended to its caption, unpooled to the grid."""
        batch, _, channels = normed.shape
        count = control.boxes.shape[1]
        features = normed.transpose(1, 2).reshape(batch, channels, *grid)
        pooled = roi_align(features, boxes_in_pixels(control.boxes, control.image_size), downsample)
        roi_size = pooled.shape[-2:]
        roi_tokens = pooled.flatten(0, 1).flatten(2).transpose(1, 2)  # (B*K, h_r*w_r, C)
        out = cross_attention(roi_tokens, encoder_hidden_states=control.embeddings.flatten(0, 1))
        out = out + self.alpha_roi_self_attn.tanh() * self.roi_self_attn(self.norm1(out))
        roi_maps = out.transpose(1, 2).reshape(batch * count, channels, *roi_size)
        pixel_boxes = boxes_in_pixels(control.boxes.to(roi_maps.dtype), control.image_size).flatten(0, 1)
        unpooled = roi_unpool(roi_maps, pixel_boxes, 1 / downsample, grid)
        return unpooled.unflatten(0, (batch, count))


class RoiCtrlTransformerBlock(BasicTransformerBlock):
    """diffusers' `BasicTransformerBlock` whose cross-attention step goes through its `roifuser`
    while a request's instances are set (the reference's `attention.py`, `roictrl_kwargs` branch);
    otherwise the stock forward. Installed by swapping the class of the UNet's own blocks, so
    every existing parameter keeps its name and the adapter's sit beside them."""

    roifuser: ROIFuser

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                encoder_hidden_states: torch.Tensor | None = None, encoder_attention_mask: torch.Tensor | None = None,
                timestep: Any = None, cross_attention_kwargs: dict[str, Any] | None = None,
                class_labels: Any = None, added_cond_kwargs: dict[str, Any] | None = None) -> torch.Tensor:
        control = self.roifuser.state.control
        if control is None or not control.enabled:
            return super().forward(hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask,
                                   timestep, cross_attention_kwargs, class_labels, added_cond_kwargs)
        kwargs = dict(cross_attention_kwargs or {})
        attn_output = self.attn1(self.norm1(hidden_states), attention_mask=attention_mask, **kwargs)
        hidden_states = attn_output + hidden_states
        normed = self.norm2(hidden_states)
        attn_output = self.attn2(normed, encoder_hidden_states=encoder_hidden_states,
                                 attention_mask=encoder_attention_mask, **kwargs)
        hidden_states = self.roifuser(normed, hidden_states, attn_output, self.attn2, control)
        return self.ff(self.norm3(hidden_states)) + hidden_states


def supported_block(block: BasicTransformerBlock) -> str | None:
    """Why a block cannot take the adapter (None when it can): the reference's branch is the
    Stable Diffusion 1.x block (layer norm, self- then cross-attention, no chunking)."""
    if block.norm_type != "layer_norm":
        return f"norm_type {block.norm_type!r}"
    if block.attn2 is None or block.only_cross_attention or block.pos_embed is not None:
        return "no separate cross-attention"
    if block._chunk_size is not None:
        return "chunked feed-forward"
    return None


def install_adapter(unet: Any) -> RoiCtrlState:
    """Add `position_net` and a `roifuser` in every transformer block of `unet` (random weights,
    to be loaded); returns the state shared by the fusers. Raises ValueError naming a block the
    reference's adapter does not fit."""
    state = RoiCtrlState()
    for name, module in unet.named_modules():
        if not isinstance(module, BasicTransformerBlock):
            continue
        problem = supported_block(module)
        if problem:
            raise ValueError(f"{name}: {problem}")
        weight = module.attn2.to_q.weight
        module.__class__ = RoiCtrlTransformerBlock
        module.roifuser = ROIFuser(module.attn2.query_dim, module.attn2.heads,
                                   module.attn2.inner_dim // module.attn2.heads, state).to(weight.device, weight.dtype)
    weight = unet.conv_in.weight
    unet.position_net = BoundingboxProjection().to(weight.device, weight.dtype)
    return state


def instance_control(unet: Any, boxes: torch.Tensor, embeddings: torch.Tensor, image_size: tuple[int, int],
                     generator: torch.Generator | None) -> RoiControl:
    """The control of one request: boxes (B, K, 4) and caption tokens (B, K, L, D) in the model
    dtype, K <= 30; the position tokens of all 30 slots (empty ones masked to the null feature)."""
    batch, count = boxes.shape[:2]
    if count > NUM_ROIS:
        raise ValueError(f"{count} instances, but the adapter has {NUM_ROIS} slots")
    slots = boxes.new_zeros(batch, NUM_ROIS, 4)
    slots[:, :count] = boxes
    masks = boxes.new_zeros(batch, NUM_ROIS)
    masks[:, :count] = 1
    return RoiControl(boxes=boxes, embeddings=embeddings, position_tokens=unet.position_net(slots, masks),
                      image_size=image_size, generator=generator)


def adapter_keys(unet: Any) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the adapter's parameters in the UNet's state dict (the released file's)."""
    return {k: tuple(v.shape) for k, v in unet.state_dict().items()
            if ".roifuser." in k or k.startswith("position_net.")}
