"""ROI-Align and ROI-Unpool, ROICtrl's two region operations, in torch.

Reference: showlab/ROICtrl@6866543, `roictrl/models/stable_diffusion_models/roictrl.py`
(`roi_align`, `roi_unpooling`) and the CUDA extension it compiles at import,
`roictrl/cuda_extension/roiunpool.cu` (`roi_unpool_forward_kernel_impl`, `bilinear_interpolate`).

ROI-Align is torchvision's `roi_align` called as the reference calls it (boxes in pixels of the
image, `spatial_scale = 1 / downsample`, `sampling_ratio=2`, `aligned=True`).

ROI-Unpool pastes each ROI's pooled map back onto the feature map. For an output pixel (h, w)
the kernel takes the ROI's feature-map extent
    start = int(ceil(box * spatial_scale - 0.5)), end likewise (`aligned`), size = end - start,
and, inside it, the pooled-grid position without a half-pixel offset
    y = ((h - start_h) / size_h) * pooled_h,   x likewise,
then bilinear interpolation between floor and ceil of (y, x) where a corner outside the pooled
grid weighs 0 (so the last partial row and column of a ROI larger than its grid get no value),
and the value 0 wherever the four weights sum below 1 - 1e-5. Every step runs in the features'
dtype, one rounding per operation as the kernel's `T` arithmetic does, so float16 gives the
reference's float16 values (including its zeros where the rounded weights sum below 1).
"""

from __future__ import annotations

import torch

ROI_SIZE_BY_DOWNSAMPLE = {8: (25, 25), 16: (19, 19), 32: (13, 13), 64: (7, 7)}
"""`roi_resolution_multi_scale` (roictrl.py@6866543): pooled ROI size per feature-map downsampling."""

ROI_ALIGN_SAMPLING_RATIO = 2
"""`torchvision.ops.roi_align(..., sampling_ratio=2, aligned=True)` (roictrl.py@6866543 `roi_align`)."""

WEIGHT_SUM_TOLERANCE = 1e-5
"""`if (1 - (w1 + w2 + w3 + w4) < 0.00001)` (roiunpool.cu@6866543 `bilinear_interpolate`)."""


def boxes_in_pixels(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Normalised xyxy boxes (..., 4) -> pixel xyxy in the boxes' dtype, as the reference scales
    them (`rois * torch.tensor([W, H, W, H], dtype=rois.dtype)`)."""
    height, width = image_size
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    return boxes * scale


def roi_align(features: torch.Tensor, pixel_boxes: torch.Tensor, downsample: int) -> torch.Tensor:
    """(N, C, h, w) features, (N, K, 4) pixel boxes -> (N, K, C, *ROI size) pooled ROI maps."""
    import torchvision

    n, k = pixel_boxes.shape[:2]
    rois = list(pixel_boxes.unbind(0))
    pooled = torchvision.ops.roi_align(features, rois, output_size=ROI_SIZE_BY_DOWNSAMPLE[downsample],
                                       spatial_scale=1 / downsample, sampling_ratio=ROI_ALIGN_SAMPLING_RATIO,
                                       aligned=True)
    return pooled.unflatten(0, (n, k))


def roi_unpool(roi_features: torch.Tensor, pixel_boxes: torch.Tensor, spatial_scale: float,
               size: tuple[int, int], aligned: bool = True) -> torch.Tensor:
    """(K, C, ph, pw) pooled maps, (K, 4) pixel boxes -> (K, C, H, W) maps, zero outside each ROI."""
    k, channels, pooled_h, pooled_w = roi_features.shape
    height, width = size
    dtype, device = roi_features.dtype, roi_features.device
    boxes = pixel_boxes.to(dtype)
    rows = _axis(boxes[:, 1], boxes[:, 3], height, pooled_h, spatial_scale, aligned)
    cols = _axis(boxes[:, 0], boxes[:, 2], width, pooled_w, spatial_scale, aligned)
    (y_low, y_high, ly, hy, y_in), (x_low, x_high, lx, hx, x_in) = rows, cols

    def corner(y_idx: torch.Tensor, x_idx: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        legal = (y_idx < pooled_h)[:, :, None] & (x_idx < pooled_w)[:, None, :]
        weight = torch.where(legal, wy[:, :, None] * wx[:, None, :], torch.zeros((), dtype=dtype, device=device))
        index = (y_idx.clamp(max=pooled_h - 1)[:, :, None] * pooled_w + x_idx.clamp(max=pooled_w - 1)[:, None, :])
        value = roi_features.flatten(2).gather(2, index.flatten(1)[:, None].expand(k, channels, -1))
        value = torch.where(legal.flatten(1)[:, None], value, torch.zeros((), dtype=dtype, device=device))
        return weight, value.unflatten(2, (height, width))

    w1, v1 = corner(y_low, x_low, hy, hx)
    w2, v2 = corner(y_low, x_high, hy, lx)
    w3, v3 = corner(y_high, x_low, ly, hx)
    w4, v4 = corner(y_high, x_high, ly, lx)
    # The kernel's order of operations, each result rounded to the features' dtype.
    weight_sum = w1 + w2 + w3 + w4
    valid = (1 - weight_sum).double() < WEIGHT_SUM_TOLERANCE
    value = w1[:, None] * v1 + w2[:, None] * v2 + w3[:, None] * v3 + w4[:, None] * v4
    keep = (valid & y_in[:, :, None] & x_in[:, None, :])[:, None]
    return torch.where(keep, value, torch.zeros((), dtype=dtype, device=device))


def _axis(low: torch.Tensor, high: torch.Tensor, length: int, pooled: int, spatial_scale: float,
          aligned: bool) -> tuple[torch.Tensor, ...]:
    """Per ROI and output index along one axis: floor and ceil of the pooled position, their
    weights (frac, 1 - frac) and whether the index lies inside the ROI."""
    dtype, device = low.dtype, low.device
    scale = torch.tensor(spatial_scale, dtype=dtype, device=device)
    offset = torch.tensor(0.5 if aligned else 0.0, dtype=dtype, device=device)
    start = torch.ceil(low * scale - offset)
    end = torch.ceil(high * scale - offset)
    extent = end - start
    if not aligned:  # the kernel forces malformed ROIs to 1x1 only when not aligned
        extent = extent.clamp(min=1)
    index = torch.arange(length, device=device)
    inside = (index[None] >= start[:, None]) & (index[None] < end[:, None])
    position = ((index.to(dtype)[None] - start[:, None]) / extent[:, None]) * pooled
    # Outside the ROI the position is meaningless (and may divide by a zero extent): park it at 0.
    position = torch.where(inside, position, torch.zeros((), dtype=dtype, device=device))
    low_idx = position.floor()
    high_idx = position.ceil()
    frac = position - low_idx
    return low_idx.long(), high_idx.long(), frac, 1 - frac, inside
