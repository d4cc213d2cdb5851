"""Offline building blocks for the `tiny` profile: real tokenizers without any download.

The tiny profile swaps every model for a randomly initialised one of the same architecture.
Tokenizers must still be real: the CLIP one is rebuilt from the BPE vocabulary that open_clip
ships inside its package; the T5 one is a byte-level BPE without merges.
Numbers from the tiny profile are meaningless: every output of it says so.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path
from typing import Any

TINY_WARNING = "tiny profile: random-weight models, numbers are meaningless (pipeline check only)"


def _bpe_file() -> Path:
    import open_clip

    return Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"


@lru_cache(maxsize=1)
def _clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    # Same construction as CLIP's SimpleTokenizer: byte symbols, the same with </w>, the merges.
    from open_clip.tokenizer import bytes_to_unicode

    with gzip.open(_bpe_file()) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    vocab_list += ["".join(m.split()) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab_list)}, merges


def clip_tokenizer(model_max_length: int = 77) -> Any:
    """The real CLIP BPE tokenizer (49408 tokens) as a transformers `CLIPTokenizer`, offline."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=[tuple(m.split()) for m in merges],
        model_max_length=model_max_length,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def t5_tokenizer(model_max_length: int = 512) -> Any:
    """A byte-level BPE tokenizer with no merges (vocabulary 259) in T5's calling convention."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):  # a set: fix the order
        vocab.setdefault(symbol, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    from tokenizers import processors

    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=model_max_length,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
    )


QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""The Qwen2 special tokens the Qwen-Image chat template uses (padding is <|endoftext|>)."""


def qwen_tokenizer(model_max_length: int = 32768) -> Any:
    """A byte-level BPE with no merges plus Qwen's chat specials, as a transformers `Qwen2TokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    vocab: dict[str, int] = {}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):  # a set: fix the order
        vocab.setdefault(symbol, len(vocab))
    for special in QWEN_SPECIALS:
        vocab[special] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return Qwen2TokenizerFast(
        tokenizer_object=backend,
        model_max_length=model_max_length,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=list(QWEN_SPECIALS[1:]),
    )
