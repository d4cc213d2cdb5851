"""Qwen-Image prompt encoding as DiffSynth-Studio does it (Qwen2.5-VL's last hidden states).

modelscope/DiffSynth-Studio@afd101f (v1.1.9), diffsynth/pipelines/qwen_image.py:
`QwenImageUnit_PromptEmbedder.encode_prompt` (global and negative prompt) and
`QwenImageUnit_EntityControl.get_prompt_emb` (entity prompts). Each prompt is wrapped in the
chat template below, tokenized on its own (so each keeps its own length, no padding), run
through the text encoder with ``output_hidden_states=True``, and the last hidden state is kept
without the template's first 34 tokens (the system prefix). The tokenizer truncates the
templated text at ``4096 + 34`` tokens for the global and negative prompt and at ``1024 + 34``
for an entity prompt; diffusers' `QwenImagePipeline` cuts every prompt at ``1024 + 34``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
DROP_IDX = 34
"""Template tokens dropped from the front (``drop_idx = 34``)."""
GLOBAL_MAX_TOKENS = 4096 + DROP_IDX
"""`encode_prompt`: ``max_length=4096+drop_idx`` (raised from 1024 in f7f5c07, "fix long prompt")."""
ENTITY_MAX_TOKENS = 1024 + DROP_IDX
"""`get_prompt_emb`: ``max_length=1024+drop_idx``."""
MAX_TOKENS = {"global": GLOBAL_MAX_TOKENS, "entity": ENTITY_MAX_TOKENS}


class TemplatedTokenizer:
    """Calls the tokenizer on the templated prompt (for `truncation.check_prompts`)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(self, prompt: str, **kwargs: Any) -> Any:
        return self.tokenizer(TEMPLATE.format(prompt), **kwargs)


def encode(text_encoder: Any, tokenizer: Any, prompt: str, max_tokens: int, device: Any,
           dtype: torch.dtype) -> torch.Tensor:
    """(1, n, hidden) embedding of one prompt, its template prefix dropped."""
    import torch

    tokens = tokenizer([TEMPLATE.format(prompt)], max_length=max_tokens, padding=True, truncation=True,
                       return_tensors="pt")
    ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    with torch.no_grad():
        hidden = text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    kept = hidden[0][mask[0].bool()][DROP_IDX:]
    return kept.unsqueeze(0).to(dtype)
