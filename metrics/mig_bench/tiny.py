"""Tiny random GroundingDINO (with a real-format BERT WordPiece tokenizer) and SAM, built from
configs and saved, so the `tiny` profile and the tests load them through `from_pretrained`.

The shapes that the scorer's pre- and post-processing depend on stay real: GroundingDINO's
800 px input, 256-token text logits and the special token ids it hard-codes ([CLS] 101, [SEP]
102, '.' 1012, '?' 1029, as in bert-base-uncased); SAM's 1024 px input and three masks per box.
Everything else is shrunk (patch size 16 / 64, width 8-32, one or two layers).
"""

from __future__ import annotations

from eligen_bench.coco_classes import COCO_THING_CLASSES
from eligen_bench.metrics.mig_bench import protocol

TINY_DETECTOR = "tiny-random-grounding-dino"
TINY_SEGMENTER = "tiny-random-sam"
VOCAB_SIZE = 1100
SPECIAL = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}
"""bert-base-uncased's ids of the tokens GroundingDINO treats as special."""


def tiny_vocab() -> dict[str, int]:
    """1100 WordPiece tokens: the special ones at bert-base-uncased's ids, the words of COCO's
    class names and the colour names in the free slots, placeholders elsewhere."""
    words = sorted({w for name in COCO_THING_CLASSES for w in name.split()} | set(protocol.HSV_RANGES) | {"a", "an"})
    by_id = {i: token for token, i in SPECIAL.items()}
    free = (i for i in range(VOCAB_SIZE) if i not in by_id)
    for word in words:
        by_id[next(free)] = word
    for i in free:
        by_id[i] = f"[unused{i}]"
    return {token: i for i, token in sorted(by_id.items())}


def save_tiny_grounder(directory: str, seed: int = 0) -> None:
    import torch
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        SwinConfig,
    )

    backbone = SwinConfig(image_size=224, patch_size=16, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=7, out_indices=[2, 3, 4], out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=256)
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1,
                                 decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2,
                                 decoder_attention_heads=2, num_queries=30, max_text_len=256, encoder_n_points=2,
                                 decoder_n_points=2)
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(config).save_pretrained(directory)
    BertTokenizer(vocab=tiny_vocab(), do_lower_case=True).save_pretrained(directory)


def save_tiny_segmenter(directory: str, seed: int = 0) -> None:
    import torch
    from transformers import SamConfig, SamModel

    config = SamConfig(
        vision_config={"image_size": 1024, "patch_size": 64, "hidden_size": 16, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "mlp_dim": 32, "output_channels": 32, "global_attn_indexes": [1],
                       "window_size": 4, "num_pos_feats": 16},
        prompt_encoder_config={"image_size": 1024, "patch_size": 64, "hidden_size": 32},
        mask_decoder_config={"hidden_size": 32, "mlp_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                             "iou_head_hidden_dim": 32},
    )
    torch.manual_seed(seed)
    SamModel(config).save_pretrained(directory)
