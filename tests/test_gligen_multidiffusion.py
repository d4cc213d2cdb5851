"""GLIGEN and MultiDiffusion generators on tiny random models (offline, CPU, 2 steps at 64x64)."""

from __future__ import annotations

import numpy as np
import pytest

from eligen_bench.errors import InputError
from eligen_bench.layout import Entity, Layout, Mask

from fixtures import TWO_PETS, request_for

EMPTY = Layout(id="street", prompt="an empty street at night", width=512, height=512)

# Pixels [30:33, 30:33] (RGB) of the tiny-profile image of TWO_PETS with seed 1234, recorded
# from this implementation as a regression check (as diffusers' pipeline tests do).
EXPECTED_SLICE = {
    # Re-recorded when grounding came to span the reference's count (both calls of the first PLMS step).
    "gligen": [170, 127, 131, 154, 122, 134, 157, 129, 139, 159, 125, 130, 158, 118, 130, 165, 123, 130, 141, 150, 81, 149, 132, 97, 164, 136, 107],
    # re-recorded when region masks became boxes drawn at image size, nearest to the latent grid
    "multidiffusion": [0, 112, 26, 0, 116, 88, 0, 83, 63, 0, 80, 0, 0, 95, 0, 0, 123, 0, 0, 0, 35, 0, 21, 10, 0, 96, 0],
}


def _pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


@pytest.fixture(scope="module")
def gligen():
    from eligen_bench.generators.stable_diffusion.gligen import GligenGenerator

    generator = GligenGenerator(profile="tiny", device="cpu")
    generator.ensure_loaded()
    yield generator
    generator.close()


@pytest.fixture(scope="module")
def multidiffusion():
    from eligen_bench.generators.stable_diffusion.multidiffusion import MultiDiffusionGenerator

    generator = MultiDiffusionGenerator(profile="tiny", device="cpu")
    generator.ensure_loaded()
    yield generator
    generator.close()


@pytest.fixture(params=["gligen", "multidiffusion"])
def any_generator(request):
    return request.getfixturevalue(request.param)


# ---- both generators ------------------------------------------------------------------------


def test_registered_as_entry_points():
    from eligen_bench.registry import generator_class

    assert generator_class("gligen").__name__ == "GligenGenerator"
    assert generator_class("multidiffusion").__name__ == "MultiDiffusionGenerator"


def test_tiny_image_matches_recorded_slice(any_generator):
    image = any_generator.generate([request_for(any_generator, TWO_PETS)])[0]
    assert image.size == (64, 64) and image.mode == "RGB"
    got = _pixels(image)[30:33, 30:33].reshape(-1)
    np.testing.assert_allclose(got, EXPECTED_SLICE[any_generator.name], atol=2)


def test_same_request_same_image(any_generator):
    first = any_generator.generate([request_for(any_generator, TWO_PETS)])[0]
    second = any_generator.generate([request_for(any_generator, TWO_PETS)])[0]
    assert np.array_equal(_pixels(first), _pixels(second))


def test_different_seeds_different_images(any_generator):
    a = any_generator.generate([request_for(any_generator, TWO_PETS, seed=1)])[0]
    b = any_generator.generate([request_for(any_generator, TWO_PETS, seed=2)])[0]
    assert np.abs(_pixels(a) - _pixels(b)).mean() > 1.0


def test_batch_equals_one_by_one(any_generator):
    requests = [request_for(any_generator, TWO_PETS, seed=7), request_for(any_generator, EMPTY, seed=8, index=1)]
    batch = any_generator.generate(requests)
    single = [any_generator.generate([r])[0] for r in requests]
    assert len(batch) == 2
    for together, alone in zip(batch, single, strict=True):
        assert np.array_equal(_pixels(together), _pixels(alone))


def test_zero_entities_generate(any_generator):
    image = any_generator.generate([request_for(any_generator, EMPTY)])[0]
    assert image.size == (64, 64)
    assert _pixels(image).std() > 0


def test_entities_change_the_image(any_generator):
    no_entities = Layout(id="two-pets", prompt=TWO_PETS.prompt, width=512, height=512)
    with_entities = any_generator.generate([request_for(any_generator, TWO_PETS)])[0]
    without = any_generator.generate([request_for(any_generator, no_entities)])[0]
    assert np.abs(_pixels(with_entities) - _pixels(without)).mean() > 0.5


def test_unknown_option_and_bad_values_rejected():
    from eligen_bench.generators.stable_diffusion.gligen import GligenGenerator
    from eligen_bench.generators.stable_diffusion.multidiffusion import MultiDiffusionGenerator

    with pytest.raises(InputError, match="unknown option"):
        GligenGenerator(profile="tiny", cfg=3)
    with pytest.raises(InputError) as info:
        GligenGenerator(profile="tiny", gligen_scheduled_sampling_beta=1.5)
    assert info.value.field == "gligen_scheduled_sampling_beta"
    with pytest.raises(InputError) as info:
        MultiDiffusionGenerator(profile="tiny", width=100)
    assert info.value.field == "width"
    with pytest.raises(InputError) as info:
        MultiDiffusionGenerator(profile="tiny", bootstrap_fraction=-0.1)
    assert info.value.field == "bootstrap_fraction"


# ---- GLIGEN ---------------------------------------------------------------------------------


def test_gligen_reference_defaults():
    from eligen_bench.generators.stable_diffusion.gligen import GligenGenerator

    full = GligenGenerator(profile="full")
    assert full.settings["model"] == "masterful/gligen-1-4-generation-text-box"
    assert (full.settings["steps"], full.settings["guidance_scale"]) == (50, 7.5)
    assert full.settings["gligen_scheduled_sampling_beta"] == 0.3
    assert (full.settings["width"], full.settings["height"]) == (512, 512)
    assert full.capabilities.max_entities == 30 and not full.capabilities.masks
    assert full.model_ids() == {"pipeline": "masterful/gligen-1-4-generation-text-box@main"}
    tiny = GligenGenerator(profile="tiny")
    assert (tiny.settings["steps"], tiny.settings["width"]) == (2, 64)
    assert int(tiny.settings["gligen_scheduled_sampling_beta"] * 2) == 1  # one grounded step


def test_gligen_more_than_30_entities_rejected(gligen):
    entities = tuple(Entity(f"thing {i}", (0.0, 0.0, 0.5, 0.5)) for i in range(31))
    crowded = Layout(id="crowd", prompt="a crowd", entities=entities)
    with pytest.raises(InputError) as info:
        gligen.adapt(crowded)
    assert info.value.field == "entities"
    with pytest.raises(InputError):
        gligen.generate([request_for(gligen, crowded)])


def test_gligen_masks_become_boxes(gligen):
    mask = np.zeros((64, 64), dtype=bool)
    mask[10:30, 5:40] = True
    layout = Layout(
        id="masked", prompt="a cat", entities=(Entity("a cat", (5 / 64, 10 / 64, 40 / 64, 30 / 64), Mask.from_array(mask)),),
        width=64, height=64,
    )
    adapted, notes = gligen.adapt(layout)
    assert adapted.entities[0].mask is None and notes


def test_gligen_zero_entities_is_plain_sd(gligen):
    """With grounding off (beta 0) the phrases never act, which is what zero entities run."""
    from eligen_bench.generators.stable_diffusion.gligen import GligenGenerator

    ungrounded = GligenGenerator(profile="tiny", device="cpu", gligen_scheduled_sampling_beta=0.0)
    ungrounded._pipe, ungrounded._loaded = gligen._pipe, True  # same weights, no second build
    plain = Layout(id="two-pets", prompt=TWO_PETS.prompt, width=512, height=512)
    zero = gligen.generate([request_for(gligen, plain)])[0]
    off = ungrounded.generate([request_for(ungrounded, TWO_PETS)])[0]
    assert np.array_equal(_pixels(zero), _pixels(off))


# ---- MultiDiffusion -------------------------------------------------------------------------


def test_multidiffusion_reference_defaults():
    from eligen_bench.api.generator import MAX_ENTITIES
    from eligen_bench.generators.stable_diffusion.multidiffusion import MultiDiffusionGenerator

    full = MultiDiffusionGenerator(profile="full")
    assert full.settings["model"] == "stabilityai/stable-diffusion-2-base"
    assert (full.settings["steps"], full.settings["guidance_scale"]) == (50, 7.5)
    assert full.bootstrap_steps == 20  # reference: --bootstrapping 20 with --steps 50
    assert full.capabilities.masks and full.capabilities.max_entities == MAX_ENTITIES  # the reference sets none
    assert MultiDiffusionGenerator(profile="tiny").bootstrap_steps == 1


def test_fusion_disjoint_regions_keep_their_own_prediction():
    import torch

    from eligen_bench.generators.stable_diffusion.multidiffusion import fuse_regions

    predictions = torch.stack([torch.full((2, 4, 4), 1.0), torch.full((2, 4, 4), 5.0), torch.full((2, 4, 4), -3.0)])
    masks = torch.zeros(3, 1, 4, 4)
    masks[0, :, :, :2] = 1  # left half
    masks[1, :, :2, 2:] = 1  # top right
    masks[2, :, 2:, 2:] = 1  # bottom right
    fused = fuse_regions(predictions, masks)
    assert fused.shape == (1, 2, 4, 4)
    assert torch.equal(fused[0, :, :, :2], torch.full((2, 4, 2), 1.0))
    assert torch.equal(fused[0, :, :2, 2:], torch.full((2, 2, 2), 5.0))
    assert torch.equal(fused[0, :, 2:, 2:], torch.full((2, 2, 2), -3.0))


def test_fusion_overlap_is_the_average_and_uncovered_is_zero():
    import torch

    from eligen_bench.generators.stable_diffusion.multidiffusion import fuse_regions

    generator = torch.Generator().manual_seed(0)
    predictions = torch.randn(3, 4, 3, 3, generator=generator)
    masks = torch.zeros(3, 1, 3, 3)
    masks[:, :, 0, 0] = 1  # all three regions
    masks[1:, :, 1, 1] = 1  # regions 1 and 2
    fused = fuse_regions(predictions, masks)[0]
    torch.testing.assert_close(fused[:, 0, 0], predictions[:, :, 0, 0].mean(dim=0))
    torch.testing.assert_close(fused[:, 1, 1], predictions[1:, :, 1, 1].mean(dim=0))
    assert torch.equal(fused[:, 2, 2], torch.zeros(4))


def test_region_masks_background_is_the_complement():
    from eligen_bench.generators.stable_diffusion.multidiffusion import region_masks

    masks = region_masks(TWO_PETS, 8, 8)
    assert masks.shape == (3, 8, 8)
    entities = masks[1:].sum(axis=0)
    assert np.array_equal(masks[0], np.clip(1 - entities, 0, None))
    assert masks.sum(axis=0).min() >= 1.0  # every pixel is covered by some region
    full = region_masks(TWO_PETS, 8, 8, background="full")
    assert np.array_equal(full[0], np.ones((8, 8), dtype=np.float32))
    assert region_masks(EMPTY, 8, 8).shape == (1, 8, 8)


def test_multidiffusion_takes_masks(multidiffusion):
    mask = np.zeros((64, 64), dtype=bool)
    mask[8:40, 8:24] = True
    mask[24:40, 24:56] = True  # an L shape: its box covers more than the mask
    layout = Layout(
        id="l-shape", prompt="a garden", entities=(Entity("a snake", (8 / 64, 8 / 64, 56 / 64, 40 / 64), Mask.from_array(mask)),),
        width=64, height=64,
    )
    adapted, notes = multidiffusion.adapt(layout)
    assert adapted.entities[0].mask is not None and not notes
    boxed = Layout(id="l-shape", prompt="a garden", entities=(Entity("a snake", layout.entities[0].bbox),), width=64, height=64)
    with_mask = multidiffusion.generate([request_for(multidiffusion, adapted)])[0]
    with_box = multidiffusion.generate([request_for(multidiffusion, boxed)])[0]
    assert np.abs(_pixels(with_mask) - _pixels(with_box)).mean() > 0.5


# ---- real weights ---------------------------------------------------------------------------


@pytest.mark.weights
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["gligen", "multidiffusion"])
def test_real_weights_generate(name):
    from eligen_bench.registry import generator_class

    generator = generator_class(name)(profile="full", device="cuda")
    try:
        images = generator.generate([request_for(generator, TWO_PETS), request_for(generator, EMPTY, index=1)])
        assert [im.size for im in images] == [(512, 512), (512, 512)]
        assert all(_pixels(im).std() > 5 for im in images)
    finally:
        generator.close()
