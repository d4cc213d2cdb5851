"""UniFusion, InstanceDiffusion's grounding tokenizer (the checkpoint's `position_net.*`).

Each instance becomes one token per location format (box, point, scribble, polygon), each the
output of its own MLP on [CLIP phrase feature, Fourier embedding of the coordinates], plus 64
tokens from a ConvNeXt over the 30 instance masks stacked as channels. Empty slots and dropped
formats take learnable null features. Module and parameter names follow the reference
(frank-xwang/InstanceDiffusion@722900e, ldm/modules/diffusionmodules/text_grounding_net.py and
convnext.py), so the released state dict loads unchanged. The reference builds its ConvNeXt with
ImageNet weights downloaded at construction; here the architecture is built empty (offline) and
the InstanceDiffusion checkpoint, which holds the trained backbone, supplies every weight.

Sizes are read from a state dict (`UniFusionConfig.from_state_dict`), so the same module serves
the released checkpoint and the tiny test one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MAX_INSTANCES = 30
"""Slots of the grounding input (`max_objs = 30`, eval_local.py@722900e; in_conv takes 30 channels)."""

FOURIER_FREQS = 16
"""`fourier_freqs = 16` for boxes/points and polygons (text_grounding_net.py@722900e, UniFusion.__init__)."""

FOURIER_TEMPERATURE = 100
"""`FourierEmbedder(num_freqs, temperature=100)` (ldm/modules/diffusionmodules/util.py@722900e)."""

N_SCRIBBLE_POINTS = 20
N_POLYGON_POINTS = 256
"""`n_scribble_points = 20`, `n_polygon_points = 256` (text_grounding_net.py@722900e)."""

SEG_RESIZE = 512
SEG_DOWN_FACTOR = 64
"""`resize_input = 512`, `down_factor = 64`: 8x8 = 64 mask tokens (text_grounding_net.py@722900e)."""


def fourier_embed(x: torch.Tensor, num_freqs: int = FOURIER_FREQS,
                  temperature: float = FOURIER_TEMPERATURE) -> torch.Tensor:
    """[sin(f0 x), cos(f0 x), sin(f1 x), ...] over the last axis, f_k = temperature^(k / num_freqs)."""
    freqs = temperature ** (torch.arange(num_freqs, dtype=torch.float32) / num_freqs)
    args = freqs.to(x.device, x.dtype)[:, None] * x[..., None, :]  # (..., F, D)
    return torch.stack([args.sin(), args.cos()], dim=-2).flatten(-3)  # (..., F * 2 * D)


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (ConvNeXt's downsampling norm)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, 4x MLP with GELU, layer scale, residual (no drop path at test)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtFeatures(nn.Module):
    """ConvNeXt without its classifier head: four stages, 32x downsampling in all."""

    def __init__(self, depths: tuple[int, ...], dims: tuple[int, ...], in_chans: int = 3):
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4),
                             ChannelsFirstLayerNorm(dims[0]))
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(len(dims) - 1):
            self.downsample_layers.append(nn.Sequential(
                ChannelsFirstLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)))
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(depth)]) for depth, dim in zip(depths, dims, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        return x


@dataclass(frozen=True)
class UniFusionConfig:
    """Sizes of a UniFusion module; the released one is (768, 768, 3072, ConvNeXt-T)."""

    in_dim: int = 768
    out_dim: int = 768
    mid_dim: int = 3072
    convnext_depths: tuple[int, ...] = (3, 3, 9, 3)
    convnext_dims: tuple[int, ...] = (96, 192, 384, 768)
    seg_resize: int = SEG_RESIZE
    """Side the mask stack is resized to before the ConvNeXt (smaller only in the tiny model)."""

    @property
    def seg_tokens(self) -> int:
        return (self.seg_resize // SEG_DOWN_FACTOR) ** 2

    @property
    def seg_feature_dim(self) -> int:
        # The reference reshapes the (C, 16, 16) ConvNeXt map into 64 tokens of 4C features.
        side = self.seg_resize // 32
        return self.convnext_dims[-1] * side * side // self.seg_tokens

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], prefix: str = "position_net.") -> UniFusionConfig:
        """Sizes read off the shapes of a `position_net.*` state dict."""
        first = state[f"{prefix}linears_list.0.0.weight"]
        out = state[f"{prefix}linears_list.0.4.weight"]
        dims, depths = [], []
        stage = 0
        while f"{prefix}convnext_tiny_backbone.stages.{stage}.0.gamma" in state:
            dims.append(int(state[f"{prefix}convnext_tiny_backbone.stages.{stage}.0.gamma"].shape[0]))
            depth = 0
            while f"{prefix}convnext_tiny_backbone.stages.{stage}.{depth}.gamma" in state:
                depth += 1
            depths.append(depth)
            stage += 1
        tokens = int(state[f"{prefix}pos_embedding"].shape[1])
        return cls(in_dim=int(state[f"{prefix}null_positive_feature"].shape[0]), out_dim=int(out.shape[0]),
                   mid_dim=int(first.shape[0]), convnext_depths=tuple(depths), convnext_dims=tuple(dims),
                   seg_resize=SEG_DOWN_FACTOR * round(tokens ** 0.5))


def _mlp(in_dim: int, mid_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, mid_dim), nn.SiLU(), nn.Linear(mid_dim, mid_dim), nn.SiLU(),
                         nn.Linear(mid_dim, out_dim))


class UniFusion(nn.Module):
    """Grounding tokens from instance phrases, boxes, points, polygons and masks (inference only).

    `embed` returns the tokens the gated self-attention fusers attend to: 4 x 30 instance tokens
    then 64 mask tokens.
    """

    def __init__(self, config: UniFusionConfig):
        super().__init__()
        self.config = config
        c = config
        box_dim = FOURIER_FREQS * 2 * 4
        point_dim = FOURIER_FREQS * 2 * 2
        scribble_dim = FOURIER_FREQS * 2 * N_SCRIBBLE_POINTS * 2
        polygon_dim = FOURIER_FREQS * 2 * N_POLYGON_POINTS * 2
        self.in_conv = nn.Conv2d(MAX_INSTANCES, 3, 3, 1, 1)
        self.convnext_tiny_backbone = ConvNeXtFeatures(c.convnext_depths, c.convnext_dims)
        self.pos_embedding = nn.Parameter(torch.zeros(1, c.seg_tokens, c.seg_feature_dim))
        # Order of the reference's separate tokenizers: box, point, scribble, polygon, mask.
        self.linears_list = nn.ModuleList([
            _mlp(c.in_dim + box_dim, c.mid_dim, c.out_dim),
            _mlp(c.in_dim + point_dim, c.mid_dim, c.out_dim),
            _mlp(c.in_dim + scribble_dim, c.mid_dim, c.out_dim),
            _mlp(c.in_dim + polygon_dim, c.mid_dim, c.out_dim),
            _mlp(c.seg_feature_dim, c.mid_dim, c.out_dim),
        ])
        self.null_positive_feature = nn.Parameter(torch.zeros(c.in_dim))
        self.null_position_feature = nn.Parameter(torch.zeros(box_dim))
        self.null_point_feature = nn.Parameter(torch.zeros(point_dim))
        self.null_scribble_feature = nn.Parameter(torch.zeros(scribble_dim))
        self.null_polygon_feature = nn.Parameter(torch.zeros(polygon_dim))
        self.null_seg_feature = nn.Parameter(torch.zeros(c.seg_feature_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """The UNet's `gligen` hook: tokens computed once per layout by `embed` pass through
        (they depend on neither the latents nor the timestep)."""
        return tokens

    def embed(self, boxes: torch.Tensor, masks: torch.Tensor, positive_embeddings: torch.Tensor,
              points: torch.Tensor, polygons: torch.Tensor, segs: torch.Tensor | None,
              use_masks: bool) -> torch.Tensor:
        """boxes (B,30,4) xyxy in [0,1], masks (B,30) slot used, positive_embeddings (B,30,in_dim),
        points (B,30,2), polygons (B,30,512), segs (B,30,H,W) or None.

        `use_masks` False is the reference's box configuration (`test_drop_masks: True`,
        configs/test_box.yaml): polygon and mask tokens all take their null features. Scribbles
        are dropped in every test configuration (`test_drop_scribbles: True`), so their tokens are
        always null.
        """
        batch = boxes.shape[0]
        slot = masks.unsqueeze(-1).to(positive_embeddings.dtype)
        text = _fill(positive_embeddings, self.null_positive_feature, slot)
        box = _fill(fourier_embed(boxes), self.null_position_feature, slot)
        point = _fill(fourier_embed(points), self.null_point_feature, slot)
        scribble = self.null_scribble_feature.view(1, 1, -1).expand(batch, boxes.shape[1], -1)
        if use_masks:
            # A slot keeps its polygon token when it has points or is a used slot (the reference's rule).
            poly_slot = ((polygons.sum(-1, keepdim=True) + slot) > 0).to(slot.dtype)
            polygon = _fill(fourier_embed(polygons), self.null_polygon_feature, poly_slot)
        else:
            polygon = self.null_polygon_feature.view(1, 1, -1).expand(batch, boxes.shape[1], -1)
        seg = self._seg_tokens(segs if use_masks else None, batch, text.dtype)
        mlps = self.linears_list
        tokens = [mlps[i](torch.cat([text, emb.to(text.dtype)], dim=-1))
                  for i, emb in enumerate((box, point, scribble, polygon))]
        tokens.append(mlps[4](seg))
        return torch.cat(tokens, dim=1)

    def _seg_tokens(self, segs: torch.Tensor | None, batch: int, dtype: torch.dtype) -> torch.Tensor:
        """64 tokens of the mask stack; a sample without any mask pixel takes the null feature."""
        null = self.null_seg_feature.view(1, 1, -1).to(dtype)
        out = null.expand(batch, self.config.seg_tokens, -1)
        if segs is not None and bool(segs.sum() > 0):  # without any mask pixel every sample is null
            has_seg = (segs.sum(dim=(1, 2, 3)) > 0).to(dtype).view(-1, 1, 1)
            segs = F.interpolate(segs.to(dtype), self.config.seg_resize, mode="nearest")
            feature = self.convnext_tiny_backbone(self.in_conv(segs))
            feature = feature.reshape(batch, -1, self.config.seg_tokens).permute(0, 2, 1)
            out = feature * has_seg + (1 - has_seg) * null
        return out + self.pos_embedding.to(dtype)


def _fill(values: torch.Tensor, null: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """`values` where `keep` is 1, the learnable null feature elsewhere."""
    null = null.view(1, 1, -1).to(values.dtype)
    return values * keep + (1 - keep) * null
