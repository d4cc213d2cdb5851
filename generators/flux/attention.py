"""Regional attention of EliGen (paper Sec. 3.2, Eq. 3-13) without a dense mask.

The joint sequence of FLUX is ``[global prompt; entity-1 prompt; ...; entity-k prompt;
latents]`` (diffusers puts the text tokens before the image tokens). The attention mask M of
the paper allows:

* entity i's prompt <-> the latent tokens inside entity i's mask, both ways (Eq. 9);
* the global prompt <-> every latent token, both ways (the global prompt is an entity whose
  mask is the whole image);
* every prompt -> its own tokens (Eq. 11), and no prompt -> another prompt (Eq. 10);
* every latent token -> every latent token (Eq. 12).

and Eq. 13 is ``softmax(Q K^T / sqrt(d) + log M) V``.

`reference_attention` does what DiffSynth-Studio does: it builds the (L, L) additive float
mask and hands it to ``scaled_dot_product_attention``. At 1024x1024 with 8 entities L is
8704 and the mask alone is 300 MB (built once per forward pass and shared by the blocks);
the masked pairs (about 60 % of them with 8 box-sized entities) are still computed. `regional_attention` never builds an L x L mask and computes only allowed pairs:

* the global prompt's rows and every latent row attend to ``[global prompt; latents]``, which
  all of them may see: one unmasked attention call (its keys gathered from two slices);
* each entity's prompt rows attend to ``[own tokens; latents in its mask]``: one call each;
* the latent rows an entity covers also see that entity's prompt: a small attention of those
  rows against the entity's tokens, merged into the first result through the log-sum-exp of
  both parts (the softmax over a union of disjoint key sets is the weighted sum of the
  softmaxes over each set, weighted by ``exp(lse_part - lse_union)``), all entities in one
  vectorised pass.

`benchmarks/regional_attention.py` times it against the reference at the FLUX 1024x1024 shape.

The merge needs the log-sum-exp of the big call. On CPU torch's flash kernel returns it
(``aten._scaled_dot_product_flash_attention_for_cpu``, which is also what the public
``scaled_dot_product_attention`` calls there). Where it is missing (other devices, other torch
versions) the latent rows are grouped by the set of entities covering them and each group is
one public ``scaled_dot_product_attention`` call against the keys that group may see,
concatenated from contiguous slices. Both paths compute the same function.

An entity whose token mask is empty (a mask that vanished when resized to the latent grid)
is allowed: its prompt then attends only to itself and no latent sees it, exactly what the
dense mask of the reference gives. `RegionalPlan.empty_entities` lists such entities, so a
generator can record that they had no effect. No row of the mask is ever empty (every prompt
sees its own tokens, every latent sees all latents), so no output is NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eligen_bench.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import torch

METHODS = ("auto", "flex", "merge", "groups", "dense")
"""Ways `regional_attention` can compute the same result; "auto" picks the fastest measured
for the device (see `auto_method`)."""


@dataclass(frozen=True, eq=False)
class RegionalPlan:
    """The regional-attention layout of one joint sequence, with the index sets the fast path uses.

    Build it with `build_plan` once per generation (the masks do not change between steps or
    layers) and pass it to every attention call.
    """

    prompt_lengths: tuple[int, ...]
    """Tokens of [global prompt, entity 1, ..., entity k], in sequence order."""
    entity_masks: torch.Tensor
    """Bool (k, n_latent): the latent tokens each entity covers (row-major packed latents)."""
    prompt_offsets: tuple[int, ...]
    """Index of the first token of each prompt in the joint sequence (k + 1 entries)."""
    entity_latents: tuple[torch.Tensor, ...]
    """Per entity, the int64 latent indices (0-based within the latents) its mask covers."""
    group_entities: tuple[tuple[int, ...], ...]
    """Groups of latent rows with the same covering entities: each group's entity indices (0-based)."""
    group_latents: tuple[torch.Tensor, ...]
    """Per group, the int64 latent indices (0-based within the latents) of its rows."""
    base_keys: torch.Tensor
    """Sequence positions of [global prompt; all latents]: what the global prompt and every latent see."""
    entity_keys: tuple[torch.Tensor, ...]
    """Per entity, the sequence positions its prompt rows see: its own tokens, then its latents."""
    covered_latents: torch.Tensor
    """`entity_latents` concatenated in entity order (a latent repeats once per covering entity)."""
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    """Masks derived from the plan, built on first use and shared by every block and step
    (the flex block masks, the dense additive mask); keys name their device."""

    @property
    def n_prompt(self) -> int:
        """Prompt tokens of all prompts together (the latents start here)."""
        return sum(self.prompt_lengths)

    @property
    def n_latent(self) -> int:
        """Latent (image) tokens."""
        return int(self.entity_masks.shape[1])

    @property
    def length(self) -> int:
        """Length L of the joint sequence."""
        return self.n_prompt + self.n_latent

    @property
    def num_entities(self) -> int:
        """Entities k (the global prompt is not counted)."""
        return len(self.prompt_lengths) - 1

    @property
    def empty_entities(self) -> tuple[int, ...]:
        """0-based indices of entities whose token mask is empty: their prompts see only themselves."""
        return tuple(i for i, rows in enumerate(self.entity_latents) if rows.numel() == 0)

    def prompt_slice(self, index: int) -> slice:
        """Sequence positions of prompt `index` (0 = global, i = entity i)."""
        start = self.prompt_offsets[index]
        return slice(start, start + self.prompt_lengths[index])

    def to(self, device: torch.device | str) -> RegionalPlan:
        """The same plan with its tensors on `device` (do it once, not per attention call)."""
        return RegionalPlan(
            prompt_lengths=self.prompt_lengths,
            entity_masks=self.entity_masks.to(device),
            prompt_offsets=self.prompt_offsets,
            entity_latents=tuple(t.to(device) for t in self.entity_latents),
            group_entities=self.group_entities,
            group_latents=tuple(t.to(device) for t in self.group_latents),
            base_keys=self.base_keys.to(device),
            entity_keys=tuple(t.to(device) for t in self.entity_keys),
            covered_latents=self.covered_latents.to(device),
            cache=self.cache,  # its entries are keyed by device, so both plans can share them
        )


def build_plan(prompt_lengths: Sequence[int], entity_masks: torch.Tensor) -> RegionalPlan:
    """Check the inputs and precompute the index sets of `regional_attention`.

    `prompt_lengths` holds k + 1 positive token counts (global prompt first); `entity_masks`
    is a bool (k, n_latent) tensor, e.g. from `latent_token_masks`. With no entities pass a
    (0, n_latent) tensor.
    """
    import torch

    lengths = _check_lengths(prompt_lengths)
    if not isinstance(entity_masks, torch.Tensor) or entity_masks.ndim != 2:
        raise InputError("must be a 2-D tensor (entities, latent tokens)", field="entity_masks")
    masks = entity_masks.to(torch.bool)
    if masks.shape[0] != len(lengths) - 1:
        raise InputError(
            f"{masks.shape[0]} masks for {len(lengths) - 1} entity prompts", field="entity_masks"
        )
    if masks.shape[1] < 1:
        raise InputError("no latent tokens", field="entity_masks")
    offsets = tuple(sum(lengths[:i]) for i in range(len(lengths)))
    entity_latents = tuple(row.nonzero().flatten() for row in masks)
    group_entities, group_latents = _latent_groups(masks)
    p, device = sum(lengths), masks.device
    base_keys = torch.cat(
        [
            torch.arange(lengths[0], device=device),
            torch.arange(p, p + masks.shape[1], device=device),
        ]
    )
    entity_keys = tuple(
        torch.cat([torch.arange(offsets[i], offsets[i] + lengths[i], device=device), p + rows])
        for i, rows in enumerate(entity_latents, start=1)
    )
    covered = torch.cat([*entity_latents, torch.zeros(0, dtype=torch.long, device=device)])
    return RegionalPlan(
        prompt_lengths=lengths,
        entity_masks=masks,
        prompt_offsets=offsets,
        entity_latents=entity_latents,
        group_entities=group_entities,
        group_latents=group_latents,
        base_keys=base_keys,
        entity_keys=entity_keys,
        covered_latents=covered,
    )


def _check_lengths(prompt_lengths: Sequence[int]) -> tuple[int, ...]:
    lengths = tuple(int(n) for n in prompt_lengths)
    if not lengths:
        raise InputError("needs at least the global prompt's length", field="prompt_lengths")
    for i, n in enumerate(lengths):
        if n < 1 or n != prompt_lengths[i]:
            raise InputError(
                f"prompt {i} has length {prompt_lengths[i]!r}; need an integer >= 1",
                field="prompt_lengths",
            )
    return lengths


def _latent_groups(
    masks: torch.Tensor,
) -> tuple[tuple[tuple[int, ...], ...], tuple[torch.Tensor, ...]]:
    """Latent rows grouped by the set of entities covering them (sorted, deterministic)."""
    import torch

    k, n = masks.shape
    if k == 0:
        return ((),), (torch.arange(n, device=masks.device),)
    patterns, inverse = torch.unique(masks.T.to(torch.uint8), dim=0, return_inverse=True)
    entities = tuple(tuple(int(i) for i in row.nonzero().flatten()) for row in patterns)
    rows = tuple((inverse == g).nonzero().flatten() for g in range(patterns.shape[0]))
    return entities, rows


def dense_mask(plan: RegionalPlan) -> torch.Tensor:
    """The bool (L, L) mask M of Eq. 9-12, True where a query (row) may attend a key (column)."""
    import torch

    p, device = plan.n_prompt, plan.entity_masks.device
    allowed = torch.zeros((plan.length, plan.length), dtype=torch.bool, device=device)
    allowed[p:, p:] = True  # Eq. 12: latents see all latents
    regions = torch.cat(
        [torch.ones((1, plan.n_latent), dtype=torch.bool, device=device), plan.entity_masks]
    )
    for i in range(len(plan.prompt_lengths)):
        rows = plan.prompt_slice(i)
        allowed[rows, rows] = True  # Eq. 11; Eq. 10 leaves the other prompts at False
        allowed[rows, p:] = regions[i]  # Eq. 9, prompt -> latents
        allowed[p:, rows] = regions[i][:, None]  # Eq. 9, latents -> prompt
    return allowed


def additive_mask(
    plan: RegionalPlan, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """The dense (L, L) additive float mask of the reference: 0 where allowed, -inf elsewhere.

    No row is all -inf (see `dense_mask`), so SDPA with it never yields NaN.
    """
    import torch

    additive = torch.zeros((plan.length, plan.length), dtype=dtype, device=device)
    return additive.masked_fill_(~dense_mask(plan).to(device), float("-inf"))


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: RegionalPlan,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 13 the way the reference code computes it: SDPA with a dense additive float mask.

    `mask` is `additive_mask(plan, q.dtype, q.device)`, built here when not given (the
    reference code builds it once per forward pass and shares it between blocks). Slow and
    memory-hungry by design: it is the baseline `regional_attention` is checked against.
    """
    import torch.nn.functional as F

    _check_qkv(q, k, v, plan)
    if mask is None:
        mask = additive_mask(plan, q.dtype, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def regional_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: RegionalPlan,
    *,
    method: str = "auto",
    token_order: str = "sequence",
) -> torch.Tensor:
    """Eq. 13 computed on allowed pairs only; q, k, v are (B, heads, L, head_dim).

    Returns a tensor of the same shape and dtype as `q`. With zero entities this is exactly
    ``F.scaled_dot_product_attention(q, k, v)``. `method` picks the computation:

    * "flex": FlexAttention with the plan's block mask (`regional_flex`), built once per plan
      and device; `token_order` "sorted" groups latents by covering entities in the kernel;
    * "merge": log-sum-exp merge (CPU only);
    * "groups": latent rows grouped by covering entities, public SDPA only;
    * "dense": the reference's SDPA with a dense additive mask, built once per plan;
    * "auto": `auto_method` for the device.
    """
    import torch.nn.functional as F

    _check_qkv(q, k, v, plan)
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {METHODS}", field="method")
    if plan.num_entities == 0:
        return F.scaled_dot_product_attention(q, k, v)
    if plan.entity_masks.device != q.device:
        plan = plan.to(q.device)
    if method == "auto":
        method = auto_method(q)
    if method == "flex":
        from eligen_bench.generators.flux.attention_flex import eligen_layout, flex_attention

        return flex_attention(q, k, v, eligen_layout(plan, token_order))
    if method == "dense":
        return reference_attention(q, k, v, plan, mask=cached_additive_mask(plan, q.dtype, q.device))
    if method == "merge":
        if _flash_with_lse(q) is None:
            raise InputError(
                f"'merge' needs torch's CPU flash kernel; not available for {q.device.type} "
                "tensors (or with gradients): choose another method",
                field="method",
            )
        return _merge_path(q, k, v, plan)
    return _groups_path(q, k, v, plan)


def auto_method(q: torch.Tensor) -> str:
    """The fastest measured method for q's device.

    CPU: "merge" (FACTS: the decomposition beats the dense mask there, and FlexAttention's
    block skipping gains nothing on CPU). CUDA: "flex" (on an H100, 8 entities, full FLUX:
    0.80x the dense mask, while "groups" took 2.06x). Elsewhere, or without the kernels:
    "groups".
    """
    from eligen_bench.generators.flux.attention_flex import flex_available

    if q.device.type == "cuda" and flex_available():
        return "flex"
    return "merge" if _flash_with_lse(q) is not None else "groups"


def cached_additive_mask(plan: RegionalPlan, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`additive_mask`, built once per plan, dtype and device (as the reference builds it once
    per forward pass and shares it between blocks)."""
    key = ("dense", str(dtype), str(device))
    if key not in plan.cache:
        plan.cache[key] = additive_mask(plan, dtype, device)
    return plan.cache[key]


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: RegionalPlan) -> None:
    if q.ndim != 4 or q.shape != k.shape or k.shape != v.shape:
        raise InputError(
            f"q, k, v must share one (batch, heads, L, head_dim) shape; got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}",
            field="qkv",
        )
    if q.shape[2] != plan.length:
        raise InputError(f"sequence length {q.shape[2]} != plan length {plan.length}", field="qkv")


def _flash_with_lse(q: torch.Tensor) -> Callable[..., Any] | None:
    """torch's CPU flash-attention op that also returns the log-sum-exp, or None."""
    import torch

    if q.device.type != "cpu" or q.requires_grad:
        return None
    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _merge_path(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: RegionalPlan
) -> torch.Tensor:
    """All rows that see [global prompt; latents] in one call, entity parts merged in by log-sum-exp.

    Few, large operations on purpose: with the CPU shared, every parallel region costs a
    thread hand-off, so the entity parts are gathered and merged in one vectorised pass.
    """
    import torch
    import torch.nn.functional as F

    flash = _flash_with_lse(q)
    p, n_global = plan.n_prompt, plan.prompt_lengths[0]
    base = plan.base_keys
    base_out, base_lse = flash(
        q.index_select(2, base), k.index_select(2, base), v.index_select(2, base), 0.0, False
    )
    out = torch.empty_like(q)
    out[:, :, :n_global] = base_out[:, :, :n_global]
    for i, keys in enumerate(plan.entity_keys, start=1):
        own = plan.prompt_slice(i)  # Eq. 9-11: own tokens and own region only
        out[:, :, own] = F.scaled_dot_product_attention(
            q[:, :, own], k.index_select(2, keys), v.index_select(2, keys)
        )
    rows = plan.covered_latents
    if rows.numel() == 0:
        out[:, :, p:] = base_out[:, :, n_global:]
        return out
    covered_q = q[:, :, p:].index_select(2, rows)
    parts, start = [], 0
    for i, entity_rows in enumerate(plan.entity_latents, start=1):
        count = entity_rows.numel()
        if count:
            own = plan.prompt_slice(i)
            parts.append(
                flash(
                    covered_q[:, :, start : start + count], k[:, :, own], v[:, :, own], 0.0, False
                )
            )
            start += count
    wide = torch.promote_types(q.dtype, torch.float32)  # merge in float32 at least
    part_out = torch.cat([part[0] for part in parts], dim=2).to(wide)
    part_lse = torch.cat([part[1] for part in parts], dim=2).to(wide)
    out[:, :, p:] = _merge(
        base_out[:, :, n_global:].to(wide),
        base_lse[:, :, n_global:].to(wide),
        rows,
        part_out,
        part_lse,
    )
    return out


def _merge(
    out: torch.Tensor,
    lse: torch.Tensor,
    rows: torch.Tensor,
    part_out: torch.Tensor,
    part_lse: torch.Tensor,
) -> torch.Tensor:
    """Softmax over the union of disjoint key sets from the per-set outputs and log-sum-exps.

    `out`/`lse` cover every latent row; `part_out`/`part_lse` hold extra parts for latent
    `rows` (a row may repeat). Weights are taken relative to each row's largest log-sum-exp,
    so no exponent is positive and nothing overflows.
    """
    top = lse.scatter_reduce(2, rows.expand(*lse.shape[:2], -1), part_lse, "amax")
    base_weight = (lse - top).exp_()
    part_weight = (part_lse - top.index_select(2, rows)).exp_()
    numerator = (out * base_weight.unsqueeze(-1)).index_add_(
        2, rows, part_out * part_weight.unsqueeze(-1)
    )
    denominator = base_weight.index_add_(2, rows, part_weight)
    return numerator.div_(denominator.unsqueeze(-1))


def _groups_path(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: RegionalPlan
) -> torch.Tensor:
    """Public SDPA only: one call per prompt, one per group of latent rows with the same entities."""
    import torch
    import torch.nn.functional as F

    p = plan.n_prompt
    out = torch.empty_like(q)
    latent_k, latent_v = k[:, :, p:], v[:, :, p:]
    for i, keys in enumerate((plan.base_keys, *plan.entity_keys)):
        own = plan.prompt_slice(i)
        out[:, :, own] = F.scaled_dot_product_attention(
            q[:, :, own], k.index_select(2, keys), v.index_select(2, keys)
        )
    latent_out = out[:, :, p:]
    for entities, rows in zip(plan.group_entities, plan.group_latents, strict=True):
        seen = [plan.prompt_slice(0)] + [plan.prompt_slice(e + 1) for e in entities]
        keys = torch.cat([k[:, :, s] for s in seen] + [latent_k], dim=2)
        values = torch.cat([v[:, :, s] for s in seen] + [latent_v], dim=2)
        result = F.scaled_dot_product_attention(q[:, :, p:].index_select(2, rows), keys, values)
        latent_out.index_copy_(2, rows, result)
    return out


def latent_token_masks(
    masks: Sequence[np.ndarray | torch.Tensor],
    height: int,
    width: int,
    vae_scale: int = 8,
    patch: int = 2,
) -> torch.Tensor:
    """Pixel masks -> bool (k, n_latent) token masks in FLUX's packed-latent order.

    The rule (the reference code's, modelscope/DiffSynth-Studio@2e59733,
    diffsynth/pipelines/flux_image.py `preprocess_masks`): each mask (any size, nonzero =
    inside) is resized with PIL's NEAREST (`eligen_bench.layout.resize_region`) to
    the latent grid of ``(rows * patch, cols * patch)`` cells, where
    ``rows = height // (vae_scale * patch)`` and ``cols = width // (vae_scale * patch)`` (the
    grid FLUX pipelines use; for sizes divisible by 16 it is ``(height // 8, width // 8)``).
    A token (a ``patch x patch`` block of cells) belongs to the entity if ANY of its cells does
    (max-pool), and tokens are flattened row-major, as FLUX packs its latents. A mask that is
    too small may lose all its cells in the resize; see `RegionalPlan.empty_entities`.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from eligen_bench.layout import resize_region

    cell = vae_scale * patch
    rows, cols = height // cell, width // cell
    if rows < 1 or cols < 1:
        raise InputError(
            f"image {width}x{height} is smaller than one {cell}x{cell} token", field="size"
        )
    out = torch.zeros((len(masks), rows * cols), dtype=torch.bool)
    for i, mask in enumerate(masks):
        array = torch.as_tensor(np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask))
        if array.ndim != 2 or array.numel() == 0:
            raise InputError(
                f"entity {i}: mask must be a non-empty 2-D array, got shape {tuple(array.shape)}",
                field="mask",
            )
        cells = resize_region(array.numpy() != 0, rows * patch, cols * patch, "pil-nearest")
        grid = torch.from_numpy(cells).float()[None, None]
        out[i] = F.max_pool2d(grid, patch).flatten() > 0
    return out


def allowed_fraction(plan: RegionalPlan) -> float:
    """Share of the L x L query-key pairs the mask allows (what the fast path computes)."""
    n = plan.n_latent
    covered = [n] + [int(rows.numel()) for rows in plan.entity_latents]
    pairs = n * n + sum(
        length * length + 2 * length * c
        for length, c in zip(plan.prompt_lengths, covered, strict=True)
    )
    return pairs / float(plan.length) ** 2
