"""EliGen's regional attention inside diffusers' `QwenImageTransformer2DModel`.

diffusers' `QwenDoubleStreamAttnProcessor2_0` refuses an attention mask and numbers all text
tokens in one run (RoPE positions ``max_vid_index + 0 .. L-1``). `EliGenQwenProcessor`
replaces it in every block; with ``attention_kwargs={"regional": control}`` it

* numbers each prompt's tokens from the same start, as DiffSynth's `process_entity_masks`
  does (one `pos_embed` call per prompt, each returning ``pos_freqs[max_vid_index : + len]``);
* applies EliGen's mask through the project's `regional_attention` (the FLUX family's
  computation, which never builds the L x L mask): an entity prompt's tokens see their own
  tokens and the image tokens of their region, and those image tokens see them back; the global
  prompt sees, and is seen by, every image token; no prompt sees another; image tokens see all
  image tokens. A token belongs to a region if any of its 2x2 latent cells does
  (`flux.regions.eligen_token_masks`, the same rule as DiffSynth's Qwen pipeline).

Without the control it runs diffusers' own processor, so the output is the stock model's.

Sequence order. DiffSynth concatenates ``[entity 1; ...; entity k; global; image]``; the plan
here is ``[global; entity 1; ...; entity k; image]``. With every prompt's positions restarting
at the same index and the mask permuted with the tokens, attention is the same function of the
same tokens (softmax is order-free over keys), so the image tokens come out the same up to the
order of float summation. Each prompt keeps its own length (no padding between prompts).

Reference: modelscope/DiffSynth-Studio@afd101f (v1.1.9), diffsynth/models/qwen_image_dit.py,
`QwenImageDiT.process_entity_masks` and `QwenDoubleStreamAttention`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from eligen_bench.generators.flux.attention import RegionalPlan


@dataclass(frozen=True, eq=False)
class EliGenQwenControl:
    """EliGen on Qwen-Image: one plan (prompt lengths and token masks), applied in every block."""

    plan: RegionalPlan
    """[global; entities] prompt lengths and entity token masks (`flux.attention.build_plan`)."""
    method: str = "auto"
    """`flux.attention.regional_attention` method ("auto", "flex", "merge", "groups", "dense")."""
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    """Per-device text position indices, built on first use."""

    def text_positions(self, device: Any) -> torch.Tensor:
        """int64 (n_prompt,): each text token's RoPE position, restarting at 0 for every prompt."""
        key = str(device)
        if key not in self.cache:
            self.cache[key] = restarted_positions(self.plan.prompt_lengths).to(device)
        return self.cache[key]


def restarted_positions(prompt_lengths: tuple[int, ...] | list[int]) -> torch.Tensor:
    """``[0..n_0-1, 0..n_1-1, ...]``: text positions with every prompt starting at the same index."""
    import torch

    return torch.cat([torch.arange(int(n), dtype=torch.long) for n in prompt_lengths])


def install(transformer: Any) -> None:
    """Give every block of the transformer an `EliGenQwenProcessor` (idempotent)."""
    transformer.set_attn_processor(EliGenQwenProcessor())


class EliGenQwenProcessor:
    """Attention processor of a Qwen-Image block: diffusers' own unless `regional` is given."""

    def __init__(self) -> None:
        from diffusers.models.transformers.transformer_qwenimage import (
            QwenDoubleStreamAttnProcessor2_0,
        )

        self._plain = QwenDoubleStreamAttnProcessor2_0()

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_hidden_states_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
        regional: EliGenQwenControl | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if regional is None:
            return self._plain(attn, hidden_states, encoder_hidden_states, encoder_hidden_states_mask,
                               attention_mask, image_rotary_emb)
        if attention_mask is not None or encoder_hidden_states_mask is not None:
            raise ValueError("EliGen regional attention builds its own mask: pass no other mask")
        if encoder_hidden_states is None or image_rotary_emb is None:
            raise ValueError("EliGen regional attention needs the text stream and the RoPE tables")
        return self._regional(attn, hidden_states, encoder_hidden_states, image_rotary_emb, regional)

    def _regional(
        self, attn: Any, image: torch.Tensor, text: torch.Tensor, rotary: Any, control: EliGenQwenControl
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        from eligen_bench.generators.flux.attention import regional_attention

        plan = control.plan
        if text.shape[1] != plan.n_prompt or image.shape[1] != plan.n_latent:
            raise ValueError(
                f"sequence ({text.shape[1]} text, {image.shape[1]} image tokens) does not match the plan "
                f"({plan.n_prompt} text, {plan.n_latent} image tokens)"
            )
        img_freqs, txt_freqs = rotary
        txt_freqs = txt_freqs.index_select(0, control.text_positions(txt_freqs.device))
        img_q, img_k, img_v = _stream(attn, image, img_freqs, attn.to_q, attn.to_k, attn.to_v,
                                      attn.norm_q, attn.norm_k)
        txt_q, txt_k, txt_v = _stream(attn, text, txt_freqs, attn.add_q_proj, attn.add_k_proj, attn.add_v_proj,
                                      attn.norm_added_q, attn.norm_added_k)
        # (B, heads, L, head_dim) over [text; image], as the stock processor orders them
        q = torch.cat([txt_q, img_q], dim=1).transpose(1, 2)
        k = torch.cat([txt_k, img_k], dim=1).transpose(1, 2)
        v = torch.cat([txt_v, img_v], dim=1).transpose(1, 2)
        out = regional_attention(q, k, v, plan, method=control.method)
        out = out.transpose(1, 2).flatten(2, 3).to(q.dtype)
        seq_txt = text.shape[1]
        img_out = attn.to_out[0](out[:, seq_txt:].contiguous())
        if len(attn.to_out) > 1:
            img_out = attn.to_out[1](img_out)  # dropout
        return img_out, attn.to_add_out(out[:, :seq_txt].contiguous())


def _stream(attn: Any, x: torch.Tensor, freqs: torch.Tensor, to_q: Any, to_k: Any, to_v: Any,
            norm_q: Any, norm_k: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of one stream as (B, L, heads, head_dim): projected, RMS-normed and rotated as the
    stock processor does (`apply_rotary_emb_qwen(..., use_real=False)`)."""
    from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen

    head_dim = attn.inner_dim // attn.heads
    q = to_q(x).unflatten(-1, (-1, head_dim))
    k = to_k(x).unflatten(-1, (-1, head_dim))
    v = to_v(x).unflatten(-1, (-1, head_dim))
    if norm_q is not None:
        q = norm_q(q)
    if norm_k is not None:
        k = norm_k(k)
    q = apply_rotary_emb_qwen(q, freqs, use_real=False)
    k = apply_rotary_emb_qwen(k, freqs, use_real=False)
    return q, k, v
