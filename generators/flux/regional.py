"""Regional attention inside diffusers' FLUX transformer: attention processors for every block.

The transformer stays diffusers' `FluxTransformer2DModel`; `install` replaces the processor of
each double-stream and single-stream block with a `RegionalProcessor`. Control travels with
each call as ``joint_attention_kwargs={"regional": control}``; without it (or with ``None``) a
processor runs diffusers' own `FluxAttnProcessor`, so the output is the plain transformer's
bit for bit.

Two kinds of control:

* `EliGenControl` (EliGen, paper Sec. 3.2): the prompt is ``[global; entity 1; ...; entity k]``
  and every block applies the mask of Eq. 9-12 through `regional_attention.regional_attention`.
* `RegionalPromptingControl` (Regional Prompting FLUX): batch element 0 carries the regional
  prompts ``[entity 1; ...; entity k; background]`` under the report's mask (text-to-own-region,
  text-to-own-text, image-to-image only within a region); element 1 carries the base (global)
  prompt, zero-padded to the same length with the padding hidden as keys, unmasked. After
  attention the image outputs merge as ``(1 - base_ratio) * regional + base_ratio * base``, as
  the reference code does: in double blocks both elements take the merged image (the image
  stream is shared), in single blocks only the regional element does. Blocks past the
  injection depth drop the regional mask but keep the merge.

Text positions (RoPE ids) are all zeros, as FLUX's ``txt_ids``, for any number of prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eligen_bench.errors import InputError

if TYPE_CHECKING:
    import torch

    from eligen_bench.generators.flux.attention import RegionalPlan


@dataclass(frozen=True, eq=False)
class EliGenControl:
    """EliGen's regional attention: one plan, applied in every block (the paper's setting)."""

    plan: RegionalPlan
    """Sequence layout and entity token masks (`regional_attention.build_plan`)."""
    double_interval: int = 1
    """Double-stream block i applies the mask when i % double_interval == 0 (1: every block)."""
    single_interval: int = 1
    """Single-stream block i applies the mask when i % single_interval == 0 (1: every block)."""
    method: str = "auto"
    """`regional_attention` method."""
    token_order: str = "sequence"
    """Token order of the "flex" kernel (`regional_flex.ORDERS`)."""


@dataclass(frozen=True, eq=False)
class RegionalPromptingControl:
    """Regional Prompting FLUX: a regional element (0) and a base element (1) in one batch."""

    mask: torch.Tensor
    """Bool (L, L) mask of the regional element over ``[regional prompts; latents]``."""
    text_length: int
    """Tokens of the regional prompts together (the latents start here)."""
    base_length: int
    """Real tokens of the base prompt in element 1 (the rest of its text is padding)."""
    base_ratio: float
    """Weight of the base element's image output in the merge (beta of the report)."""
    double_interval: int = 1
    """Double-stream block i applies the regional mask when i % double_interval == 0."""
    single_interval: int = 1
    """Single-stream block i applies the regional mask when i % single_interval == 0."""
    method: str = "auto"
    """"dense" (SDPA with the bool masks), "flex" (FlexAttention block masks, needs
    `token_bits`) or "auto" ("flex" on CUDA where it exists, else "dense")."""
    token_bits: torch.Tensor | None = None
    """int64 (L,) per-token bits of `mask` (`regional_flex.prompting_bits`), for "flex"."""
    token_order: str = "sequence"
    """Token order of the "flex" kernel (`regional_flex.ORDERS`)."""
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    """Block masks built from `token_bits`, once per generation, shared by blocks and steps."""


def install(transformer: Any) -> None:
    """Give every attention module of the transformer a `RegionalProcessor` (idempotent)."""
    processors = {}
    for name in transformer.attn_processors:
        parts = name.split(".")
        kind = "double" if parts[0] == "transformer_blocks" else "single"
        processors[name] = RegionalProcessor(kind, int(parts[1]))
    transformer.set_attn_processor(processors)


def text_ids(length: int, device: Any = None, dtype: Any = None) -> torch.Tensor:
    """Zero RoPE ids for `length` text tokens, as FLUX uses for its prompt."""
    import torch

    return torch.zeros(length, 3, device=device, dtype=dtype)


def _applies(interval: int, index: int) -> bool:
    """The reference's block selection: every `interval`-th block, from the first."""
    return index % interval == 0


class RegionalProcessor:
    """Attention processor for one FLUX block; plain diffusers attention unless `regional` is given."""

    def __init__(self, kind: str, index: int):
        from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

        if kind not in ("double", "single"):
            raise ValueError(f"kind must be 'double' or 'single', got {kind!r}")
        self.kind = kind
        self.index = index
        self._plain = FluxAttnProcessor()

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
        regional: EliGenControl | RegionalPromptingControl | None = None,
    ) -> Any:
        if regional is None:
            return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if attention_mask is not None:
            raise ValueError("regional attention takes no extra attention_mask")
        q, k, v = _projections(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        if isinstance(regional, EliGenControl):
            out = self._eligen(q, k, v, regional)
            text_len = regional.plan.n_prompt
            merge = None
        else:
            out = self._prompting(q, k, v, regional)
            text_len = regional.text_length
            merge = regional.base_ratio
        out = out.transpose(1, 2).flatten(2, 3).to(q.dtype)
        if merge is not None:
            out = self._merge(out, text_len, merge)
        if encoder_hidden_states is None:
            return out
        text, image = out[:, : encoder_hidden_states.shape[1]], out[:, encoder_hidden_states.shape[1] :]
        image = attn.to_out[1](attn.to_out[0](image.contiguous()))
        return image, attn.to_add_out(text.contiguous())

    def _limit(self, control: Any) -> int:
        return control.double_interval if self.kind == "double" else control.single_interval

    def _eligen(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, control: EliGenControl) -> torch.Tensor:
        import torch.nn.functional as F

        from eligen_bench.generators.flux.attention import regional_attention

        if not _applies(self._limit(control), self.index):
            return F.scaled_dot_product_attention(q, k, v)
        return regional_attention(q, k, v, control.plan, method=control.method, token_order=control.token_order)

    def _prompting(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, control: RegionalPromptingControl
    ) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        if q.shape[0] != 2:
            raise ValueError("regional prompting runs a batch of two: regional and base")
        regional = _applies(self._limit(control), self.index)
        if prompting_method(control, q.device) == "flex":
            from eligen_bench.generators.flux.attention_flex import flex_attention, prompting_layout

            layout = prompting_layout(
                control.token_bits, control.base_length, control.text_length, regional=regional,
                order=control.token_order, cache=control.cache,
            )  # fmt: skip
            return flex_attention(q, k, v, layout)
        length = q.shape[2]
        regional_mask = control.mask.to(q.device)
        if not regional:
            regional_mask = torch.ones_like(regional_mask)
        base_mask = torch.ones(length, length, dtype=torch.bool, device=q.device)
        base_mask[:, control.base_length : control.text_length] = False  # padding is no key
        mask = torch.stack([regional_mask, base_mask])[:, None]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def _merge(self, out: torch.Tensor, text_len: int, ratio: float) -> torch.Tensor:
        """Blend the base element's image output into the regional one (and, in double blocks, back)."""
        import torch

        image = out[:, text_len:]
        merged = (1.0 - ratio) * image[0] + ratio * image[1]
        if self.kind == "double":
            new_image = torch.stack([merged, merged])
        else:
            new_image = torch.stack([merged, image[1]])
        return torch.cat([out[:, :text_len], new_image], dim=1)


PROMPTING_METHODS = ("auto", "flex", "dense")
"""Ways the Regional Prompting FLUX mask can be applied; the same function each way."""


def prompting_method(control: RegionalPromptingControl, device: torch.device) -> str:
    """The method `control` runs with on `device`: "auto" is "flex" on CUDA (block-sparse, the
    dense mask's masked pairs skipped) where FlexAttention and the token bits exist, else "dense"."""
    from eligen_bench.generators.flux.attention_flex import flex_available

    method = control.method
    if method not in PROMPTING_METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {PROMPTING_METHODS}", field="method")
    if method == "auto":
        usable = device.type == "cuda" and control.token_bits is not None and flex_available()
        return "flex" if usable else "dense"
    if method == "flex" and control.token_bits is None:
        raise InputError("'flex' needs the control's token_bits (regional_flex.prompting_bits)", field="method")
    return method


def _projections(
    attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None, rotary: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as (B, heads, L, head_dim) over [text; image], normed and rotated as diffusers does."""
    import torch
    from diffusers.models.embeddings import apply_rotary_emb
    from diffusers.models.transformers.transformer_flux import _get_qkv_projections

    query, key, value, e_query, e_key, e_value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
    query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
    key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
    value = value.unflatten(-1, (-1, attn.head_dim))
    if encoder_hidden_states is not None and attn.added_kv_proj_dim is not None:
        e_query = attn.norm_added_q(e_query.unflatten(-1, (-1, attn.head_dim)))
        e_key = attn.norm_added_k(e_key.unflatten(-1, (-1, attn.head_dim)))
        e_value = e_value.unflatten(-1, (-1, attn.head_dim))
        query = torch.cat([e_query, query], dim=1)
        key = torch.cat([e_key, key], dim=1)
        value = torch.cat([e_value, value], dim=1)
    if rotary is not None:
        query = apply_rotary_emb(query, rotary, sequence_dim=1)
        key = apply_rotary_emb(key, rotary, sequence_dim=1)
    return query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)


def regional_prompting_mask(prompt_lengths: Sequence[int], region_masks: torch.Tensor) -> torch.Tensor:
    """The report's bool (L, L) mask over ``[prompt 1; ...; prompt n; latents]``.

    `region_masks` is bool (n, n_latent), one region per prompt. Each prompt sees its own
    tokens and its region's latents; a latent sees the prompts whose regions cover it, and the
    latents sharing a region with it; latents covered by no region see each other (the
    reference's "background" term).
    """
    import torch

    lengths = [int(n) for n in prompt_lengths]
    if region_masks.ndim != 2 or region_masks.shape[0] != len(lengths) or not lengths:
        raise InputError(f"{tuple(region_masks.shape)} region masks for {len(lengths)} prompts", field="masks")
    regions = region_masks.to(torch.bool)
    p, n = sum(lengths), regions.shape[1]
    mask = torch.zeros(p + n, p + n, dtype=torch.bool)
    start = 0
    for i, length in enumerate(lengths):
        rows = slice(start, start + length)
        mask[rows, rows] = True
        mask[rows, p:] = regions[i]
        mask[p:, rows] = regions[i][:, None]
        start += length
    r = regions.float()
    same_region = (r.T @ r) > 0
    uncovered = ~regions.any(0)
    mask[p:, p:] = same_region | (uncovered[:, None] & uncovered[None, :])
    return mask
