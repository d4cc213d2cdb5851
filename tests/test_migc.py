"""MIGC: layout conversion, released-checkpoint loader, controller math, tiny runs (offline, CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eligen_bench.errors import InputError
from eligen_bench.layout import Entity, Layout

from fixtures import TWO_PETS, request_for, write_small_suite

KEYS_FIXTURE = Path(__file__).parent / "migc_sd14_keys.txt"


@pytest.fixture(scope="module")
def migc():
    from eligen_bench.generators.migc.generator import MigcGenerator

    generator = MigcGenerator(profile="tiny", device="cpu")
    generator.ensure_loaded()
    yield generator
    generator.close()


# ---- plugin contract ---------------------------------------------------------------------------


def test_registered_with_reference_defaults():
    from eligen_bench import registry
    from eligen_bench.generators.migc.generator import MigcGenerator

    assert registry.entries("generator")["migc"].load() is MigcGenerator
    assert MigcGenerator.reference == "limuloo/MIGC@effd6cc: inference_mig_benchmark.py"
    d = MigcGenerator.defaults
    assert (d["model"], d["steps"], d["guidance_scale"], d["migc_steps"], d["naive_fuser_steps"]) == (
        "CompVis/stable-diffusion-v1-4", 50, 7.5, 25, -1)
    assert d["aug_phase_with_and"] is True and (d["width"], d["height"]) == (512, 512)
    assert d["negative_prompt"] == "worst quality, low quality, bad anatomy"
    caps = MigcGenerator.capabilities
    assert caps.boxes and not caps.masks and caps.max_entities == 28


def test_full_profile_needs_the_checkpoint_and_options_are_checked():
    from eligen_bench.generators.migc.generator import MigcGenerator

    with pytest.raises(InputError, match="migc_checkpoint"):
        MigcGenerator(profile="full", device="cpu")
    with pytest.raises(InputError, match="no such file"):
        MigcGenerator(profile="full", device="cpu", migc_checkpoint="missing/MIGC_SD14.ckpt")
    with pytest.raises(InputError, match="migc_steps"):
        MigcGenerator(profile="tiny", device="cpu", migc_steps=1.5)
    with pytest.raises(InputError, match="unknown option"):
        MigcGenerator(profile="tiny", device="cpu", mig_steps=3)


def test_entity_limit_is_enforced_before_any_work():
    from eligen_bench.generators.migc.generator import MigcGenerator

    generator = MigcGenerator(profile="tiny", device="cpu")  # not loaded: adapt needs no model
    crowd = Layout("crowd", "a crowd", tuple(Entity(f"person {i}", (0.0, 0.0, 0.5, 0.5)) for i in range(29)))
    with pytest.raises(InputError, match="29 entities, but migc supports at most 28"):
        generator.adapt(crowd)
    assert not generator._loaded


# ---- layout conversion (hand-worked) ---------------------------------------------------------------


def test_layout_conversion_order_coordinates_and_masks():
    from eligen_bench.generators.migc.generator import migc_layout

    layout = Layout("l", "a cat and a dog", (Entity("a cat", (0.25, 0.5, 0.75, 1.0)),
                                             Entity("a dog", (0.0, 0.0, 0.3, 0.5))), 512, 512)
    phrases, boxes, masks, background = migc_layout(layout, width=8, height=4, augment=True)
    assert phrases == ["a cat, and a cat", "a dog, and a dog"]
    assert boxes == [[0.25, 0.75, 0.5, 1.0], [0.0, 0.3, 0.0, 0.5]]  # [x0, x1, y0, y1]
    cat = np.zeros((4, 8))
    cat[2:4, 2:6] = 1  # rows int(4*0.5):int(4*1.0), cols int(8*0.25):int(8*0.75)
    dog = np.zeros((4, 8))
    dog[0:2, 0:2] = 1  # cols int(8*0.3) = 2: truncated, not rounded
    np.testing.assert_array_equal(masks, np.stack([cat, dog]))
    np.testing.assert_array_equal(background[0], 1 - np.maximum(cat, dog))


def test_phrase_augmentation_caps_at_seven_copies():
    from eligen_bench.generators.migc.generator import augment_phrase, migc_layout

    assert augment_phrase("a red car", 1) == "a red car"
    assert augment_phrase("a red car", 3) == "a red car, and a red car, and a red car"
    assert augment_phrase("x", 12) == ", and ".join(["x"] * 7)
    layout = Layout("l", "p", (Entity("a", (0.0, 0.0, 1.0, 1.0)), Entity("b", (0.0, 0.0, 1.0, 1.0))), 512, 512)
    assert migc_layout(layout, 8, 8, augment=False)[0] == ["a", "b"]


def test_fourier_box_embedding_hand_values():
    from eligen_bench.generators.migc.controller import fourier_box_embedding

    box = torch.tensor([[0.0, 0.5, 0.25, 1.0]])
    out = fourier_box_embedding(box, num_freqs=8)
    assert out.shape == (1, 64)
    f1 = 100 ** (1 / 8)
    expected_first_16 = [math.sin(v) for v in (0.0, 0.5, 0.25, 1.0)] + [math.cos(v) for v in (0.0, 0.5, 0.25, 1.0)]
    expected_first_16 += [math.sin(f1 * v) for v in (0.0, 0.5, 0.25, 1.0)]
    expected_first_16 += [math.cos(f1 * v) for v in (0.0, 0.5, 0.25, 1.0)]
    np.testing.assert_allclose(out[0, :16].numpy(), expected_first_16, atol=1e-6)
    f7 = 100 ** (7 / 8)
    np.testing.assert_allclose(out[0, -4:].numpy(), [math.cos(f7 * v) for v in (0.0, 0.5, 0.25, 1.0)], atol=1e-5)


# ---- checkpoint loader against the released names ------------------------------------------------


def _released_state_dict(device: str = "meta") -> dict[str, torch.Tensor]:
    """Tensors named and shaped as in MIGC_SD14.ckpt (meta tensors: no memory)."""
    state = {}
    for line in KEYS_FIXTURE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split()
            state[key] = torch.empty(tuple(int(s) for s in shape.split(",")), device=device)
    return state


@pytest.fixture(scope="module")
def sd14_unet():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):  # SD 1.4's UNet config (diffusers defaults + 768 context), no weights
        return UNet2DConditionModel(cross_attention_dim=768)


def test_released_checkpoint_loads_completely(sd14_unet):
    from eligen_bench.generators.migc.checkpoint import build_controllers

    state = _released_state_dict()
    assert len(state) == 4 * 32
    controllers = build_controllers(state, sd14_unet, where="MIGC_SD14.ckpt")
    assert sorted(controllers) == [
        "mid_block.attentions.0.transformer_blocks.0.attn2",
        *(f"up_blocks.1.attentions.{i}.transformer_blocks.0.attn2" for i in range(3)),
    ]
    loaded = sum(t.numel() for c in controllers.values() for t in c.state_dict().values())
    assert loaded == sum(t.numel() for t in state.values())
    assert controllers["mid_block.attentions.0.transformer_blocks.0.attn2"].sac.max_instances == 28


@pytest.mark.parametrize("change, message", [
    ("drop", "missing keys [ea.to_q.weight]"),
    ("extra", "unexpected keys [ea.to_q.bias]"),
    ("shape", "wrong shapes [la.to_k.weight (1280, 640) != (1280, 1280)]"),
    ("stray", "unexpected keys (not MIGC layer parameters): [model.diffusion_model.out.0.weight]"),
])
def test_mismatched_checkpoint_fails_naming_the_keys(sd14_unet, change, message):
    from eligen_bench.generators.migc.checkpoint import build_controllers

    state = _released_state_dict()
    prefix = "model.diffusion_model.output_blocks.4.1.transformer_blocks.0.attn2.migc."
    if change == "drop":
        del state[prefix + "ea.to_q.weight"]
    elif change == "extra":
        state[prefix + "ea.to_q.bias"] = torch.empty(1280, device="meta")
    elif change == "shape":
        state[prefix + "la.to_k.weight"] = torch.empty(1280, 640, device="meta")
    else:
        state["model.diffusion_model.out.0.weight"] = torch.empty(4, device="meta")
    with pytest.raises(InputError) as info:
        build_controllers(state, sd14_unet, where="MIGC_SD14.ckpt")
    text = str(info.value)
    assert "\n" not in text and message in text and text.startswith("MIGC_SD14.ckpt: migc_checkpoint:")
    if change != "stray":
        assert "layer up_blocks.1.attentions.1.transformer_blocks.0.attn2" in text


def test_block_mapping_matches_the_reference_formula():
    """load_migc (limuloo/MIGC@effd6cc migc/migc_utils.py): down = (i // 3, i % 3 - 1), up = (i // 3, i % 3)."""
    from eligen_bench.generators.migc.checkpoint import attention_path

    for kind, indices, diffusers_kind, offset in (("input_blocks", (1, 2, 4, 5, 7, 8), "down_blocks", -1),
                                                  ("output_blocks", range(3, 12), "up_blocks", 0)):
        for i in indices:
            path, name = attention_path(f"model.diffusion_model.{kind}.{i}.1.transformer_blocks.0.attn2.migc.norm.bias", 2)
            assert path == f"{diffusers_kind}.{i // 3}.attentions.{i % 3 + offset}.transformer_blocks.0.attn2"
            assert name == "norm.bias"


def test_checkpoint_file_errors_are_one_line(tmp_path):
    from eligen_bench.generators.migc.checkpoint import read_state_dict

    with pytest.raises(InputError, match="file not found"):
        read_state_dict(tmp_path / "missing.ckpt")
    torch.save({"weights": {}}, tmp_path / "other.ckpt")
    with pytest.raises(InputError, match="no 'state_dict' entry"):
        read_state_dict(tmp_path / "other.ckpt")
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(InputError, match="not a safe checkpoint .Unsupported operand") as info:
        read_state_dict(tmp_path / "junk.ckpt")
    assert "\n" not in str(info.value)


# ---- controller math -----------------------------------------------------------------------------


def _layer(channels: int = 16, context: int = 32, seed: int = 0):
    from eligen_bench.generators.migc.controller import MIGCLayer

    torch.manual_seed(seed)
    layer = MIGCLayer(channels, context, box_hidden=24)
    with torch.no_grad():  # non-zero biases everywhere, so a misplaced term shows
        for name, p in layer.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    return layer.eval()


def _inputs(boxes_xyxy, image=64, latent=8, context=32, generator_seed=7):
    from eligen_bench.generators.migc.controller import InstanceInputs, resize
    from eligen_bench.generators.migc.generator import migc_layout

    layout = Layout("l", "p", tuple(Entity(f"e{i}", b) for i, b in enumerate(boxes_xyxy)), image, image)
    _, boxes, masks, background = migc_layout(layout, image, image, augment=False)
    torch.manual_seed(3)
    return InstanceInputs(
        masks=resize(torch.from_numpy(masks), (latent, latent)),
        background=resize(torch.from_numpy(background), (latent, latent)),
        boxes=torch.tensor(boxes),
        pooled=torch.randn(len(boxes), context),
        image_size=(image, image),
        generator=torch.Generator().manual_seed(generator_seed),
    )


def _reference_migc(params, ca, tokens, inst, perm_seed):
    """Independent transcription of MIGC.forward / SAC / CBAM / CrossAttention / LayoutAttention /
    PositionNet of limuloo/MIGC@effd6cc (migc/migc_arch.py, migc/migc_layers.py), batch 1."""
    P = params
    heads = 8

    def attention(prefix, x, context, mask_sim=None):
        q = x @ P[prefix + "to_q.weight"].T
        k = context @ P[prefix + "to_k.weight"].T
        v = context @ P[prefix + "to_v.weight"].T
        b, n, c = q.shape
        d = c // heads
        q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, d).permute(0, 2, 1, 3).reshape(-1, t.shape[1], d)
                   for t in (q, k, v))
        sim = torch.einsum("bid,bjd->bij", q, k) * d ** -0.5
        if mask_sim is not None:
            sim[mask_sim.repeat(heads, 1, 1) == 0] = -torch.finfo(sim.dtype).max
        out = torch.einsum("bij,bjd->bid", sim.softmax(-1), v)
        out = out.reshape(b, heads, n, d).permute(0, 2, 1, 3).reshape(b, n, c)
        return out @ P[prefix + "to_out.0.weight"].T + P[prefix + "to_out.0.bias"]

    def cbam(prefix, x):
        def mlp(z):
            z = z.flatten(1) @ P[prefix + "ChannelGate.mlp.1.weight"].T + P[prefix + "ChannelGate.mlp.1.bias"]
            return z.relu() @ P[prefix + "ChannelGate.mlp.3.weight"].T + P[prefix + "ChannelGate.mlp.3.bias"]
        s = x.shape[2:]
        att = mlp(F.avg_pool2d(x, s, stride=s)) + mlp(F.max_pool2d(x, s, stride=s))
        x = x * torch.sigmoid(att)[:, :, None, None]
        comp = torch.cat([x.max(1)[0][:, None], x.mean(1)[:, None]], 1)
        return x * torch.sigmoid(F.conv2d(comp, P[prefix + "SpatialGate.spatial.conv.weight"], padding=3))

    n_inst = inst.masks.shape[0]
    full_h, full_w = inst.image_size
    hw, c = tokens.shape
    down = int(math.sqrt(full_h * full_w // hw))
    h, w = full_h // down, full_w // down
    gm = F.interpolate(inst.masks[None], size=(h, w), mode="bilinear")
    sup = F.interpolate(inst.background[None], size=(h, w), mode="bilinear")
    # PositionNet: Fourier features, freq-major [sin(f x), cos(f x)] blocks
    freqs = 100 ** (torch.arange(8) / 8)
    emb = torch.cat([g(f * inst.boxes[:, None, :]) for f in freqs for g in (torch.sin, torch.cos)], -1)
    z = F.silu(emb @ P["pos_net.linears_position.0.weight"].T + P["pos_net.linears_position.0.bias"])
    z = F.silu(z @ P["pos_net.linears_position.2.weight"].T + P["pos_net.linears_position.2.bias"])
    box_token = z @ P["pos_net.linears_position.4.weight"].T + P["pos_net.linears_position.4.bias"]
    context = torch.cat([inst.pooled[:, None], box_token], 1)
    image_token = tokens[None, None].repeat(1, n_inst + 1, 1, 1)
    normed = F.layer_norm(image_token[:, 1:].reshape(n_inst, hw, c), (c,), P["norm.weight"], P["norm.bias"])
    ea_x = attention("ea.", normed, context).reshape(1, n_inst, hw, c) * gm.reshape(1, n_inst, hw, 1)
    ca_x = ca[None].clone()
    ca_x[:, 1:] = ca_x[:, 1:] * gm.reshape(1, n_inst, hw, 1) + ea_x
    la_mask = torch.cat([gm, sup], 1).reshape(n_inst + 1, hw, 1)
    sim_mask = torch.bmm(la_mask, la_mask.transpose(1, 2)).sum(0, keepdim=True).clamp(max=1)
    template = attention("la.", image_token[:, 0], image_token[:, 0], sim_mask).reshape(1, 1, hw, c)
    ca_x = torch.cat([ca_x, template], 1)
    ca_x[:, 0] = ca_x[:, 0] * sup.reshape(1, hw, 1)
    gmask = torch.cat([sup, gm, torch.ones(1, 1, h, w)], 1)
    # SAC
    x = torch.cat([ca_x, torch.zeros_like(ca_x[:, [0]])], 1)
    mk = torch.cat([gmask.reshape(1, n_inst + 2, hw, 1), torch.zeros(1, 1, hw, 1)], 1)
    phase = n_inst + 3
    s = torch.cat([x, mk], -1).reshape(-1, h, w, c + 1).permute(0, 3, 1, 2)
    s = F.conv2d(s, P["sac.conv1.weight"], P["sac.conv1.bias"])
    s = F.conv2d(cbam("sac.cbam1.", s), P["sac.conv2.weight"], P["sac.conv2.bias"]).reshape(1, phase, h, w)
    null, s = s[:, [-1]], s[:, :-1]
    phase_scale = torch.cat([s[:, 1:-1], null.repeat(1, 30 - phase + 1, 1, 1)], 1)
    order = torch.randperm(phase_scale.shape[1], generator=torch.Generator().manual_seed(perm_seed))
    inv = torch.argsort(order)
    s = cbam("sac.cbam2.", torch.cat([s[:, [0]], phase_scale[:, order], s[:, [-1]]], 1)).reshape(1, 30, hw)[..., None]
    s = torch.cat([s[:, [0]], s[:, 1:-1][:, inv[:n_inst]], s[:, [-1]]], 1).softmax(1)
    return (ca_x * s).sum(1)[0]


def test_controller_matches_reference_transcription():
    layer = _layer()
    inst = _inputs([(0.1, 0.1, 0.55, 0.6), (0.4, 0.3, 0.95, 0.9), (0.0, 0.5, 0.3, 1.0)])
    torch.manual_seed(5)
    ca, tokens = torch.randn(4, 64, 16), torch.randn(64, 16)
    params = {k: v.detach() for k, v in layer.state_dict().items()}
    with torch.no_grad():
        ours = layer(ca.clone(), tokens, inst)
        reference = _reference_migc(params, ca, tokens, inst, perm_seed=7)
    torch.testing.assert_close(ours, reference, atol=2e-5, rtol=1e-4)


def test_slot_order_is_drawn_from_the_request_generator():
    layer = _layer()
    ca, tokens = torch.randn(3, 64, 16), torch.randn(64, 16)
    with torch.no_grad():
        a = layer(ca, tokens, _inputs([(0.1, 0.1, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)], generator_seed=1))
        b = layer(ca, tokens, _inputs([(0.1, 0.1, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)], generator_seed=1))
        c = layer(ca, tokens, _inputs([(0.1, 0.1, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)], generator_seed=2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)  # CBAM across slot channels is not order invariant


def test_one_instance_over_the_whole_image_reduces_to_its_cross_attention():
    """Background mask 0 drops the global branch; with the SAC's last convolution and the
    enhancement/layout output projections zeroed, every slot logit is 0, so the output is the
    mean of [0, phrase cross-attention, 0] = phrase cross-attention / 3."""
    layer = _layer()
    with torch.no_grad():
        for p in (layer.sac.conv2.weight, layer.sac.conv2.bias, *layer.ea.to_out[0].parameters(),
                  *layer.la.to_out[0].parameters()):
            p.zero_()
        inst = _inputs([(0.0, 0.0, 1.0, 1.0)])
        ca, tokens = torch.randn(2, 64, 16), torch.randn(64, 16)
        out = layer(ca.clone(), tokens, inst)
        torch.testing.assert_close(out, ca[1] / 3, rtol=0, atol=1e-6)
        other_global = ca.clone()
        other_global[0] = torch.randn(64, 16)
    full = _layer()  # with trained-like weights too, the global branch has no say under a full box
    with torch.no_grad():
        a = full(ca.clone(), tokens, _inputs([(0.0, 0.0, 1.0, 1.0)]))
        b = full(other_global, tokens, _inputs([(0.0, 0.0, 1.0, 1.0)]))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_shade_and_naive_fuser_hand_values():
    from eligen_bench.generators.migc.controller import naive_fuse, shade

    slots = torch.tensor([[[1.0]], [[3.0]]])
    logits = torch.tensor([[0.0], [math.log(3.0)]])
    torch.testing.assert_close(shade(slots, logits), torch.tensor([[0.25 * 1 + 0.75 * 3]]))
    inst = _inputs([(0.0, 0.0, 0.5, 1.0)], image=16, latent=2)  # left half of a 2x2 grid
    ca = torch.stack([torch.full((4, 1), 1.0), torch.full((4, 1), 12.0)])
    out = naive_fuse(ca, inst)[:, 0]
    # weights [1, 10] in the box: (1 + 120) / 11 = 11; outside: the global value 1
    torch.testing.assert_close(out, torch.tensor([11.0, 1.0, 11.0, 1.0]), atol=1e-5, rtol=0)


def test_layout_attention_keeps_regions_apart():
    from eligen_bench.generators.migc.controller import region_pairs

    regions = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]])
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(region_pairs(regions), expected)
    layer = _layer()
    tokens = torch.randn(4, 16)
    changed = tokens.clone()
    changed[2:] = torch.randn(2, 16)
    with torch.no_grad():
        a = layer.la(tokens[None], allowed=region_pairs(regions))[0]
        b = layer.la(changed[None], allowed=region_pairs(regions))[0]
    torch.testing.assert_close(a[:2], b[:2], rtol=0, atol=0)


def test_too_many_instances_for_the_slots():
    layer = _layer()
    inst = _inputs([(0.0, 0.0, 0.5, 0.5)] * 29)
    with pytest.raises(ValueError, match="29 instances"):
        layer(torch.randn(30, 64, 16), torch.randn(64, 16), inst)


def test_step_schedule_follows_the_reference_comparisons():
    from eligen_bench.generators.migc.controller import MigcState

    state = MigcState(migc_steps=2, naive_fuser_steps=3, instances=_inputs([(0.0, 0.0, 0.5, 0.5)]))
    modes = []
    for step in range(5):
        state.step = step
        modes.append((state.mode(True), state.mode(False)))
    # MIGC while step <= MIGCsteps (inclusive, `ith > MIGCsteps` turns it off), naive while <= NaiveFuserSteps
    assert modes == [("migc", "naive"), ("migc", "naive"), ("migc", "naive"), ("naive", "naive"), ("plain", "plain")]
    state.instances = None
    assert state.mode(True) == "plain"


# ---- tiny model runs -----------------------------------------------------------------------------


def test_tiny_generator_is_deterministic_and_controlled(migc):
    a = np.asarray(migc.generate([request_for(migc, TWO_PETS)])[0]).astype(np.int16)
    b = np.asarray(migc.generate([request_for(migc, TWO_PETS)])[0]).astype(np.int16)
    assert a.shape == (64, 64, 3) and np.array_equal(a, b)
    state = migc._parts["state"]
    state.migc_steps = -1  # no MIGC step: the same noise gives another image
    try:
        plain = np.asarray(migc.generate([request_for(migc, TWO_PETS)])[0]).astype(np.int16)
    finally:
        state.migc_steps = migc.settings["migc_steps"]
    assert np.abs(a - plain).max() > 0


def test_no_migc_step_is_plain_stable_diffusion(migc):
    """migc_steps=-1 (no step satisfies step <= -1) and zero entities both give exactly the
    diffusers StableDiffusionPipeline image with the same parts, scheduler and noise."""
    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0

    parts, settings = migc._parts, migc.settings
    state = parts["state"]
    empty = Layout("empty", TWO_PETS.prompt, (), 512, 512)
    state.migc_steps = -1
    try:
        with torch.no_grad():
            ours = [migc.denoise(layout, torch.Generator().manual_seed(9)) for layout in (TWO_PETS, empty)]
    finally:
        state.migc_steps = settings["migc_steps"]
    processors = parts["unet"].attn_processors
    parts["unet"].set_attn_processor(AttnProcessor2_0())
    try:
        pipe = StableDiffusionPipeline(vae=parts["vae"], text_encoder=parts["text_encoder"],
                                       tokenizer=parts["tokenizer"], unet=parts["unet"], scheduler=parts["scheduler"],
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(9))
        plain = pipe(TWO_PETS.prompt, negative_prompt=settings["negative_prompt"], latents=noise,
                     num_inference_steps=settings["steps"], guidance_scale=settings["guidance_scale"],
                     height=64, width=64, output_type="latent").images
    finally:
        parts["unet"].set_attn_processor(processors)
    for latent in ours:
        torch.testing.assert_close(latent, plain, atol=1e-5, rtol=1e-5)


def test_tiny_checkpoint_is_written_in_the_released_format(tmp_path):
    from eligen_bench.generators.migc.generator import TINY_CHECKPOINT, build_tiny_migc

    build_tiny_migc(tmp_path)
    state = torch.load(tmp_path / TINY_CHECKPOINT, weights_only=True)["state_dict"]
    released = {k.split(".attn2.migc.")[0] for k in _released_state_dict()}
    assert {k.split(".attn2.migc.")[0] for k in state} == released
    assert {k.split(".attn2.migc.")[1] for k in state} == {k.split(".attn2.migc.")[1] for k in _released_state_dict()}


@pytest.mark.slow
def test_cli_tiny_run_end_to_end(tmp_path):
    from eligen_bench.cli import main

    suite = write_small_suite(tmp_path / "small.jsonl")
    out = tmp_path / "run"
    assert main(["run", "--profile", "tiny", "--suite", str(suite), "--generators", "migc",
                 "--metrics", "clip_global", "--out", str(out), "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(list((out / "images" / "migc").glob("*.png"))) == 5
    assert manifest["config"]["generators"]["migc"]["settings"]["migc_steps"] == 0
    assert any("masks replaced by their bounding boxes" in note for note in manifest["adapt_notes"]["migc"])
    assert (out / "report" / "table.md").exists()


def test_cli_rejects_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    from eligen_bench.cli import main

    suite = write_small_suite(tmp_path / "small.jsonl")
    code = main(["generate", "--suite", str(suite), "--generators", "migc", "--out", str(tmp_path / "run"),
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "migc_checkpoint" in err[0]
