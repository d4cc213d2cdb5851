"""VLM judges for `vlm_success`: presets, prompt templates, answer parsing, region rendering, backends.

A judge is any object with `answer(images, questions) -> list[str]`: one free-text answer per
(image, question) pair. Two backends build one from a preset:

- `transformers` (works anywhere): Qwen2-VL through `AutoModelForImageTextToText` +
  `AutoProcessor.apply_chat_template`; InternVL2 and CogVLM2 through their own remote code
  (`trust_remote_code=True`), called the way their model cards show.
- `vllm` (optional extra, GPU): `vllm.LLM.chat`; imported only when this backend is built.

What is verified offline: the chat-template path end to end on a tiny random Qwen2-VL built from a
config and reloaded through the same `from_pretrained` code; parsing and rendering on fixed
inputs. The InternVL2 / CogVLM2 remote-code paths and the vLLM backend follow their model cards
and need the real weights (tests marked `weights` / `gpu`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from eligen_bench.errors import InputError

if TYPE_CHECKING:
    from PIL import Image


# ---------------------------------------------------------------- presets


@dataclass(frozen=True)
class JudgePreset:
    """How to load and prompt one VLM judge."""

    name: str
    """Short name users pass as `judge=`."""
    model_id: str
    """Hub id of the judge."""
    revision: str | None
    """Hub revision (None: the default branch; pin a commit for reproducible tables)."""
    handler: str
    """How prompts are built: 'chat_template' (processor chat template), 'internvl2' or
    'cogvlm2' (the model's own remote code)."""
    max_new_tokens: int
    """Generation budget; the templates ask for one word, a little room lets chatter be parsed."""
    trust_remote_code: bool = False
    vllm_supported: bool = True


PRESETS: dict[str, JudgePreset] = {
    # The three judges of the EliGen paper, Table 1 (Entity Success Rate).
    "qwen2vl": JudgePreset("qwen2vl", "Qwen/Qwen2-VL-7B-Instruct", None, "chat_template", 16),
    "internvl2": JudgePreset(
        "internvl2", "OpenGVLab/InternVL2-8B", None, "internvl2", 16, trust_remote_code=True
    ),
    # CogVLM2 is remote code only; vLLM has no CogVLM2 architecture.
    "cogvlm2": JudgePreset(
        "cogvlm2", "THUDM/cogvlm2-llama3-chat-19B", None, "cogvlm2", 16,
        trust_remote_code=True, vllm_supported=False,
    ),
}

TINY_MODEL_ID = "tiny-random-qwen2vl"


def preset(name: str) -> JudgePreset:
    if name not in PRESETS:
        raise InputError(f"unknown judge {name!r}; choose one of {sorted(PRESETS)}", field="judge")
    return PRESETS[name]


def preset_record(p: JudgePreset) -> dict[str, Any]:
    return asdict(p)


# ---------------------------------------------------------------- prompt templates

# Versioned: a changed wording is a new id, never an edit, so old rows stay comparable by key.
TEMPLATES: dict[str, str] = {
    "crop-v1": (
        "This image is a crop of a generated picture around the region where {entity} should be. "
        "Is {entity} clearly present in this image, recognisable and well formed? "
        "Answer with a single word: yes or no."
    ),
    "box-v1": (
        "The red rectangle marks a region of this generated picture. "
        "Is {entity} clearly present inside the red rectangle, recognisable and well formed? "
        "Answer with a single word: yes or no."
    ),
}


def template_id(region: str, version: str) -> str:
    tid = f"{region}-{version}"
    if tid not in TEMPLATES:
        raise InputError(f"no prompt template {tid!r}; known: {sorted(TEMPLATES)}", field="template_version")
    return tid


def question(tid: str, entity_prompt: str) -> str:
    return TEMPLATES[tid].format(entity=entity_prompt.strip().rstrip("."))


# ---------------------------------------------------------------- answer parsing

YES, NO, UNPARSED = "yes", "no", "unparsed"
_YES_WORDS = {"yes", "yeah", "yep", "true", "correct"}
_NO_WORDS = {"no", "nope", "false", "incorrect"}
_FILLERS = {"answer", "a", "final", "assistant", "sure", "ok", "okay", "well", "so", "the", "is", "my"}
_HEDGE = re.compile(r"^(yes|no)\s*(and|or|/|,\s*or)\s*(yes|no)\b")
_ANSWER_IS = re.compile(r"\banswer\s*(?:is|would be|:|-)\s*:?\s*\W*\s*(yes|no)\b")
_WORD = re.compile(r"[a-z]+")


def parse_answer(text: str) -> str:
    """'yes', 'no' or 'unparsed' for a free-text VLM answer.

    Accepted: a leading yes/no (after markdown, punctuation and filler such as 'Answer:',
    'Sure,'), an explicit 'the answer is: X' anywhere, or a sentence that is only 'yes'/'no'.
    Everything else (hedges like 'yes and no', 'I cannot tell', 'there is no cat') is
    'unparsed': guessing would bias the rate, so those are counted, never turned into 'no'.
    """
    norm = re.sub(r"[*_`#>\"']", " ", str(text).lower())
    norm = " ".join(norm.split())
    if not norm:
        return UNPARSED
    if _HEDGE.search(norm.lstrip(" .:-([")):
        return UNPARSED
    found = _ANSWER_IS.findall(norm)
    if found:
        return found[0] if len(set(found)) == 1 else UNPARSED
    words = _WORD.findall(norm)
    for word in words[:4]:  # a few filler words may precede the answer
        if word in _YES_WORDS:
            return YES
        if word in _NO_WORDS:
            return NO
        if word not in _FILLERS:
            break
    sentences = {s.strip(" ,;:!()") for s in re.split(r"[.!?\n]", norm)}
    bare = {s for s in sentences if s in ("yes", "no")}
    return bare.pop() if len(bare) == 1 else UNPARSED


# ---------------------------------------------------------------- region rendering

REGIONS = ("crop", "box")


def pixel_box(bbox: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Normalised xyxy -> integer pixel box (at least one pixel wide and high)."""
    x1, y1, x2, y2 = bbox
    px1, py1 = int(x1 * width), int(y1 * height)
    px2 = max(px1 + 1, min(width, round(x2 * width)))
    py2 = max(py1 + 1, min(height, round(y2 * height)))
    return px1, py1, px2, py2


def render_region(
    image: Image.Image, bbox: Sequence[float], mode: str, margin: float = 0.15, min_side: int = 56
) -> Image.Image:
    """What the judge sees for one entity.

    'crop': the box widened by `margin` x its width/height on each side (clamped to the image),
    so the judge sees some context; crops smaller than `min_side` are upscaled (bicubic).
    'box': the whole image with the box drawn in red (line width 0.5% of the longer side, >= 2 px).
    """
    from PIL import Image, ImageDraw

    width, height = image.size
    x1, y1, x2, y2 = pixel_box(bbox, width, height)
    if mode == "crop":
        dx, dy = round((x2 - x1) * margin), round((y2 - y1) * margin)
        crop = image.crop((max(0, x1 - dx), max(0, y1 - dy), min(width, x2 + dx), min(height, y2 + dy)))
        short = min(crop.size)
        if short < min_side:
            scale = min_side / short
            crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.BICUBIC)
        return crop
    if mode == "box":
        out = image.copy()
        line = max(2, round(0.005 * max(width, height)))
        ImageDraw.Draw(out).rectangle((x1, y1, x2 - 1, y2 - 1), outline=(255, 0, 0), width=line)
        return out
    raise InputError(f"unknown region mode {mode!r}; choose one of {REGIONS}", field="region")


# ---------------------------------------------------------------- transformers backend


class TransformersJudge:
    """A judge on transformers: batched greedy generation."""

    def __init__(self, model: Any, processor: Any, preset: JudgePreset, max_new_tokens: int):
        self.model = model
        self.processor = processor
        self.preset = preset
        self.max_new_tokens = max_new_tokens

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        if self.preset.handler == "chat_template":
            return self._chat_template(images, questions)
        if self.preset.handler == "internvl2":
            return self._internvl2(images, questions)
        return [self._cogvlm2(image, q) for image, q in zip(images, questions, strict=True)]

    def _chat_template(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        import torch

        texts = [
            self.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
                add_generation_prompt=True,
                tokenize=False,
            )
            for q in questions
        ]
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        tokenizer.padding_side = "left"  # decoder-only batched generation pads on the left
        inputs = self.processor(text=texts, images=list(images), return_tensors="pt", padding=True)
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]

    def _internvl2(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        # InternVL2 model card: dynamic 448 px tiles + thumbnail, ImageNet normalisation,
        # `batch_chat` with one '<image>' placeholder per question.
        import torch

        tiles = [internvl_tiles(image) for image in images]
        pixel_values = torch.cat(tiles).to(self.model.device, self.model.dtype)
        return list(
            self.model.batch_chat(
                self.processor,
                pixel_values,
                num_patches_list=[t.shape[0] for t in tiles],
                questions=[f"<image>\n{q}" for q in questions],
                generation_config={"max_new_tokens": self.max_new_tokens, "do_sample": False},
            )
        )

    def _cogvlm2(self, image: Image.Image, q: str) -> str:
        # CogVLM2 model card: build_conversation_input_ids(template_version='chat'), one at a time.
        import torch

        built = self.model.build_conversation_input_ids(
            self.processor, query=q, history=[], images=[image], template_version="chat"
        )
        device, dtype = self.model.device, self.model.dtype
        inputs = {
            "input_ids": built["input_ids"].unsqueeze(0).to(device),
            "token_type_ids": built["token_type_ids"].unsqueeze(0).to(device),
            "attention_mask": built["attention_mask"].unsqueeze(0).to(device),
            "images": [[built["images"][0].to(device, dtype)]],
        }
        with torch.no_grad():
            out = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=128002
            )
        text = self.processor.decode(out[0, inputs["input_ids"].shape[1]:])
        return text.split("<|end_of_text|>")[0].strip()


# The InternVL2 model card's image preprocessing (huggingface.co/OpenGVLab/InternVL2-8B, README
# "Inference with Transformers": build_transform, find_closest_aspect_ratio, dynamic_preprocess,
# load_image with input_size=448, max_num=12, use_thumbnail=True).
INTERNVL_SIZE, INTERNVL_MAX_TILES = 448, 12
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def internvl_grids(min_num: int = 1, max_num: int = INTERNVL_MAX_TILES) -> list[tuple[int, int]]:
    """Candidate (columns, rows) grids in the card's order: its set, sorted by tile count (stable)."""
    grids = {(i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
             if min_num <= i * j <= max_num}
    return sorted(grids, key=lambda g: g[0] * g[1])


def internvl_grid(width: int, height: int, size: int = INTERNVL_SIZE, max_num: int = INTERNVL_MAX_TILES
                  ) -> tuple[int, int]:
    """The card's `find_closest_aspect_ratio`: the grid closest in aspect; on a tie the later (larger)
    grid wins when the image covers more than half of that grid's pixels."""
    aspect, area = width / height, width * height
    best, best_diff = (1, 1), float("inf")
    for grid in internvl_grids(1, max_num):
        diff = abs(aspect - grid[0] / grid[1])
        if diff < best_diff:
            best, best_diff = grid, diff
        elif diff == best_diff and area > 0.5 * size * size * grid[0] * grid[1]:
            best = grid
    return best


def internvl_tiles(image: Image.Image, size: int = INTERNVL_SIZE, max_num: int = INTERNVL_MAX_TILES) -> Any:
    """The card's `load_image`: `dynamic_preprocess` tiles (+ a thumbnail when there are several),
    each through `build_transform` (bicubic resize to size x size, ImageNet normalisation)."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    image = image.convert("RGB")
    cols, rows = internvl_grid(image.width, image.height, size, max_num)
    resized = image.resize((size * cols, size * rows))
    tiles = [resized.crop((c * size, r * size, (c + 1) * size, (r + 1) * size)) for r in range(rows) for c in range(cols)]
    if len(tiles) > 1:
        tiles.append(image.resize((size, size)))
    tensors = [F.to_tensor(F.resize(t, [size, size], interpolation=InterpolationMode.BICUBIC)) for t in tiles]
    return torch.stack([F.normalize(t, IMAGENET_MEAN, IMAGENET_STD) for t in tensors])


def load_transformers_judge(
    path: str, preset: JudgePreset, revision: str | None, device: str, dtype: str | None, max_new_tokens: int
) -> TransformersJudge:
    """Load a judge with transformers (hub id or local directory, same code path)."""
    import torch

    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    common = {"revision": revision, "trust_remote_code": preset.trust_remote_code}
    if preset.handler == "chat_template":
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(path, **common)
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype, **common)
    else:
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        processor = AutoTokenizer.from_pretrained(path, use_fast=False, **common)
        cls = AutoModel if preset.handler == "internvl2" else AutoModelForCausalLM
        model = cls.from_pretrained(path, dtype=torch_dtype, low_cpu_mem_usage=True, **common)
    return TransformersJudge(model.to(device).eval(), processor, preset, max_new_tokens)


# ---------------------------------------------------------------- vLLM backend


class VllmJudge:
    """A judge on vLLM (`pip install eligen-bench[vllm]`, GPU): greedy `LLM.chat`, batched."""

    def __init__(self, llm: Any, max_new_tokens: int):
        self.llm = llm
        self.max_new_tokens = max_new_tokens

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        from vllm import SamplingParams

        conversations = [
            [{"role": "user", "content": [{"type": "image_pil", "image_pil": image}, {"type": "text", "text": q}]}]
            for image, q in zip(images, questions, strict=True)
        ]
        params = SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens)
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]


def load_vllm_judge(path: str, preset: JudgePreset, revision: str | None, max_new_tokens: int) -> VllmJudge:
    if not preset.vllm_supported:
        raise InputError(
            f"judge {preset.name!r} ({preset.model_id}) is not supported by the vllm backend; "
            "use backend='transformers'",
            field="backend",
        )
    try:
        import vllm
    except ImportError as exc:
        raise InputError(
            "backend 'vllm' needs the optional vllm package (pip install 'eligen-bench[vllm]', "
            "GPU only); or use backend='transformers'",
            field="backend",
        ) from exc
    llm = vllm.LLM(
        model=path, revision=revision, trust_remote_code=preset.trust_remote_code,
        limit_mm_per_prompt={"image": 1}, max_model_len=8192, seed=0,
    )
    return VllmJudge(llm, max_new_tokens)


# ---------------------------------------------------------------- tiny profile

_TINY_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
# Qwen2-VL's chat format (image placeholder inside vision start/end), without the system turn.
_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tiny_tokenizer() -> Any:
    """Byte-level BPE without merges plus Qwen2-VL's special tokens: real, offline, 263 tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {"<|endoftext|>": 0}
    # alphabet() is a set of str, whose order follows the process's hash seed: sort it, so every
    # process builds the same vocabulary (and the same judge answers).
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": _TINY_SPECIALS})
    return tokenizer


def build_tiny_qwen2vl(directory: str, seed: int = 0) -> None:
    """Save a tiny random Qwen2-VL (1 text layer, 1 vision block, width 32) + processor to `directory`."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tokenizer = _tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _TINY_SPECIALS}
    # Small images (<= 112x112 after resizing) keep the vision sequence short on CPU.
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112})
    processor = Qwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(), chat_template=_TINY_CHAT_TEMPLATE,
    )
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 2, 4]},
            "max_position_embeddings": 2048, "bos_token_id": 0, "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": 0,
        },
        vision_config={
            "depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=0, eos_token_id=ids["<|im_end|>"], pad_token_id=0,
    )
    torch.manual_seed(seed)
    Qwen2VLForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
