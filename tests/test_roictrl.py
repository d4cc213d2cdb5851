"""ROICtrl: ROI-Unpool and ROI-Align against transcriptions, the slot fuser, the released-checkpoint
loader, tiny runs (offline, CPU).

Reference: showlab/ROICtrl at commit 6866543 (roictrl/cuda_extension/roiunpool.cu,
roictrl/models/stable_diffusion_models/roictrl.py) and torchvision's roi_align CPU kernel. The
transcriptions below restate the reference procedures independently of our modules, in float64
loops, on inputs where a plausible mistake (a half-pixel offset, clamped corners, a missing
weight-sum check, a slot order drawn elsewhere) gives a different answer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from eligen_bench.errors import InputError
from eligen_bench.layout import Entity, Layout

from fixtures import TWO_PETS, request_for, write_small_suite

KEYS_FIXTURE = Path(__file__).with_name("roictrl_sd14_keys.json")

# Pixels [30:33, 30:33] (RGB) of the tiny-profile image of TWO_PETS with seed 1234, recorded from
# this implementation as a regression check (as diffusers' pipeline tests do).
EXPECTED_SLICE = [76, 122, 92, 72, 200, 121, 27, 82, 133, 86, 114, 94, 62, 199, 132, 18, 74, 179, 108, 30, 84, 71,
                  147, 72, 66, 69, 146]


@pytest.fixture(scope="module")
def roictrl():
    from eligen_bench.generators.roictrl.generator import RoiCtrlGenerator

    generator = RoiCtrlGenerator(profile="tiny", device="cpu")
    generator.ensure_loaded()
    yield generator
    generator.close()


# ---- plugin contract ---------------------------------------------------------------------------


def test_registered_with_reference_defaults():
    from eligen_bench.generators.roictrl.generator import RoiCtrlGenerator
    from eligen_bench.registry import generator_class

    assert generator_class("roictrl") is RoiCtrlGenerator
    assert RoiCtrlGenerator.reference.startswith("showlab/ROICtrl@6866543")
    d = RoiCtrlGenerator.defaults
    assert (d["model"], d["adapter"], d["adapter_file"]) == (
        "CompVis/stable-diffusion-v1-4", "guyuchao/ROICtrl", "ROICtrl_sdv14_30K.safetensors")
    assert (d["steps"], d["guidance_scale"], d["scheduled_sampling_beta"], d["width"], d["height"], d["dtype"]) == (
        50, 7.5, 1.0, 512, 512, "auto")
    assert d["negative_prompt"] == "worst quality, low quality, blurry, low resolution, low quality"
    caps = RoiCtrlGenerator.capabilities
    assert caps.boxes and not caps.masks and not caps.inpainting and caps.max_entities == 30


def test_options_are_checked_in_one_line():
    from eligen_bench.generators.roictrl.generator import RoiCtrlGenerator

    with pytest.raises(InputError, match="scheduled_sampling_beta"):
        RoiCtrlGenerator(profile="tiny", scheduled_sampling_beta=1.5)
    with pytest.raises(InputError, match="no such file"):
        RoiCtrlGenerator(profile="full", checkpoint="missing/ROICtrl_sdv14_30K.safetensors")
    with pytest.raises(InputError, match="unknown option"):
        RoiCtrlGenerator(profile="tiny", max_rois=10)
    with pytest.raises(InputError, match="width: must be a multiple of 64"):
        RoiCtrlGenerator(profile="tiny", width=520)


def test_entity_limit_is_enforced_before_any_work():
    from eligen_bench.generators.roictrl.generator import RoiCtrlGenerator

    generator = RoiCtrlGenerator(profile="tiny", device="cpu")
    crowd = Layout("crowd", "a crowd", tuple(Entity(f"person {i}", (0.0, 0.0, 0.5, 0.5)) for i in range(31)))
    with pytest.raises(InputError, match="31 entities, but roictrl supports at most 30"):
        generator.adapt(crowd)
    assert not generator._loaded
    _, notes = generator.adapt(Layout("empty", "a beach", ()))
    assert any("no entities: the adapter is off" in note for note in notes)


# ---- ROI-Unpool against the CUDA kernel's forward ------------------------------------------------


def _kernel_unpool(roi_feat: np.ndarray, rois: np.ndarray, spatial_scale: float, height: int, width: int,
                   aligned: bool = True) -> np.ndarray:
    """float64 transcription of `roi_unpool_forward_kernel_impl` + `bilinear_interpolate`
    (roictrl/cuda_extension/roiunpool.cu@6866543), one output pixel at a time."""
    count, channels, pooled_h, pooled_w = roi_feat.shape
    out = np.zeros((count, channels, height, width))
    offset = 0.5 if aligned else 0.0

    def legal(y: int, x: int) -> bool:
        return 0 <= y < pooled_h and 0 <= x < pooled_w

    for n in range(count):
        start_w, start_h, end_w, end_h = (int(math.ceil(v * spatial_scale - offset)) for v in rois[n])
        feat_w, feat_h = end_w - start_w, end_h - start_h
        if not aligned:
            feat_w, feat_h = max(feat_w, 1), max(feat_h, 1)
        for h in range(height):
            for w in range(width):
                if not (start_h <= h < end_h and start_w <= w < end_w):
                    continue
                y = (h - start_h) / feat_h * pooled_h
                x = (w - start_w) / feat_w * pooled_w
                y_low, x_low, y_high, x_high = int(y), int(x), math.ceil(y), math.ceil(x)
                ly, lx = y - y_low, x - x_low
                hy, hx = 1.0 - ly, 1.0 - lx
                total, value = 0.0, np.zeros(channels)
                for yy, xx, weight in ((y_low, x_low, hy * hx), (y_low, x_high, hy * lx),
                                       (y_high, x_low, ly * hx), (y_high, x_high, ly * lx)):
                    if legal(yy, xx):
                        total += weight
                        value = value + weight * roi_feat[n, :, yy, xx]
                if 1 - total < 1e-5:
                    out[n, :, h, w] = value
    return out


UNPOOL_BOXES = np.array([
    [10.3, 5.7, 50.1, 33.3],  # fractional edges, ROI of 5 x 4 cells under a 5 x 7 grid
    [0.0, 0.0, 96.0, 64.0],  # the whole map: 12 x 8 cells, more than the grid (zero last rows/cols)
    [30.0, 20.0, 80.0, 60.0],  # overlaps the first two
    [40.1, 40.2, 41.0, 44.0],  # tiny: ceil(5.01 - 0.5) = ceil(5.125 - 0.5) = 6, zero width, nothing drawn
    [60.5, 30.2, 96.0, 64.0],  # touches the right and bottom borders
])


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_roi_unpool_matches_the_kernel(dtype, atol):
    from eligen_bench.generators.roictrl.roi_ops import roi_unpool

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(len(UNPOOL_BOXES), 3, 5, 7))
    expected = _kernel_unpool(feats, UNPOOL_BOXES, 1 / 8, 8, 12)
    ours = roi_unpool(torch.tensor(feats, dtype=dtype), torch.tensor(UNPOOL_BOXES, dtype=dtype), 1 / 8, (8, 12))
    np.testing.assert_allclose(ours.double().numpy(), expected, atol=atol, rtol=0)
    # The cases do what they claim: nothing for the tiny box, zeros inside the whole-map ROI where
    # the upper corner falls off the grid, values up to the right and bottom borders.
    assert not expected[3].any()
    assert (expected[1, :, -1] == 0).all() and expected[1, :, -2].any()
    assert expected[4, :, -1, -2].any() and expected[4, :, :3].sum() == 0


def test_roi_unpool_has_no_half_pixel_offset_on_the_grid():
    """An ROI of exactly 2 x 2 cells under a 4 x 4 grid samples pooled rows/cols 0 and 2 (no
    +0.5): the output is the pooled map at those corners, nothing interpolated."""
    from eligen_bench.generators.roictrl.roi_ops import roi_unpool

    pooled = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = roi_unpool(pooled, torch.tensor([[8.0, 8.0, 24.0, 24.0]]), 1 / 8, (4, 4))[0, 0]
    # cells start ceil(1 - 0.5) = 1, end ceil(3 - 0.5) = 3: rows/cols 1 and 2
    expected = torch.zeros(4, 4)
    expected[1:3, 1:3] = torch.tensor([[0.0, 2.0], [8.0, 10.0]])
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_roi_unpool_float16_zeroes_where_rounded_weights_sum_below_one():
    """The kernel computes in the features' type: in float16 the corner weights are rounded, and
    where their float16 sum falls below 1 - 1e-5 the pixel is 0. Our float16 path gives those
    zeros exactly there (worked out below with the kernel's float16 steps), float32 does not."""
    from eligen_bench.generators.roictrl.roi_ops import roi_unpool

    feats = torch.ones(1, 1, 7, 7)
    box = torch.tensor([[0.0, 0.0, 120.0, 120.0]])  # cells ceil(-0.5) = 0 to ceil(15 - 0.5) = 15 under a 7 x 7 grid
    half = roi_unpool(feats.half(), box.half(), 1 / 8, (15, 15))[0, 0].float()
    single = roi_unpool(feats, box, 1 / 8, (15, 15))[0, 0]
    # ((h - start) / extent) * pooled, each step rounded to float16; the fraction and its complement
    pos = (torch.arange(15.0).half() / torch.tensor(15.0).half()) * 7
    hi = pos - pos.floor()
    lo = 1 - hi
    inner = pos.ceil() < 7  # rows/cols whose upper corner is on the grid
    hi = torch.where(inner, hi, torch.zeros((), dtype=torch.half))
    total = lo[:, None] * lo[None, :] + lo[:, None] * hi[None, :] + hi[:, None] * lo[None, :] + hi[:, None] * hi[None, :]
    short = ((1 - total).double() >= 1e-5) & inner[:, None] & inner[None, :]
    assert 0 < int(short.sum()) < int((inner[:, None] & inner[None, :]).sum())
    assert (half[short] == 0).all() and (single[short] > 0.99).all()
    keep = inner[:, None] & inner[None, :] & ~short
    torch.testing.assert_close(half[keep], single[keep], rtol=0, atol=2e-3)


# ---- ROI-Align against torchvision's kernel, as the reference calls it ---------------------------


def _roi_align_aligned(feat: np.ndarray, box: np.ndarray, scale: float, out_h: int, out_w: int,
                       sampling: int = 2) -> np.ndarray:
    """float64 transcription of torchvision's roi_align CPU kernel with aligned=True (a -0.5
    pixel offset), a fixed sampling grid of `sampling` x `sampling` points per bin, averaged."""
    channels, height, width = feat.shape

    def bilinear(y: float, x: float) -> np.ndarray:
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return np.zeros(channels)
        y, x = max(y, 0.0), max(x, 0.0)
        y_low, x_low = int(y), int(x)
        if y_low >= height - 1:
            y_low = y_high = height - 1
            y = float(y_low)
        else:
            y_high = y_low + 1
        if x_low >= width - 1:
            x_low = x_high = width - 1
            x = float(x_low)
        else:
            x_high = x_low + 1
        ly, lx = y - y_low, x - x_low
        hy, hx = 1 - ly, 1 - lx
        return (hy * hx * feat[:, y_low, x_low] + hy * lx * feat[:, y_low, x_high]
                + ly * hx * feat[:, y_high, x_low] + ly * lx * feat[:, y_high, x_high])

    x1, y1, x2, y2 = (v * scale - 0.5 for v in box)
    bin_h, bin_w = (y2 - y1) / out_h, (x2 - x1) / out_w
    out = np.zeros((channels, out_h, out_w))
    for ph in range(out_h):
        for pw in range(out_w):
            acc = np.zeros(channels)
            for iy in range(sampling):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / sampling
                for ix in range(sampling):
                    acc += bilinear(y, x1 + pw * bin_w + (ix + 0.5) * bin_w / sampling)
            out[:, ph, pw] = acc / (sampling * sampling)
    return out


@pytest.mark.parametrize("downsample, roi_size", [(8, 25), (16, 19)])
def test_roi_align_matches_torchvision_kernel_as_called(downsample, roi_size):
    from eligen_bench.generators.roictrl.roi_ops import boxes_in_pixels, roi_align

    image = (96, 128)  # (height, width) in pixels
    grid = (image[0] // downsample, image[1] // downsample)
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(2, 3, *grid))
    boxes = np.array([[[0.1, 0.2, 0.45, 0.9], [0.0, 0.0, 1.0, 1.0]], [[0.62, 0.05, 0.98, 0.33], [0.3, 0.3, 0.31, 0.32]]])
    ours = roi_align(torch.tensor(feats), boxes_in_pixels(torch.tensor(boxes), image), downsample)
    assert ours.shape == (2, 2, 3, roi_size, roi_size)
    for n in range(2):
        for k in range(2):
            pixels = boxes[n, k] * np.array([image[1], image[0], image[1], image[0]])
            expected = _roi_align_aligned(feats[n], pixels, 1 / downsample, roi_size, roi_size)
            np.testing.assert_allclose(ours[n, k].numpy(), expected, atol=1e-12, rtol=0)


# ---- position net, slot fuser ---------------------------------------------------------------------


def test_fourier_box_embedding_hand_values_and_null_slots():
    from eligen_bench.generators.roictrl.adapter import BoundingboxProjection, fourier_box_embedding

    box = torch.tensor([[[0.0, 0.5, 0.25, 1.0]]], dtype=torch.float64)
    out = fourier_box_embedding(box)
    assert out.shape == (1, 1, 64)
    f1 = 100 ** (1 / 8)
    first = [math.sin(v) for v in (0.0, 0.5, 0.25, 1.0)] + [math.cos(v) for v in (0.0, 0.5, 0.25, 1.0)]
    first += [math.sin(f1 * v) for v in (0.0, 0.5, 0.25, 1.0)]
    np.testing.assert_allclose(out[0, 0, :12].numpy(), first, atol=1e-6)  # frequencies are float32, as the reference's
    net = BoundingboxProjection().double()
    with torch.no_grad():
        net.null_position_feature.normal_()
        boxes = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9]]], dtype=torch.float64)
        a = net(boxes, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
        b = net(boxes * 0.5, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
        null = net.linears(net.null_position_feature)
    torch.testing.assert_close(a[0, 1], null)  # an empty slot is its null feature, whatever its box
    torch.testing.assert_close(b[0, 1], null)
    assert not torch.allclose(a[0, 0], b[0, 0])


def _official_fuse(x: torch.Tensor, conv: torch.Tensor, mlp: list[torch.Tensor], perm: torch.Tensor) -> torch.Tensor:
    """Transcription of `FuseWeightGenerator.forward` + `ChannelGate` (roictrl.py@6866543) on the
    dense [global + 30 slot] stack, both pool branches computed as the reference does."""
    w0, b0, w1, b1 = mlp
    fg_mask = x.sum(2) != 0
    fuse = torch.einsum("bnchw,c->bnhw", x, conv)
    glob, roi = fuse[:, :1], fuse[:, 1:]
    gate_in = torch.cat([glob, roi[:, perm]], dim=1)
    raw = None
    for pool in ("avg", "max"):
        pooled = gate_in.sum(dim=(2, 3)) / (gate_in == 0).sum(dim=(2, 3)) if pool == "avg" else gate_in.amax((2, 3))
        raw = torch.relu(pooled @ w0.T + b0) @ w1.T + b1
    gated = gate_in * torch.sigmoid(raw)[:, :, None, None]  # the last pool's (max) output
    glob, roi = gated[:, :1], gated[:, 1:][:, torch.argsort(perm)]
    weight = torch.cat([glob, roi], dim=1)
    weight[~fg_mask] = torch.finfo(weight.dtype).min
    return (x * weight.softmax(dim=1).unsqueeze(2)).sum(1)


def test_slot_fuser_matches_the_reference_transcription():
    from eligen_bench.generators.roictrl.adapter import FuseWeightGenerator

    torch.manual_seed(0)
    fuser = FuseWeightGenerator(6).double()
    batch, used, size = 2, 3, (5, 6)
    slots = torch.randn(batch, 1 + used, 6, *size, dtype=torch.float64)
    slots[:, 1, :, :, 3:] = 0  # an instance map that is zero outside its ROI
    slots[:, 3, :, 2:] = 0
    dense = torch.zeros(batch, 31, 6, *size, dtype=torch.float64)
    dense[:, :1 + used] = slots
    params = [p.detach() for p in (fuser.channel_gate.mlp[0].weight, fuser.channel_gate.mlp[0].bias,
                                   fuser.channel_gate.mlp[2].weight, fuser.channel_gate.mlp[2].bias)]
    with torch.no_grad():
        ours = fuser(slots, torch.Generator().manual_seed(7))
        perm = torch.randperm(30, generator=torch.Generator().manual_seed(7))
        expected = _official_fuse(dense, fuser.channel_reduction.weight.detach().flatten(), params, perm)
        other = _official_fuse(dense, fuser.channel_reduction.weight.detach().flatten(), params, perm.flip(0))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)
    assert not torch.allclose(expected, other)  # the slot order matters: the channel gate mixes slots


def test_slot_orders_come_from_the_request_generator():
    from eligen_bench.generators.roictrl.adapter import FuseWeightGenerator

    torch.manual_seed(0)
    fuser = FuseWeightGenerator(4)
    slots = torch.randn(1, 3, 4, 4, 4)
    with torch.no_grad():
        a = fuser(slots, torch.Generator().manual_seed(1))
        torch.manual_seed(99)  # the global RNG plays no part
        b = fuser(slots, torch.Generator().manual_seed(1))
        c = fuser(slots, torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_block_without_control_is_the_stock_block():
    from diffusers.models.attention import BasicTransformerBlock

    from eligen_bench.generators.roictrl.adapter import RoiCtrlTransformerBlock, install_adapter

    torch.manual_seed(0)
    holder = torch.nn.Module()
    holder.block = BasicTransformerBlock(16, 2, 8, cross_attention_dim=12)
    x, context = torch.randn(1, 16, 16), torch.randn(1, 5, 12)
    with torch.no_grad():
        before = holder.block(x, encoder_hidden_states=context)
        holder.conv_in = torch.nn.Conv2d(1, 1, 1)  # install_adapter reads the model's dtype there
        state = install_adapter(holder)
        assert isinstance(holder.block, RoiCtrlTransformerBlock) and state.control is None
        after = holder.block(x, encoder_hidden_states=context)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


# ---- the released checkpoint's names ------------------------------------------------------------


def _released_state(device: str = "meta") -> dict[str, torch.Tensor]:
    doc = json.loads(KEYS_FIXTURE.read_text())
    assert doc["count"] == len(doc["keys"]) == 487
    return {key: torch.empty(shape, device=device) for key, shape in doc["keys"]}


@pytest.fixture(scope="module")
def sd14_unet():
    from diffusers import UNet2DConditionModel

    from eligen_bench.generators.roictrl.adapter import install_adapter

    with torch.device("meta"):  # SD 1.4's UNet config (diffusers defaults + 768 context), no weights
        unet = UNet2DConditionModel(cross_attention_dim=768)
        install_adapter(unet)
    return unet


def test_released_keys_are_exactly_the_adapter_on_sd14(sd14_unet):
    from eligen_bench.generators.roictrl.adapter import adapter_keys
    from eligen_bench.generators.roictrl.checkpoint import check_keys

    state = _released_state()
    expected = adapter_keys(sd14_unet)
    check_keys(expected, state, where="ROICtrl_sdv14_30K.safetensors")
    assert len(expected) == 487 and sum(math.prod(s) for s in expected.values()) == 249_204_464
    assert sum(1 for k in expected if k.endswith("roifuser.alpha_dense")) == 16  # every transformer block


@pytest.mark.parametrize("change, message", [
    ("drop", "missing keys [mid_block.attentions.0.transformer_blocks.0.roifuser.alpha_dense]"),
    ("extra", "unexpected keys [conv_in.weight]"),
    ("shape", "wrong shapes [position_net.linears.0.weight (512, 32) != (512, 64)]"),
])
def test_mismatched_checkpoint_fails_naming_the_keys(sd14_unet, change, message):
    from eligen_bench.generators.roictrl.adapter import adapter_keys
    from eligen_bench.generators.roictrl.checkpoint import check_keys

    state = _released_state()
    if change == "drop":
        del state["mid_block.attentions.0.transformer_blocks.0.roifuser.alpha_dense"]
    elif change == "extra":
        state["conv_in.weight"] = torch.empty(320, 4, 3, 3, device="meta")
    else:
        state["position_net.linears.0.weight"] = torch.empty(512, 32, device="meta")
    with pytest.raises(InputError) as info:
        check_keys(adapter_keys(sd14_unet), state, where="ROICtrl_sdv14_30K.safetensors")
    text = str(info.value)
    assert "\n" not in text and message in text and text.startswith("ROICtrl_sdv14_30K.safetensors: checkpoint:")


def test_checkpoint_file_errors_are_one_line(tmp_path):
    from eligen_bench.generators.roictrl.checkpoint import read_state_dict

    with pytest.raises(InputError, match="no such file"):
        read_state_dict(tmp_path / "missing.safetensors")
    torch.save({"a": torch.zeros(1)}, tmp_path / "adapter.pth")
    with pytest.raises(InputError, match="not a .safetensors file"):
        read_state_dict(tmp_path / "adapter.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(InputError, match="cannot be read") as info:
        read_state_dict(tmp_path / "junk.safetensors")
    assert "\n" not in str(info.value)


def test_tiny_checkpoint_is_written_in_the_released_format(tmp_path):
    from safetensors.torch import load_file

    from eligen_bench.generators.roictrl.tiny import build_tiny_pipeline

    path = build_tiny_pipeline(tmp_path)
    state = load_file(str(path))
    released = {k.split("transformer_blocks.0.")[-1] for k in _released_state()}
    assert {k.split("transformer_blocks.0.")[-1] for k in state} == released  # same names per block and position net
    assert all(float(v) == 0.5 for k, v in state.items() if k.rsplit(".", 1)[-1].startswith("alpha_"))


# ---- tiny model runs -----------------------------------------------------------------------------


def test_tiny_image_matches_recorded_slice_and_is_deterministic(roictrl):
    image = roictrl.generate([request_for(roictrl, TWO_PETS)])[0]
    pixels = np.asarray(image).astype(np.int16)
    assert image.size == (64, 64) and image.mode == "RGB"
    np.testing.assert_allclose(pixels[30:33, 30:33].reshape(-1), EXPECTED_SLICE, atol=2)
    again = np.asarray(roictrl.generate([request_for(roictrl, TWO_PETS)])[0]).astype(np.int16)
    other = np.asarray(roictrl.generate([request_for(roictrl, TWO_PETS, seed=2)])[0]).astype(np.int16)
    assert np.array_equal(pixels, again) and np.abs(pixels - other).mean() > 1.0
    assert any("randperm(30)" in note for note in roictrl.load_notes)


def test_adapter_off_or_no_entities_is_plain_stable_diffusion(roictrl):
    """`scheduled_sampling_beta=0` (no step with the adapter) and an empty layout both give the
    diffusers StableDiffusionPipeline latent of the same parts, scheduler and noise; with the
    adapter on, the same noise gives another latent."""
    from diffusers import StableDiffusionPipeline

    parts, settings = roictrl._parts, roictrl.settings
    empty = Layout("empty", TWO_PETS.prompt, (), 512, 512)
    with torch.no_grad():
        controlled = roictrl.denoise(TWO_PETS, torch.Generator().manual_seed(9))
        roictrl.settings = {**settings, "scheduled_sampling_beta": 0.0}
        try:
            ours = [roictrl.denoise(layout, torch.Generator().manual_seed(9)) for layout in (TWO_PETS, empty)]
        finally:
            roictrl.settings = settings
        pipe = StableDiffusionPipeline(vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"],
                                       unet=parts["unet"], scheduler=parts["scheduler"], safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(9))
        plain = pipe(TWO_PETS.prompt, negative_prompt=settings["negative_prompt"], latents=noise,
                     num_inference_steps=settings["steps"], guidance_scale=settings["guidance_scale"],
                     height=64, width=64, output_type="latent").images
    for latent in ours:
        torch.testing.assert_close(latent, plain, atol=1e-5, rtol=1e-5)
    assert (controlled - plain).abs().max() > 1e-2


@pytest.mark.slow
def test_cli_tiny_run_records_the_notes(tmp_path):
    from eligen_bench.cli import main

    suite = write_small_suite(tmp_path / "small.jsonl", count=2)
    out = tmp_path / "run"
    assert main(["generate", "--profile", "tiny", "--suite", str(suite), "--generators", "roictrl",
                 "--out", str(out), "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(list((out / "images" / "roictrl").glob("*.png"))) == 3
    notes = manifest["adapt_notes"]["roictrl"]
    assert any("masks replaced by their bounding boxes" in n for n in notes)
    assert any("no entities" in n for n in notes)
    assert manifest["config"]["generators"]["roictrl"]["settings"]["scheduled_sampling_beta"] == 0.5
    assert manifest["prompt_truncation"]["roictrl"]["clip"]["truncated"] == 0  # the small suite's texts fit
    assert any("randperm(30)" in note for note in manifest["load_notes"]["roictrl"])


def test_captions_over_77_tokens_are_counted(roictrl):
    long_caption = " ".join(["a very small red cat"] * 20)
    layout = Layout("long", "a room", (Entity(long_caption, (0.1, 0.1, 0.6, 0.6)),), 64, 64)
    roictrl.generate([request_for(roictrl, layout)])
    record = roictrl.prompt_truncation["clip"]
    assert record["max_tokens"] == 77 and record["truncated"] == {long_caption}


def test_cli_rejects_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    from eligen_bench.cli import main

    suite = write_small_suite(tmp_path / "small.jsonl", count=2)
    bad = tmp_path / "adapter.safetensors"
    bad.write_text("not a checkpoint")
    code = main(["generate", "--suite", str(suite), "--generators", f"roictrl[checkpoint={bad}]",
                 "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint" in err[0]
