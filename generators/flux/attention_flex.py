"""Regional attention masks computed block-sparsely with FlexAttention.

Both regional masks of this project reduce to one rule over small per-token bitmasks:
``allowed(q, k) = (query_bits[q] & key_bits[k]) != 0``.

* EliGen (Eq. 9-12): prompt i's tokens carry bit i (0 = global prompt); a latent carries bit 0
  (every latent sees the global prompt and every other latent) and bit i for each entity i
  covering it. Prompt i then sees its own tokens and the latents of its region, never another
  prompt; a latent sees the prompts covering it and all latents.
* Regional Prompting FLUX: prompt i carries bit i, a latent the bits of the regions covering
  it, and latents no region covers one extra bit, so latents see latents sharing a region
  (or sharing none). Its base element (batch element 1) lets every query see every real key:
  query bits all 1, key bits 0 on the padding of the base prompt.

FlexAttention turns the rule into a block mask (which blocks of 128 x 128 pairs are empty,
full or partial) and skips the empty blocks. The block mask is built once per layout, device,
length and block size and cached on the `FlexLayout`, so a generation builds it once and all
blocks and steps share it. The mask function reads only the two (B, L) bit tensors, never an
L x L one.

Token order: with ``order="sorted"`` the sequence is permuted so that tokens with equal bits
sit next to each other (latents grouped by the set of entities covering them), which makes
more blocks entirely empty or entirely full; q, k and v are gathered in that order and the
output is scattered back, so the result is the same function.

On CUDA the kernel is ``torch.compile(flex_attention)``, created on first use; elsewhere the
eager implementation runs (correct, not fast: it materialises the scores).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eligen_bench.errors import InputError

if TYPE_CHECKING:
    import torch

    from eligen_bench.generators.flux.attention import RegionalPlan

ORDERS = ("sequence", "sorted")
"""Token orders of the kernel: the sequence's own, or tokens grouped by equal bits."""
BLOCK_SIZE = 128
"""FlexAttention's default block; 128 x 128 query-key pairs are skipped or computed together."""
MAX_BITS = 63
"""Bits of the int64 masks usable without touching the sign bit."""


@dataclass(frozen=True, eq=False)
class FlexLayout:
    """Per-token bitmasks of one mask, with the block masks built from them (cached)."""

    query_bits: torch.Tensor
    """int64 (B, L), B = 1 (shared by the batch) or the batch size."""
    key_bits: torch.Tensor
    """int64 (B, L), same shape as `query_bits`."""
    order: torch.Tensor | None = None
    """Kernel position -> sequence position (a permutation), or None for the sequence order."""
    block_masks: dict[tuple[str, int, int], Any] = field(default_factory=dict, repr=False)
    """Built block masks by (device, length, block size)."""

    @property
    def length(self) -> int:
        """Sequence length L."""
        return int(self.query_bits.shape[1])

    def block_mask(self, device: torch.device, block_size: int = BLOCK_SIZE) -> Any:
        """The FlexAttention block mask on `device`, built on first request and kept."""
        key = (str(device), self.length, block_size)
        if key not in self.block_masks:
            self.block_masks[key] = self._build(device, block_size)
        return self.block_masks[key]

    def _build(self, device: torch.device, block_size: int) -> Any:
        create_block_mask = _flex_api()[1]
        query_bits, key_bits = self.query_bits.to(device), self.key_bits.to(device)
        if self.order is not None:
            order = self.order.to(device)
            query_bits, key_bits = query_bits[:, order], key_bits[:, order]

        batch = None if query_bits.shape[0] == 1 else int(query_bits.shape[0])
        if batch is None:  # shared by the batch: the kernel may still pass any batch index
            query_bits, key_bits = query_bits[0], key_bits[0]

            def allowed(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
                return (query_bits[q_idx] & key_bits[kv_idx]) != 0
        else:

            def allowed(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
                return (query_bits[b, q_idx] & key_bits[b, kv_idx]) != 0

        return create_block_mask(
            allowed, batch, None, self.length, self.length, device=device, BLOCK_SIZE=block_size
        )


def flex_available() -> bool:
    """Whether this torch has FlexAttention."""
    try:
        _flex_api()
    except InputError:
        return False
    return True


def _flex_api() -> tuple[Callable[..., Any], Callable[..., Any]]:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError as error:
        raise InputError(
            f"FlexAttention is not in this torch ({error}); choose another method", field="method"
        ) from error
    return flex_attention, create_block_mask


@functools.cache
def _compiled_flex() -> Callable[..., Any]:
    """``torch.compile(flex_attention)``, made once per process on first use (never at import)."""
    import torch

    # one graph per shape: the entity counts of a run are few, and dynamic shapes slow the kernel
    return torch.compile(_flex_api()[0], dynamic=False)


def _kernel(device: torch.device) -> Callable[..., Any]:
    if device.type == "cuda":
        return _compiled_flex()
    eager = _flex_api()[0]

    def run(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            # the eager path warns that it is unfused; on CPU that is the intended use
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            return eager(*args, **kwargs)

    return run


def flex_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: FlexLayout, block_size: int = BLOCK_SIZE
) -> torch.Tensor:
    """Attention of (B, heads, L, head_dim) q, k, v under `layout`'s mask; same shape and dtype as q."""
    if q.shape[2] != layout.length:
        raise InputError(f"sequence length {q.shape[2]} != mask length {layout.length}", field="qkv")
    block_mask = layout.block_mask(q.device, block_size)
    if layout.order is None:
        return _kernel(q.device)(q, k, v, block_mask=block_mask)
    order = layout.order.to(q.device)
    out = _kernel(q.device)(
        q.index_select(2, order), k.index_select(2, order), v.index_select(2, order),
        block_mask=block_mask,
    )  # fmt: skip
    return out.index_select(2, _inverse(order))


def _inverse(order: torch.Tensor) -> torch.Tensor:
    import torch

    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return inverse


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise InputError(f"unknown token order {order!r}; choose one of {ORDERS}", field="token_order")


def _sorted(bits: torch.Tensor) -> torch.Tensor:
    """Positions sorted by bit pattern (stable): equal patterns become contiguous runs."""
    import torch

    return torch.argsort(bits, stable=True)


def eligen_bits(plan: RegionalPlan) -> torch.Tensor:
    """int64 (L,) bits of EliGen's mask: prompt i -> bit i; a latent -> bit 0 and its entities' bits."""
    import torch

    k = plan.num_entities
    if k + 1 > MAX_BITS:
        raise InputError(f"{k} entities; the flex method takes at most {MAX_BITS - 1}", field="method")
    device = plan.entity_masks.device
    prompt = torch.cat(
        [torch.full((n,), 1 << i, dtype=torch.long, device=device) for i, n in enumerate(plan.prompt_lengths)]
    )
    weights = torch.tensor([1 << (i + 1) for i in range(k)], dtype=torch.long, device=device)
    latent = 1 + (plan.entity_masks.long() * weights[:, None]).sum(0)
    return torch.cat([prompt, latent])


def eligen_layout(plan: RegionalPlan, order: str = "sequence") -> FlexLayout:
    """EliGen's mask of `plan` as a `FlexLayout`, cached on the plan (one per token order)."""
    _check_order(order)
    key = ("flex", order)
    if key not in plan.cache:
        bits = eligen_bits(plan)[None]
        plan.cache[key] = FlexLayout(bits, bits, _sorted(bits[0]) if order == "sorted" else None)
    return plan.cache[key]


def prompting_bits(prompt_lengths: Sequence[int], region_masks: torch.Tensor) -> torch.Tensor:
    """int64 (L,) bits of Regional Prompting FLUX's mask over ``[prompt 1; ...; prompt n; latents]``.

    Prompt i -> bit i; a latent -> the bits of the regions covering it; latents no region
    covers share bit n (they see each other, the reference's background term).
    """
    import torch

    lengths = [int(n) for n in prompt_lengths]
    n = len(lengths)
    if n + 1 > MAX_BITS:
        raise InputError(f"{n} regional prompts; the flex method takes at most {MAX_BITS - 1}", field="method")
    regions = region_masks.to(torch.bool)
    device = regions.device
    prompt = torch.cat([torch.full((m,), 1 << i, dtype=torch.long, device=device) for i, m in enumerate(lengths)])
    weights = torch.tensor([1 << i for i in range(n)], dtype=torch.long, device=device)
    latent = (regions.long() * weights[:, None]).sum(0)
    latent = torch.where(latent == 0, torch.full_like(latent, 1 << n), latent)
    return torch.cat([prompt, latent])


def prompting_layout(
    token_bits: torch.Tensor,
    base_length: int,
    text_length: int,
    *,
    regional: bool,
    order: str = "sequence",
    cache: dict[Any, Any],
) -> FlexLayout:
    """The batch-of-two layout of Regional Prompting FLUX, cached in `cache`.

    Element 0 has the regional mask (`regional`) or none (blocks past the injection
    interval); element 1 is the base prompt: every query sees every key but the padding
    ``[base_length, text_length)``.
    """
    import torch

    _check_order(order)
    key = ("flex", regional, order)
    if key not in cache:
        bits = token_bits.long()
        ones = torch.ones_like(bits)
        base_keys = ones.clone()
        base_keys[base_length:text_length] = 0  # padding is no key
        first = bits if regional else ones
        cache[key] = FlexLayout(
            torch.stack([first, ones]), torch.stack([first, base_keys]),
            _sorted(bits) if order == "sorted" else None,
        )  # fmt: skip
    return cache[key]
