"""Regional attention (EliGen Eq. 9-13): fast path and reference vs Eq. 13 written out in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eligen_bench.errors import InputError
from eligen_bench.generators.flux.attention import (
    additive_mask,
    allowed_fraction,
    build_plan,
    dense_mask,
    latent_token_masks,
    reference_attention,
    regional_attention,
)

GRID = 8  # latent tokens per side in the small tests
METHODS = ("auto", "merge", "groups")


def eq13(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + log M) V in float64, by hand."""
    q, k, v = q.double(), k.double(), v.double()
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + torch.log(allowed.double())
    weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return (weights / weights.sum(dim=-1, keepdim=True)) @ v


def irregular_masks(count: int) -> list[np.ndarray]:
    """Overlapping, non-rectangular masks on the GRID x GRID token grid."""
    yy, xx = np.mgrid[:GRID, :GRID]
    shapes = [
        (yy - 3) ** 2 + (xx - 3) ** 2 <= 7,  # disc
        (xx >= 4) | (yy >= 6),  # L shape, overlaps the disc
        ((yy + xx) % 3 == 0) & (yy < 5),  # scattered stripes
        (np.abs(yy - 4) + np.abs(xx - 5) == 2),  # diamond outline (a ring)
    ]
    return shapes[:count]


def small_plan(count: int, lengths: tuple[int, ...] = (5, 3, 7, 4, 6)):
    masks = torch.from_numpy(np.stack(irregular_masks(count)).reshape(count, -1)) if count else None
    if masks is None:
        masks = torch.zeros((0, GRID * GRID), dtype=torch.bool)
    return build_plan(lengths[: count + 1], masks)


def qkv(plan, batch: int = 2, heads: int = 3, dim: int = 16, dtype=torch.float32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn((batch, heads, plan.length, dim), generator=generator).to(dtype)
        for _ in range(3)
    )


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("method", METHODS)
def test_fast_path_matches_eq13(count: int, method: str) -> None:
    plan = small_plan(count)
    q, k, v = qkv(plan)
    out = regional_attention(q, k, v, plan, method=method)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert relative_error(out, eq13(q, k, v, dense_mask(plan))) < 1e-5


@pytest.mark.parametrize("count", [0, 2, 4])
def test_reference_matches_eq13(count: int) -> None:
    plan = small_plan(count)
    q, k, v = qkv(plan, batch=1, heads=2)
    expected = eq13(q, k, v, dense_mask(plan))
    assert relative_error(reference_attention(q, k, v, plan), expected) < 1e-5
    mask = additive_mask(plan, q.dtype, q.device)
    assert mask.dtype == torch.float32 and mask.shape == (plan.length, plan.length)
    assert torch.equal(mask == 0, dense_mask(plan))
    assert relative_error(reference_attention(q, k, v, plan, mask=mask), expected) < 1e-5


def test_zero_entities_is_plain_sdpa_bit_for_bit() -> None:
    plan = small_plan(0)
    q, k, v = qkv(plan)
    assert torch.equal(regional_attention(q, k, v, plan), F.scaled_dot_product_attention(q, k, v))


def test_dense_mask_composition() -> None:
    plan = small_plan(2, lengths=(2, 3, 4))
    m, p = dense_mask(plan), plan.n_prompt
    g, e1, e2 = plan.prompt_slice(0), plan.prompt_slice(1), plan.prompt_slice(2)
    region1, region2 = plan.entity_masks
    assert m[p:, p:].all()  # Eq. 12
    for s in (g, e1, e2):
        assert m[s, s].all()  # Eq. 11
    assert (
        not m[e1, e2].any() and not m[e2, e1].any() and not m[g, e1].any() and not m[e2, g].any()
    )  # Eq. 10
    assert m[g, p:].all() and m[p:, g].all()  # the global prompt is an all-image entity
    assert torch.equal(m[e1, p:], region1.expand(3, -1)) and torch.equal(
        m[p:, e1], region1[:, None].expand(-1, 3)
    )
    assert torch.equal(m[e2, p:], region2.expand(4, -1)) and torch.equal(
        m[p:, e2], region2[:, None].expand(-1, 4)
    )
    assert m.any(dim=1).all()  # no row without a key
    assert allowed_fraction(plan) == pytest.approx(float(m.double().mean()))


@pytest.mark.parametrize("method", METHODS)
def test_entities_do_not_leak(method: str) -> None:
    """Changing entity j's prompt K/V leaves entity i's prompt rows (and latents outside j) as they were."""
    plan = small_plan(3)
    q, k, v = qkv(plan)
    before = regional_attention(q, k, v, plan, method=method)
    j = plan.prompt_slice(2)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, j] += 3.0
    v2[:, :, j] = torch.randn_like(v2[:, :, j])
    after = regional_attention(q, k2, v2, plan, method=method)
    for i in (0, 1, 3):
        rows = plan.prompt_slice(i)
        assert torch.equal(before[:, :, rows], after[:, :, rows])
    outside = plan.n_prompt + (~plan.entity_masks[1]).nonzero().flatten()
    assert torch.allclose(before[:, :, outside], after[:, :, outside], atol=1e-6)
    inside = plan.n_prompt + plan.entity_masks[1].nonzero().flatten()
    assert not torch.allclose(before[:, :, inside], after[:, :, inside], atol=1e-3)


def tokens_of(*masks: np.ndarray) -> torch.Tensor:
    """Token masks of masks drawn directly on the 2 x GRID pixel grid (vae_scale 1, patch 2)."""
    return latent_token_masks(list(masks), 2 * GRID, 2 * GRID, vae_scale=1, patch=2)


@pytest.mark.parametrize("method", METHODS)
def test_masks_of_every_shape(method: str) -> None:
    side = 2 * GRID
    empty = np.zeros((side, side), dtype=bool)
    full = np.ones((side, side), dtype=bool)
    pixel = empty.copy()
    pixel[5, 9] = True
    yy, xx = np.mgrid[:side, :side]
    ring = ((yy - 8) ** 2 + (xx - 8) ** 2 >= 9) & ((yy - 8) ** 2 + (xx - 8) ** 2 <= 36)
    tokens = tokens_of(empty, full, pixel, ring)
    assert tokens.sum(dim=1).tolist()[:3] == [0, GRID * GRID, 1]
    plan = build_plan((4, 3, 5, 2, 6), tokens)
    assert plan.empty_entities == (0,)
    q, k, v = qkv(plan, dim=8)
    out = regional_attention(q, k, v, plan, method=method)
    assert torch.isfinite(out).all()
    assert relative_error(out, eq13(q, k, v, dense_mask(plan))) < 1e-5
    # the empty entity's prompt attends only to itself, and no latent sees it
    own = plan.prompt_slice(1)
    alone = F.scaled_dot_product_attention(q[:, :, own], k[:, :, own], v[:, :, own])
    assert torch.allclose(out[:, :, own], alone, atol=1e-6)
    assert not dense_mask(plan)[plan.n_prompt :, own].any()
    assert torch.isfinite(reference_attention(q, k, v, plan)).all()


def test_all_entities_empty() -> None:
    plan = build_plan((3, 2, 2), torch.zeros((2, 16), dtype=torch.bool))
    q, k, v = qkv(plan, dim=8)
    for method in METHODS:
        out = regional_attention(q, k, v, plan, method=method)
        assert relative_error(out, eq13(q, k, v, dense_mask(plan))) < 1e-5


def test_float64_inputs() -> None:
    plan = small_plan(2)
    q, k, v = qkv(plan, dtype=torch.float64)
    for method in METHODS:
        out = regional_attention(q, k, v, plan, method=method)
        assert out.dtype == torch.float64
        assert relative_error(out, eq13(q, k, v, dense_mask(plan))) < 1e-10


def test_bfloat16_close_to_eq13() -> None:
    plan = small_plan(3)
    q, k, v = qkv(plan, dtype=torch.bfloat16)
    out = regional_attention(q, k, v, plan)
    assert out.dtype == torch.bfloat16
    assert relative_error(out, eq13(q, k, v, dense_mask(plan))) < 2e-2


def test_latent_token_masks_rule() -> None:
    # 32x32 image, vae 8, patch 2: a 4x4 latent grid, 2x2 tokens; nearest samples pixel 8j+4
    mask = np.zeros((32, 32), dtype=bool)
    mask[12, 20] = True  # latent cell (1, 2) -> token (0, 1)
    corner = np.zeros((32, 32), dtype=bool)
    corner[0, 0] = True  # not a sampled pixel: vanishes
    bottom = np.zeros((32, 32), dtype=bool)
    bottom[16:, :16] = True  # lower-left quarter -> token (1, 0)
    out = latent_token_masks([mask, corner, torch.from_numpy(bottom)], 32, 32)
    assert out.dtype == torch.bool and out.shape == (3, 4)
    assert out.tolist() == [[False, True, False, False], [False] * 4, [False, False, True, False]]


def test_latent_token_masks_any_pixel_and_row_major() -> None:
    # a mask already at latent size (4 rows x 8 columns) of a 32 x 64 image: no resize, only the max-pool
    mask = np.zeros((4, 8), dtype=bool)
    mask[3, 7] = True  # one cell -> its token (1, 3)
    mask[0, 2] = True  # -> token (0, 1)
    out = latent_token_masks([mask], height=32, width=64)
    assert out.shape == (1, 8)
    assert out[0].nonzero().flatten().tolist() == [1, 7]
    # any size: a 3x3 mask of ones covers everything, a non-multiple-of-16 size is floored
    assert latent_token_masks([np.ones((3, 3))], 40, 40).tolist() == [[True] * 4]


def test_latent_token_masks_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="entity 0"):
        latent_token_masks([np.zeros((2, 2, 3))], 32, 32)
    with pytest.raises(InputError, match="smaller than one"):
        latent_token_masks([np.ones((8, 8))], 8, 8)


def test_build_plan_validates() -> None:
    with pytest.raises(InputError, match="2 masks for 1 entity"):
        build_plan((4, 4), torch.zeros((2, 16), dtype=torch.bool))
    with pytest.raises(InputError, match="prompt 1"):
        build_plan((4, 0), torch.zeros((1, 16), dtype=torch.bool))
    with pytest.raises(InputError, match="2-D"):
        build_plan((4,), torch.zeros(16, dtype=torch.bool))
    plan = small_plan(2)
    q, k, v = qkv(plan)
    with pytest.raises(InputError, match="plan length"):
        regional_attention(q[:, :, 1:], k[:, :, 1:], v[:, :, 1:], plan)
    with pytest.raises(InputError, match="unknown method"):
        regional_attention(q, k, v, plan, method="sparse")


def test_plan_properties() -> None:
    plan = small_plan(3, lengths=(5, 3, 7, 4))
    assert (plan.n_prompt, plan.n_latent, plan.num_entities) == (19, GRID * GRID, 3)
    assert plan.length == 19 + GRID * GRID
    assert plan.prompt_offsets == (0, 5, 8, 15)
    covered = torch.zeros_like(plan.entity_masks[0], dtype=torch.long)
    for entities, rows in zip(plan.group_entities, plan.group_latents, strict=True):
        covered[rows] += 1
        for row in rows.tolist():
            assert tuple(plan.entity_masks[:, row].nonzero().flatten().tolist()) == entities
    assert (covered == 1).all()  # the groups partition the latent rows
    assert plan.to("cpu").entity_masks.device.type == "cpu"
