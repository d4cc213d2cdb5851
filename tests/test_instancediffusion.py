"""InstanceDiffusion: layout conversion, checkpoint keys, UniFusion / ScaleU / sampler math, tiny CLI run.

Reference: frank-xwang/InstanceDiffusion at commit 722900e. The transcriptions below restate the
reference procedures independently of our modules, on inputs where a plausible mistake differs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eligen_bench.errors import InputError
from eligen_bench.layout import Entity, Layout, Mask
from eligen_bench.suite import Suite

KEYS_FIXTURE = Path(__file__).with_name("instancediffusion_sd15_keys.json")


def _layout(entities=(), size=64, prompt="a scene") -> Layout:
    return Layout("l", prompt, tuple(entities), size, size)


def _square_mask(size: int, rows: slice, cols: slice) -> Mask:
    array = np.zeros((size, size), bool)
    array[rows, cols] = True
    return Mask.from_array(array)


# ---- layout conversion ------------------------------------------------------------------------


def test_boxes_points_padding_and_slots_hand_worked():
    from eligen_bench.generators.instancediffusion.layout import layout_grounding

    layout = _layout([Entity("a cat", (0.1, 0.2, 0.5, 0.6)), Entity("a dog", (0.5, 0.0, 1.0, 0.4))])
    g = layout_grounding(layout, use_masks=False)
    assert g.phrases == ["a cat", "a dog"]
    assert g.boxes.shape == (30, 4) and g.slots.shape == (30,) and g.points.shape == (30, 2)
    # [x0, y0, x1, y1] kept in that order; centres (0.3, 0.4) and (0.75, 0.2).
    np.testing.assert_allclose(g.boxes[:2], [[0.1, 0.2, 0.5, 0.6], [0.5, 0.0, 1.0, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(g.points[:2], [[0.3, 0.4], [0.75, 0.2]], rtol=1e-6)
    assert g.slots.tolist() == [1.0, 1.0] + [0.0] * 28
    assert not g.boxes[2:].any() and not g.points[2:].any() and not g.polygons.any()
    assert g.segs is None


def test_instance_input_holds_one_instance_in_slot_zero():
    from eligen_bench.generators.instancediffusion.layout import instance_grounding

    layout = _layout([Entity("a cat", (0.1, 0.2, 0.5, 0.6)), Entity("a dog", (0.5, 0.0, 1.0, 0.4))])
    g = instance_grounding(layout, 1, use_masks=False)
    assert g.phrases == ["a dog"]
    np.testing.assert_allclose(g.boxes[0], [0.5, 0.0, 1.0, 0.4], rtol=1e-6)
    assert g.slots.tolist() == [1.0] + [0.0] * 29


def test_mask_polygon_and_seg_hand_worked():
    """A 4x4 square at rows 2..5, cols 3..6 of a 16x16 canvas.

    Contour traced on the mask padded by one pixel at level 0 (the reference never removes the
    padding): the outline runs through the background pixels around the square, x in 3..8 and
    y in 2..7 in padded coordinates (columns 3..6 shifted by one, +-1 for the surrounding ring).
    Inside points: 16 pixels, fewer than 128, so drawn with replacement from the mask itself.
    """
    from eligen_bench.generators.instancediffusion.layout import (
        layout_grounding,
        sample_sparse_points,
    )

    mask = np.zeros((16, 16), np.uint8)
    mask[2:6, 3:7] = 1
    points = np.asarray(sample_sparse_points(mask, 256)).reshape(-1, 2)
    assert points.shape == (256, 2)
    inside = (mask[points[:, 1].astype(int), points[:, 0].astype(int)] == 1) & (points % 1 == 0).all(1)
    assert inside.sum() >= 128  # the 128 inside points, at pixel (x = column, y = row) of the mask
    outline = points[~inside]
    assert outline[:, 0].min() >= 3 and outline[:, 0].max() <= 8
    assert outline[:, 1].min() >= 2 and outline[:, 1].max() <= 7
    norms = np.linalg.norm(points, axis=1)
    assert (np.diff(norms) >= 0).all()  # sorted by distance to the origin

    entity = Entity("a box", (3 / 16, 2 / 16, 7 / 16, 6 / 16), mask=Mask.from_array(mask.astype(bool)))
    g = layout_grounding(Layout("m", "p", (entity,), 16, 16), use_masks=True)
    flat = g.polygons[0].reshape(-1, 2)
    np.testing.assert_allclose(flat, np.minimum(points / 16.0, 1.0), rtol=1e-6)  # x / width, y / height
    assert g.segs.shape == (30, 512, 512)
    # Nearest resize of 16 -> 512: each pixel becomes a 32x32 block.
    assert g.segs[0, 64:192, 96:224].all() and g.segs[0].sum() == 16 * 32 * 32
    assert not g.segs[1:].any()


def test_masked_layout_entity_without_mask_takes_its_box():
    from eligen_bench.generators.instancediffusion.generator import InstanceDiffusionGenerator
    from eligen_bench.generators.instancediffusion.layout import layout_grounding

    masked = Entity("a pond", (0.0, 0.0, 0.5, 0.5), mask=_square_mask(16, slice(0, 8), slice(0, 8)))
    boxed = Entity("a tree", (0.5, 0.5, 1.0, 1.0))
    layout = Layout("m", "p", (masked, boxed), 16, 16)
    g = layout_grounding(layout, use_masks=True)
    assert g.segs[1, 256:, 256:].all() and g.segs[1].sum() == 256 * 256
    _, notes = InstanceDiffusionGenerator(profile="tiny").adapt(layout)
    assert any("box as mask" in note for note in notes)


def test_more_than_30_entities_rejected_before_any_work():
    from eligen_bench.generators.instancediffusion.generator import InstanceDiffusionGenerator

    generator = InstanceDiffusionGenerator(profile="tiny")
    layout = _layout([Entity(f"thing {i}", (0.0, 0.0, 0.5, 0.5)) for i in range(31)])
    with pytest.raises(InputError, match="31 entities, but instancediffusion supports at most 30"):
        generator.adapt(layout)
    assert not generator._loaded


def test_defaults_and_declarations():
    from eligen_bench.generators.instancediffusion.generator import InstanceDiffusionGenerator
    from eligen_bench.registry import generator_class

    cls = generator_class("instancediffusion")
    assert cls is InstanceDiffusionGenerator
    assert cls.reference.startswith("frank-xwang/InstanceDiffusion@722900e")
    assert cls.capabilities.boxes and cls.capabilities.masks and cls.capabilities.max_entities == 30
    d = cls.defaults
    assert (d["steps"], d["guidance_scale"], d["alpha"], d["mis"], d["width"], d["height"]) == (
        50, 7.5, 1.0, 0.36, 512, 512)
    assert d["negative_prompt"].startswith("cartoon style, painting style, longbody")
    with pytest.raises(InputError, match="mis"):
        cls(profile="tiny", mis=1.5)
    with pytest.raises(InputError, match="unknown option"):
        cls(profile="tiny", scribbles=True)


# ---- checkpoint keys ----------------------------------------------------------------------------


def _fixture_state(device: str = "meta") -> dict:
    import torch

    doc = json.loads(KEYS_FIXTURE.read_text())
    assert doc["count"] == len(doc["keys"]) == 1199
    return {key: torch.empty(shape, device=device) for key, shape in doc["keys"]}


def test_real_key_list_maps_completely_onto_the_model():
    """Every official key and shape (fixture) lands on a parameter of the full-size model, and every
    parameter is given; our inverse naming (used by the tiny checkpoint) gives back the same list."""
    from accelerate import init_empty_weights

    from eligen_bench.generators.instancediffusion.checkpoint import (
        SD15_UNET_CONFIG,
        build_unet,
        check_keys,
        convert_state_dict,
    )
    from eligen_bench.generators.instancediffusion.tiny import ldm_key
    from eligen_bench.generators.instancediffusion.unifusion import UniFusionConfig

    state = _fixture_state()
    config = UniFusionConfig.from_state_dict(state)
    assert config == UniFusionConfig()  # the released sizes: 768, 768, 3072, ConvNeXt-T
    with init_empty_weights():
        unet = build_unet(SD15_UNET_CONFIG, config)
    converted, unexpected = convert_state_dict(state, SD15_UNET_CONFIG)
    assert unexpected == []
    check_keys(converted, unexpected, unet.state_dict(), "fixture")
    model_state = unet.state_dict()
    assert {ldm_key(k, SD15_UNET_CONFIG): tuple(v.shape) for k, v in model_state.items()} == {
        k: tuple(v.shape) for k, v in state.items()}
    assert converted["scaleu.b_7"].shape == (640,)
    assert "down_blocks.0.attentions.0.transformer_blocks.0.fuser.linear.weight" in converted


def test_checkpoint_with_a_missing_and_an_unexpected_key_fails_naming_them():
    from accelerate import init_empty_weights

    from eligen_bench.generators.instancediffusion.checkpoint import (
        SD15_UNET_CONFIG,
        build_unet,
        check_keys,
        convert_state_dict,
    )
    from eligen_bench.generators.instancediffusion.unifusion import UniFusionConfig

    state = _fixture_state()
    del state["scaleu_s_3"]
    state["input_blocks.1.1.transformer_blocks.0.fuser.extra.weight"] = state["position_net.in_conv.bias"]
    state["position_net.in_conv.bias"] = state["position_net.in_conv.bias"].new_empty(5)
    with init_empty_weights():
        unet = build_unet(SD15_UNET_CONFIG, UniFusionConfig.from_state_dict(state))
    converted, unexpected = convert_state_dict(state, SD15_UNET_CONFIG)
    with pytest.raises(InputError) as err:
        check_keys(converted, unexpected, unet.state_dict(), "checkpoint 'x.pth'")
    message = str(err.value)
    assert "\n" not in message
    assert "1 missing (scaleu.s_3)" in message
    assert "fuser.extra.weight" in message and "unexpected" in message
    assert "position_net.in_conv.bias (5,) vs (3,)" in message


def test_tiny_checkpoint_reads_back_through_the_real_loader(tmp_path):
    import torch

    from eligen_bench.generators.instancediffusion.checkpoint import load_unet, read_checkpoint
    from eligen_bench.generators.instancediffusion.tiny import (
        TINY_UNET_CONFIG,
        build_tiny_model,
        write_tiny_checkpoint,
    )

    path = write_tiny_checkpoint(tmp_path / "tiny.pth")
    raw = read_checkpoint(path, allow_pickle=False)
    assert "input_blocks.0.0.weight" in raw and "scaleu_b_0" in raw and "position_net.null_seg_feature" in raw
    loaded = load_unet(path, TINY_UNET_CONFIG, allow_pickle=False).state_dict()
    expected = build_tiny_model().state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    with pytest.raises(InputError, match="file not found"):
        read_checkpoint(tmp_path / "missing.pth", allow_pickle=False)


# ---- UniFusion, ScaleU, sampler math ------------------------------------------------------------


def test_fourier_embedding_matches_reference_order():
    """FourierEmbedder (ldm/modules/diffusionmodules/util.py@722900e): for each frequency
    100^(k/16), sin of every coordinate then cos of every coordinate."""
    import torch

    from eligen_bench.generators.instancediffusion.unifusion import fourier_embed

    x = torch.tensor([[0.1, 0.2, 0.7, 0.9]])
    parts = []
    for k in range(16):
        f = 100 ** (k / 16)
        parts += [torch.sin(f * x), torch.cos(f * x)]
    torch.testing.assert_close(fourier_embed(x), torch.cat(parts, -1))


def test_null_slots_take_the_learned_null_features():
    """With every slot empty the box token of each slot is MLP([null text, null box]) for all 30."""
    import torch

    from eligen_bench.generators.instancediffusion.tiny import TINY_UNIFUSION
    from eligen_bench.generators.instancediffusion.unifusion import UniFusion

    torch.manual_seed(0)
    net = UniFusion(TINY_UNIFUSION)
    for p in (net.null_positive_feature, net.null_position_feature):
        torch.nn.init.normal_(p)
    z = torch.zeros
    boxes = torch.rand(1, 30, 4)  # ignored in empty slots
    tokens = net.embed(boxes, z(1, 30), torch.rand(1, 30, 32), z(1, 30, 2), z(1, 30, 512), None, use_masks=False)
    assert tokens.shape == (1, 4 * 30 + 4, 32)
    expected = net.linears_list[0](torch.cat([net.null_positive_feature, net.null_position_feature]))
    torch.testing.assert_close(tokens[0, :30], expected.expand(30, -1))


def _reference_fourier_filter(x, threshold, scale):
    """Fourier_filter (openaimodel.py@722900e), restated with numpy."""
    freq = np.fft.fftshift(np.fft.fftn(x, axes=(-2, -1)), axes=(-2, -1))
    h, w = x.shape[-2:]
    mask = np.ones(x.shape)
    mask[..., h // 2 - threshold:h // 2 + threshold, w // 2 - threshold:w // 2 + threshold] = scale
    return np.fft.ifftn(np.fft.ifftshift(freq * mask, axes=(-2, -1)), axes=(-2, -1)).real


def test_scaleu_matches_an_independent_transcription():
    """h * (tanh(b) + 1) channel-wise; skip with its 2x2 spectral centre scaled by tanh(s) + 1."""
    import torch

    from eligen_bench.generators.instancediffusion.scaleu import ScaleU

    torch.manual_seed(1)
    scaleu = ScaleU([3])
    with torch.no_grad():
        scaleu.b_0.copy_(torch.tensor([0.5, -1.0, 2.0]))
        scaleu.s_0.fill_(-0.7)
    main, skip = torch.randn(2, 3, 8, 8), torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        out = scaleu.apply_to(0, torch.cat([main, skip], 1)).numpy()
    b = np.tanh(np.array([0.5, -1.0, 2.0])) + 1
    np.testing.assert_allclose(out[:, :3], main.numpy() * b[None, :, None, None], rtol=1e-5)
    np.testing.assert_allclose(out[:, 3:], _reference_fourier_filter(skip.numpy(), 1, np.tanh(-0.7) + 1),
                               rtol=1e-4, atol=1e-5)


def test_scaleu_at_zero_is_the_identity_inside_the_unet():
    """Zero b and s give tanh(0) + 1 = 1: the hooked UNet equals the same UNet without hooks."""
    import torch
    from diffusers import UNet2DConditionModel

    from eligen_bench.generators.instancediffusion.tiny import TINY_UNET_CONFIG, build_tiny_model

    unet = build_tiny_model()
    with torch.no_grad():
        for p in unet.scaleu.parameters():
            p.zero_()
    plain = UNet2DConditionModel.from_config(TINY_UNET_CONFIG)
    plain.load_state_dict({k: v for k, v in unet.state_dict().items()
                           if not k.startswith(("scaleu.", "position_net."))}, strict=False)
    x, ctx = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
    with torch.no_grad():
        torch.testing.assert_close(unet(x, 10, ctx).sample, plain(x, 10, ctx).sample)


def test_gate_zero_is_plain_stable_diffusion():
    """Closed gates (tanh(0) = 0) make the grounded UNet equal the UNet run without grounding."""
    import torch

    from eligen_bench.generators.instancediffusion.tiny import build_tiny_model

    unet = build_tiny_model()
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith(("alpha_attn", "alpha_dense")):
                p.zero_()
    x, ctx, tokens = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32), torch.randn(1, 124, 32)
    with torch.no_grad():
        grounded = unet(x, 10, ctx, cross_attention_kwargs={"gligen": {"tokens": tokens}}).sample
        plain = unet(x, 10, ctx).sample
        torch.testing.assert_close(grounded, plain)
        for name, p in unet.named_parameters():
            if name.endswith(("alpha_attn", "alpha_dense")):
                p.fill_(1.0)
        opened = unet(x, 10, ctx, cross_attention_kwargs={"gligen": {"tokens": tokens}}).sample
    assert (opened - plain).abs().max() > 1e-4


def _reference_plms(eps, x, steps, mis=0.0, eps_instances=()):
    """PLMSSamplerInst.plms_sampling (ldm/models/diffusion/plms_instance.py@722900e), restated."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    ac = np.cumprod(1 - betas).astype(np.float32)
    ddim = np.asarray(list(range(0, 1000, 1000 // steps))) + 1
    a, a_prev = ac[ddim], np.asarray([ac[0]] + ac[ddim[:-1]].tolist())
    time_range = np.flip(ddim)
    total = len(ddim)  # 1000 // 7 = 142 gives 8 timesteps for 7 steps: the reference keeps them all

    def update(x, e, index):
        x0 = (x - np.sqrt(1 - a[index]) * e) / np.sqrt(a[index])
        return np.sqrt(a_prev[index]) * x0 + np.sqrt(1 - a_prev[index]) * e

    def step(fn, x, i, old):
        index = total - i - 1
        e_t = fn(x, time_range[i])
        if not old:
            e_next = fn(update(x, e_t, index), time_range[min(i + 1, total - 1)])
            e_p = (e_t + e_next) / 2
        elif len(old) == 1:
            e_p = (3 * e_t - old[-1]) / 2
        elif len(old) == 2:
            e_p = (23 * e_t - 16 * old[-1] + 5 * old[-2]) / 12
        else:
            e_p = (55 * e_t - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
        old.append(e_t)
        if len(old) >= 4:
            old.pop(0)
        return update(x, e_p, index)

    mis_step = int(total * mis)
    xs, olds = [], []
    for fn in (eps, *eps_instances):
        xi, old = x, []
        for i in range(mis_step):
            xi = step(fn, xi, i, old)
        xs.append(xi)
        olds.append(old)
    x = np.mean(xs, axis=0)
    for i in range(mis_step, total):
        x = step(eps, x, i, olds[0])
    return x


def _toy_eps(shift):
    # A nonlinear, timestep-dependent prediction so that order and history mistakes show.
    return lambda x, t: np.tanh(x * (1 + t / 1000.0)) + shift


def test_plms_and_mis_match_the_reference_procedure():
    import torch

    from eligen_bench.generators.instancediffusion.sampler import PlmsSchedule, sample_mis

    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3))
    fns = [_toy_eps(0.0), _toy_eps(0.3), _toy_eps(-0.5)]
    torch_fns = [lambda xt, t, alpha, f=f: torch.from_numpy(f(xt.numpy(), t)) for f in fns]
    for steps, mis in ((7, 0.0), (7, 0.36), (10, 0.5)):
        schedule = PlmsSchedule.ldm(steps)
        assert len(schedule) == (8 if steps == 7 else steps)
        ours = sample_mis(torch_fns, torch.from_numpy(x), schedule, mis, [1.0] * len(schedule)).numpy()
        ref = _reference_plms(fns[0], x, steps, mis, fns[1:])
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_mis_with_one_instance_identical_to_the_full_layout_equals_plain_sampling():
    """MIS averages the full pass with each instance pass: one instance predicting as the full
    layout leaves plain PLMS unchanged, a different one does not."""
    import torch

    from eligen_bench.generators.instancediffusion.sampler import PlmsSchedule, sample_mis

    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    f = lambda xt, t, a: torch.tanh(xt) * (1 + t / 1000)  # noqa: E731
    g = lambda xt, t, a: torch.tanh(xt) * (1 + t / 1000) + 0.2  # noqa: E731
    schedule = PlmsSchedule.ldm(8)
    plain = sample_mis([f], x, schedule, 0.0, [1.0] * 8)
    torch.testing.assert_close(sample_mis([f, f], x, schedule, 0.5, [1.0] * 8), plain)
    assert (sample_mis([f, g], x, schedule, 0.5, [1.0] * 8) - plain).abs().max() > 1e-3


def test_grounding_schedule():
    from eligen_bench.generators.instancediffusion.sampler import grounding_alphas

    assert grounding_alphas(50, 1.0) == [1.0] * 50
    assert grounding_alphas(10, 0.75) == [1.0] * 7 + [0.0] * 3  # int(7.5) = 7


# ---- tiny generator, end to end --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from eligen_bench.generators.instancediffusion.generator import InstanceDiffusionGenerator

    generator = InstanceDiffusionGenerator(profile="tiny", device="cpu")
    yield generator
    generator.close()


def _request(layout: Layout, seed: int = 3):
    from eligen_bench.requests import GenerationRequest

    return GenerationRequest(layout=layout, seed_index=0, seed=seed, generator={})


def test_tiny_boxes_and_masks_change_the_image(tiny):
    box = Entity("a red ball", (0.1, 0.1, 0.6, 0.6))
    masked = Entity("a red ball", (0.1, 0.1, 0.6, 0.6), mask=_square_mask(64, slice(8, 30), slice(8, 36)))
    empty, boxes, masks = (np.asarray(im, np.int16) for im in tiny.generate(
        [_request(_layout()), _request(_layout([box])), _request(_layout([masked]))]))
    assert empty.shape == (64, 64, 3)
    assert np.abs(boxes - empty).max() > 0 and np.abs(masks - boxes).max() > 0


def test_cli_run_tiny_with_boxes_and_masks(tmp_path):
    from eligen_bench.cli import main

    pond = Entity("a round pond", (0.1, 0.2, 0.6, 0.8), mask=_square_mask(64, slice(13, 51), slice(6, 38)))
    layouts = (
        Layout("boxes", "a cat and a dog", (Entity("a cat", (0.05, 0.1, 0.45, 0.9), category="cat"),
                                            Entity("a dog", (0.5, 0.2, 0.95, 0.9), category="dog")), 64, 64),
        Layout("masks", "a garden with a pond", (pond,), 64, 64),
    )
    suite = tmp_path / "suite.jsonl"
    Suite("instdiff-small", "1", layouts, "test suite").write(suite)
    out = tmp_path / "run"
    assert main(["run", "--profile", "tiny", "--suite", str(suite), "--generators", "instancediffusion",
                 "--metrics", "background_psnr", "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "images" / "instancediffusion").glob("*.png")) == [
        "boxes_0.png", "masks_0.png"]
    manifest = json.loads((out / "manifest.json").read_text())
    settings = manifest["config"]["generators"]["instancediffusion"]["settings"]
    assert settings["mis"] == 0.5 and settings["steps"] == 2
