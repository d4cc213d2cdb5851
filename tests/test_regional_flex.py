"""FlexAttention path of the regional masks (EliGen, Regional Prompting FLUX) vs float64 dense SDPA.

FlexAttention runs eagerly on CPU, so the block-sparse path is checked here on small shapes:
irregular, overlapping, empty (an entity with zero tokens) and full masks, in both token orders.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eligen_bench.errors import InputError
from eligen_bench.generators.flux import attention_flex as regional_flex
from eligen_bench.generators.flux.attention import (
    auto_method,
    build_plan,
    dense_mask,
    reference_attention,
    regional_attention,
)
from eligen_bench.generators.flux.attention_flex import (
    eligen_bits,
    eligen_layout,
    flex_attention,
    prompting_bits,
    prompting_layout,
)
from eligen_bench.generators.flux.regional import (
    RegionalProcessor,
    RegionalPromptingControl,
    prompting_method,
    regional_prompting_mask,
)

GRID = 8  # latent tokens per side


def masks_for(case: str) -> torch.Tensor:
    """Bool (k, GRID * GRID) token masks for one named case."""
    yy, xx = np.mgrid[:GRID, :GRID]
    disc = (yy - 3) ** 2 + (xx - 3) ** 2 <= 7
    ell = (xx >= 4) | (yy >= 6)  # overlaps the disc
    stripes = ((yy + xx) % 3 == 0) & (yy < 5)
    cases = {
        "irregular": [disc, stripes],
        "overlapping": [disc, ell, stripes],
        "empty": [disc, np.zeros_like(disc), ell],  # the middle entity has zero tokens
        "full": [np.ones_like(disc), disc],  # one entity covers the whole image
    }
    return torch.from_numpy(np.stack(cases[case]).reshape(len(cases[case]), -1))


def plan_for(case: str):
    masks = masks_for(case)
    lengths = (5, 3, 7, 4)[: masks.shape[0] + 1]
    return build_plan(lengths, masks)


def qkv(length: int, batch: int = 2, heads: int = 2, dim: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn((batch, heads, length, dim), generator=generator, dtype=torch.float64) for _ in range(3))


def dense64(q, k, v, allowed: torch.Tensor) -> torch.Tensor:
    """The reference: SDPA in float64 with the dense bool mask (batch-broadcast or per element)."""
    return F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=allowed)


CASES = ("irregular", "overlapping", "empty", "full")


@pytest.mark.parametrize("case", CASES)
def test_eligen_bits_give_the_dense_mask(case: str) -> None:
    plan = plan_for(case)
    bits = eligen_bits(plan)
    assert torch.equal((bits[:, None] & bits[None, :]) != 0, dense_mask(plan))


@pytest.mark.parametrize("order", regional_flex.ORDERS)
@pytest.mark.parametrize("case", CASES)
def test_flex_matches_float64_dense(case: str, order: str) -> None:
    plan = plan_for(case)
    q, k, v = qkv(plan.length)
    out = regional_attention(q, k, v, plan, method="flex", token_order=order)
    assert out.shape == q.shape and out.dtype == q.dtype
    torch.testing.assert_close(out, dense64(q, k, v, dense_mask(plan)), rtol=1e-10, atol=1e-10)


def test_flex_in_float32_and_small_blocks() -> None:
    plan = plan_for("overlapping")
    q, k, v = (t.float() for t in qkv(plan.length))
    expected = dense64(q, k, v, dense_mask(plan))
    out = flex_attention(q, k, v, eligen_layout(plan, "sorted"), block_size=16)  # many partial blocks
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_dense_method_is_the_reference_with_the_mask_built_once() -> None:
    plan = plan_for("irregular")
    q, k, v = qkv(plan.length)
    out = regional_attention(q, k, v, plan, method="dense")
    assert torch.equal(out, reference_attention(q, k, v, plan))
    masks = [value for key, value in plan.cache.items() if key[0] == "dense"]
    regional_attention(q, k, v, plan, method="dense")
    assert len(masks) == 1 and [value for key, value in plan.cache.items() if key[0] == "dense"] == masks


def test_block_mask_built_once_per_plan_and_device(monkeypatch) -> None:
    plan = plan_for("overlapping")
    q, k, v = qkv(plan.length)
    builds = []
    original = regional_flex.FlexLayout._build

    def counting(self, device, block_size):
        builds.append((str(device), block_size))
        return original(self, device, block_size)

    monkeypatch.setattr(regional_flex.FlexLayout, "_build", counting)
    for _ in range(3):  # e.g. three blocks or steps
        regional_attention(q, k, v, plan, method="flex")
    regional_attention(q, k, v, plan.to("cpu"), method="flex")  # a moved plan shares the cache
    assert builds == [("cpu", regional_flex.BLOCK_SIZE)]


def test_sorted_order_groups_equal_patterns() -> None:
    plan = plan_for("overlapping")
    layout = eligen_layout(plan, "sorted")
    bits = eligen_bits(plan)[layout.order]
    assert torch.equal(torch.sort(layout.order).values, torch.arange(plan.length))
    runs = torch.unique_consecutive(bits).numel()
    assert runs == torch.unique(bits).numel()  # each pattern is one contiguous run


def test_prompting_bits_give_the_dense_mask() -> None:
    masks = masks_for("overlapping")[:2]  # leaves latents no region covers (the background)
    lengths = [4, 6]
    bits = prompting_bits(lengths, masks)
    assert torch.equal((bits[:, None] & bits[None, :]) != 0, regional_prompting_mask(lengths, masks))


def _prompting_control(method: str, order: str = "sequence") -> RegionalPromptingControl:
    masks = torch.cat([masks_for("overlapping")[:2], masks_for("empty")[1:2]])
    lengths = [4, 4, 4]
    return RegionalPromptingControl(
        mask=regional_prompting_mask(lengths, masks), text_length=12, base_length=3, base_ratio=0.3,
        double_interval=2, method=method, token_bits=prompting_bits(lengths, masks), token_order=order,
    )  # fmt: skip


@pytest.mark.parametrize("order", regional_flex.ORDERS)
@pytest.mark.parametrize("index", [0, 1])  # block 1 of interval 2 applies no regional mask
def test_prompting_flex_matches_dense(order: str, index: int) -> None:
    flex_control, dense_control = _prompting_control("flex", order), _prompting_control("dense")
    processor = RegionalProcessor("double", index)
    q, k, v = qkv(12 + GRID * GRID)
    out = processor._prompting(q, k, v, flex_control)
    expected = processor._prompting(q, k, v, dense_control)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    layout = prompting_layout(
        flex_control.token_bits, 3, 12, regional=index == 0, order=order, cache=flex_control.cache
    )
    assert layout.block_masks  # built by the call above, reused from the control's cache


def test_auto_picks_per_device() -> None:
    cpu = torch.zeros(1, 1, 1, 1)
    assert auto_method(cpu) == "merge"
    cuda = SimpleNamespace(device=torch.device("cuda"), requires_grad=False)
    assert auto_method(cuda) == "flex"
    assert auto_method(torch.zeros(1, 1, 1, 1, device="meta")) == "groups"
    assert prompting_method(_prompting_control("auto"), torch.device("cuda")) == "flex"
    assert prompting_method(_prompting_control("auto"), torch.device("cpu")) == "dense"


def test_bad_methods_are_one_line_errors(monkeypatch) -> None:
    plan = plan_for("irregular")
    q, k, v = qkv(plan.length)
    with pytest.raises(InputError, match="unknown token order"):
        regional_attention(q, k, v, plan, method="flex", token_order="random")
    meta = [t.to("meta") for t in (q, k, v)]
    with pytest.raises(InputError, match="'merge' needs"):
        regional_attention(*meta, plan, method="merge")
    with pytest.raises(InputError, match="unknown method"):
        prompting_method(_prompting_control("groups"), torch.device("cpu"))
    no_bits = RegionalPromptingControl(torch.ones(3, 3, dtype=torch.bool), 1, 1, 0.3, method="flex")
    with pytest.raises(InputError, match="token_bits"):
        prompting_method(no_bits, torch.device("cpu"))
    monkeypatch.setitem(sys.modules, "torch.nn.attention.flex_attention", None)  # a torch without it
    with pytest.raises(InputError, match="FlexAttention is not in this torch"):
        regional_attention(q, k, v, build_plan((5, 3, 7), masks_for("irregular")), method="flex")
    assert auto_method(SimpleNamespace(device=torch.device("cuda"), requires_grad=False)) == "groups"
