"""The LayoutSAM-Eval judge: MiniCPM-V 2.6 answering one question about one crop at a time.

The reference calls the model's own `chat()` (its hub repository's remote code) once per
question, batch 1, as `model.chat(image=None, msgs=[{'role': 'user', 'content': [crop,
question]}], tokenizer=tokenizer, seed=42)` (HuiZhang0812/CreatiLayout@860d8bd:
score_layoutsam_benchmark.py:74-81), after loading the model in bfloat16 with SDPA attention
(:12-13).

What `chat()` does with that call (modeling_minicpmv.py of openbmb/MiniCPM-V-2_6, as read in two
public copies of the file; the hub file itself could not be read where this was written):
`sampling=True` by default, so generation samples with `top_p=0.8, top_k=100, temperature=0.7,
repetition_penalty=1.05` and `max_new_tokens=2048`; extra keyword arguments are kept only when
they name one of those generation settings (`generation_config.update((k, kwargs[k]) for k in
generation_config.keys() & kwargs.keys())`), so `seed=42` is dropped and never seeds anything.
The reference's answers therefore come from torch's unseeded global generator, one long stream
over the whole run, which no sharded or resumed run can reproduce. Here torch's generator is
seeded with `seed` (42) before every call, so each answer depends only on its crop and question.
`decoding` chooses the generation: 'sample' (default, the chat() defaults above), 'greedy'
(`sampling=False, num_beams=1, repetition_penalty=1.0`), or 'beam' (chat()'s own
`sampling=False` setting: `num_beams=3, repetition_penalty=1.2`).

Backends:
- 'transformers': the remote code, only from a pinned snapshot. A hub id needs a 40-hex
  `revision`; the whole repository is fetched at that commit, its Python files are hashed
  (sha256 each, and one digest over them all) and the model is loaded from that folder, so the
  code that runs is the code that was hashed (the model's own `__init__` loads its processor from
  the same folder). A local folder runs only with `remote_code_sha256` given and matching.
  The remote code was written for transformers 4.4x (its authors reproduced with 4.43); see the
  README for the environment it runs in.
- 'vllm': vLLM's own MiniCPM-V implementation (its config and processor still come from the
  same pinned, hashed folder), prompts built as `chat()` builds them, SamplingParams with the
  same settings and a per-request seed. Its kernels differ from transformers', so its answers can
  differ in places.
- tiny profile: a random tiny Qwen2-VL (a native transformers model) driven through the same
  decoding settings and per-call seeding; MiniCPM-V's remote code and chat template are not
  exercised by it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eligen_bench.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

MODEL_ID = "openbmb/MiniCPM-V-2_6"
"""The judge the reference names (score_layoutsam_benchmark.py:11 at 80d76c0-227c5c7; the later
commits name a private copy of it; ContextGen's layoutsam_eval.py:46 names the hub id)."""
REVISION = "3f7a8da1b7a8b928b5ee229fae33cf43fd64cf31"
"""A commit of the hub repository, as linked from public code (image_processing_minicpmv.py at
this commit). The reference loaded whatever its copy held; which commit that was is unknown."""
SEED = 42
CHAT_SAMPLING = {"top_p": 0.8, "top_k": 100, "temperature": 0.7, "do_sample": True, "repetition_penalty": 1.05}
CHAT_BEAM = {"num_beams": 3, "repetition_penalty": 1.2}
CHAT_MAX_NEW_TOKENS = 2048
CHAT_MAX_INPUT = 8192
"""chat()'s defaults: `sampling=True`, `max_new_tokens=2048`, `max_inp_length=8192`."""
DECODINGS = ("sample", "greedy", "beam")
BACKENDS = ("transformers", "vllm")
TERMINATORS = ("<|im_end|>", "<|endoftext|>")
"""chat()'s stop tokens for the Qwen2-based MiniCPM-V 2.6 (`self.terminators`)."""
_COMMIT = re.compile(r"[0-9a-f]{40}")


def chat_arguments(decoding: str) -> dict[str, Any]:
    """Keyword arguments besides `seed` that the judge passes to chat() for `decoding`."""
    return {"sample": {}, "greedy": {"sampling": False, "num_beams": 1, "repetition_penalty": 1.0},
            "beam": {"sampling": False}}[check_decoding(decoding)]


def generation_settings(decoding: str) -> dict[str, Any]:
    """What chat() hands to `generate()` for `decoding` (besides `max_new_tokens`)."""
    return {"sample": dict(CHAT_SAMPLING), "greedy": {"do_sample": False, "num_beams": 1, "repetition_penalty": 1.0},
            "beam": {**CHAT_BEAM, "do_sample": False}}[check_decoding(decoding)]


def check_decoding(decoding: str) -> str:
    if decoding not in DECODINGS:
        raise InputError(f"unknown decoding {decoding!r}; choose one of {DECODINGS}", field="decoding")
    return decoding


def seed_torch(seed: int) -> None:
    """Seed torch's global generators (CPU and every CUDA device) before one answer."""
    import torch

    torch.manual_seed(seed)


# ---------------------------------------------------------------- judges


class ChatJudge:
    """MiniCPM-V's own `chat()`, one question at a time, as the reference calls it."""

    def __init__(self, model: Any, tokenizer: Any, processor: Any, decoding: str, seed: int = SEED,
                 max_new_tokens: int = CHAT_MAX_NEW_TOKENS, remote_code: str | None = None):
        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.decoding, self.seed, self.max_new_tokens = check_decoding(decoding), seed, max_new_tokens
        self.remote_code = remote_code
        """The digest of the remote code that runs (None when no remote code runs)."""

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        answers = []
        for image, question in zip(images, questions, strict=True):
            seed_torch(self.seed)
            msgs = [{"role": "user", "content": [image, question]}]
            extra = {} if self.max_new_tokens == CHAT_MAX_NEW_TOKENS else {"max_new_tokens": self.max_new_tokens}
            answers.append(str(self.model.chat(image=None, msgs=msgs, tokenizer=self.tokenizer, processor=self.processor,
                                               seed=self.seed, **chat_arguments(self.decoding), **extra)))
        return answers


class TemplateJudge:
    """A native chat-template VLM (the tiny profile's stand-in) with chat()'s decoding settings."""

    def __init__(self, model: Any, processor: Any, decoding: str, seed: int = SEED,
                 max_new_tokens: int = CHAT_MAX_NEW_TOKENS):
        self.model, self.processor = model, processor
        self.decoding, self.seed, self.max_new_tokens = check_decoding(decoding), seed, max_new_tokens
        self.remote_code = None

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        import torch

        answers = []
        for image, question in zip(images, questions, strict=True):
            seed_torch(self.seed)
            text = self.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
                add_generation_prompt=True, tokenize=False)
            inputs = self.processor(text=[text], images=[image], return_tensors="pt").to(self.model.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            with torch.no_grad():
                out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                          **generation_settings(self.decoding))
            new = out[:, inputs["input_ids"].shape[1]:]
            answers.append(self.processor.batch_decode(new, skip_special_tokens=True)[0].strip())
        return answers


class VllmJudge:
    """vLLM's MiniCPM-V: prompts as chat() builds them, chat()'s settings, one seed per request."""

    def __init__(self, llm: Any, decoding: str, seed: int = SEED, max_new_tokens: int = CHAT_MAX_NEW_TOKENS,
                 remote_code: str | None = None):
        if check_decoding(decoding) == "beam":
            raise InputError("decoding='beam' is chat()'s beam search, which the vllm backend does not run; "
                             "use backend='transformers'", field="decoding")
        self.llm, self.decoding, self.seed, self.max_new_tokens = llm, decoding, seed, max_new_tokens
        self.remote_code = remote_code
        self.tokenizer = llm.get_tokenizer()

    def prompt(self, question: str) -> str:
        # chat() puts "(<image>./</image>)" and the question on two lines of one user turn.
        return self.tokenizer.apply_chat_template([{"role": "user", "content": f"(<image>./</image>)\n{question}"}],
                                                  tokenize=False, add_generation_prompt=True)

    def sampling_params(self) -> Any:
        from vllm import SamplingParams

        settings = generation_settings(self.decoding)
        stop = [self.tokenizer.convert_tokens_to_ids(t) for t in TERMINATORS]
        if self.decoding == "sample":
            return SamplingParams(temperature=settings["temperature"], top_p=settings["top_p"], top_k=settings["top_k"],
                                  repetition_penalty=settings["repetition_penalty"], max_tokens=self.max_new_tokens,
                                  seed=self.seed, stop_token_ids=stop)
        return SamplingParams(temperature=0.0, repetition_penalty=1.0, max_tokens=self.max_new_tokens,
                              seed=self.seed, stop_token_ids=stop)

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        requests = [{"prompt": self.prompt(q), "multi_modal_data": {"image": image}}
                    for image, q in zip(images, questions, strict=True)]
        outputs = self.llm.generate(requests, self.sampling_params(), use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]


# ---------------------------------------------------------------- pinned remote code


def code_digests(directory: Path) -> dict[str, str]:
    """sha256 of every Python file of a model folder (hidden folders, e.g. caches, left out)."""
    directory = Path(directory)
    found = {}
    for path in sorted(directory.rglob("*.py")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts):
            continue
        found[relative.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def combined_digest(digests: dict[str, str]) -> str:
    """One sha256 over `<sha256>  <path>` lines in path order: the remote code's identity."""
    text = "".join(f"{digest}  {path}\n" for path, digest in sorted(digests.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pinned_model_dir(model_id: str, revision: str | None, expected: str | None,
                     snapshot: Any = None) -> tuple[Path, dict[str, str], str]:
    """The folder whose remote code may run, its per-file digests and their combined digest.

    A hub id is fetched at `revision` (a 40-hex commit, else refused); a local folder needs
    `expected`. When `expected` is given, the combined digest must equal it.
    """
    local = Path(model_id).expanduser()
    if local.is_dir():
        if not expected:
            raise InputError(f"{model_id} is a local folder whose code would run: pass remote_code_sha256=<the "
                             "combined digest of its Python files> to pin it", field="remote_code_sha256")
        directory = local
    else:
        if revision is None or not _COMMIT.fullmatch(str(revision)):
            raise InputError(f"{model_id} runs its hub repository's own code: pin it with revision=<40-hex commit>, "
                             f"got {revision!r}", field="revision")
        if snapshot is None:
            from huggingface_hub import snapshot_download as snapshot
        try:
            directory = Path(snapshot(model_id, revision=revision))
        except Exception as exc:  # network, gated repository, disk: one line
            raise InputError(f"cannot fetch {model_id}@{revision} ({type(exc).__name__}: {exc}); the repository is "
                             "gated: accept its terms on the hub and log in", field="model_id") from None
    digests = code_digests(directory)
    if not digests:
        raise InputError(f"{directory} holds no Python files: not a remote-code model folder", field="model_id")
    combined = combined_digest(digests)
    if expected and combined != expected:
        raise InputError(f"the remote code's digest {combined} is not the pinned {expected} "
                         f"(files: {', '.join(f'{p}={d[:12]}' for p, d in digests.items())})", field="remote_code_sha256")
    return directory, digests, combined


def dtype_argument(dtype: Any) -> dict[str, Any]:
    """`dtype=` for transformers >= 4.56, `torch_dtype=` for the 4.4x the remote code targets."""
    import transformers
    from packaging.version import Version

    return {"dtype": dtype} if Version(transformers.__version__) >= Version("4.56") else {"torch_dtype": dtype}


def load_chat_judge(model_id: str, revision: str | None, expected: str | None, device: str, dtype: str,
                    decoding: str, seed: int, max_new_tokens: int) -> ChatJudge:
    """MiniCPM-V 2.6 through its remote code, from the pinned and hashed folder (the reference's
    `AutoModel.from_pretrained(..., trust_remote_code=True, attn_implementation='sdpa',
    torch_dtype=torch.bfloat16)`, score_layoutsam_benchmark.py:12-15)."""
    import torch
    from transformers import AutoModel, AutoProcessor, AutoTokenizer

    directory, _, combined = pinned_model_dir(model_id, revision, expected)
    path = str(directory)
    model = AutoModel.from_pretrained(path, trust_remote_code=True, attn_implementation="sdpa",
                                      **dtype_argument(getattr(torch, dtype)))
    model = model.eval().to(device)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    return ChatJudge(model, tokenizer, processor, decoding, seed, max_new_tokens, remote_code=combined)


def load_vllm_judge(model_id: str, revision: str | None, expected: str | None, dtype: str, decoding: str,
                    seed: int, max_new_tokens: int) -> VllmJudge:
    try:
        import vllm
    except ImportError as exc:
        raise InputError("backend 'vllm' needs the optional vllm package (pip install 'eligen-bench[vllm]', GPU only); "
                         "or use backend='transformers'", field="backend") from exc
    directory, _, combined = pinned_model_dir(model_id, revision, expected)
    llm = vllm.LLM(model=str(directory), trust_remote_code=True, dtype=dtype, seed=seed,
                   limit_mm_per_prompt={"image": 1}, max_model_len=CHAT_MAX_INPUT + max_new_tokens)
    return VllmJudge(llm, decoding, seed, max_new_tokens, remote_code=combined)


def load_tiny_judge(device: str, decoding: str, seed: int, max_new_tokens: int) -> TemplateJudge:
    """The tiny random Qwen2-VL of the VLM metrics, saved and reloaded through from_pretrained."""
    import tempfile

    from transformers import AutoModelForImageTextToText, AutoProcessor

    from eligen_bench.metrics.vlm.judges import build_tiny_qwen2vl

    with tempfile.TemporaryDirectory(prefix="tiny-layoutsam-judge-") as directory:
        build_tiny_qwen2vl(directory)
        processor = AutoProcessor.from_pretrained(directory)
        model = AutoModelForImageTextToText.from_pretrained(directory).to(device).eval()
    return TemplateJudge(model, processor, decoding, seed, max_new_tokens)
