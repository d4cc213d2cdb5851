"""`vlm_success`: Entity Success Rate judged by a VLM (EliGen paper, Sec. 5.1 and Table 1).

For every entity a VLM judge sees the entity's region and is asked whether the entity described
by its prompt is present there; it answers in free text, parsed into yes / no / unparsed.
Row value: 1.0 (yes), 0.0 (no), NaN with status 'unparsed' (never silently 'no'). The reported
rate (x100, in %) is the mean over parsed answers; `summarize` also gives the unparsed count and
the strict rate (yes over all entities), so a judge that rambles is visible, not hidden.

How the region is shown (`region` option):
- 'crop' (default): the entity's box widened by `margin` (15% of the box's width/height on each
  side, clamped to the image) and cropped, so the judge sees the entity plus a little context;
  tiny crops are upscaled to 56 px on the short side. Works with every judge, also those that do
  not follow drawn marks well.
- 'box': the whole image with the box drawn as a red rectangle, and a prompt that refers to it.

Judges (`judge` option), the paper's three: 'qwen2vl' (Qwen/Qwen2-VL-7B-Instruct), 'internvl2'
(OpenGVLab/InternVL2-8B), 'cogvlm2' (THUDM/cogvlm2-llama3-chat-19B); `model_id` / `revision`
override the preset's. The paper does not publish its judge prompt: ours is versioned
(`template_version`) and recorded, id and text, in the metric identity.

Tiny profile: a random tiny Qwen2-VL built from a config, saved and reloaded through the same
`from_pretrained` path; its answers are gibberish, so most rows are honestly 'unparsed'.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from eligen_bench.api.metric import Metric, ScoreItem, ScoreRow, row
from eligen_bench.errors import InputError
from eligen_bench.metrics.vlm import judges as vj
from eligen_bench.tiny import TINY_WARNING

BACKENDS = ("transformers", "vllm")
ANSWER_CHARS = 200
"""Raw answers are kept in the row detail, truncated to this many characters."""


JUDGE_TITLES = {"qwen2vl": "Qwen2-VL", "internvl2": "InternVL2", "cogvlm2": "CogVLM2"}
"""How tables print each judge preset."""


class VlmSuccess(Metric):
    """Per-entity yes/no judgement of a VLM; the mean is the Entity Success Rate."""

    name = "vlm_success"
    display_name = "Entity Success"
    level = "entity"
    higher_is_better = True
    scale = 100.0
    description = "Entity Success Rate (%): a VLM judges whether each entity is present in its region"
    # The paper publishes no judge code; each judge is called as its model card shows.
    reference: ClassVar[str] = ("model cards: huggingface.co/Qwen/Qwen2-VL-7B-Instruct (chat template), "
                                "huggingface.co/OpenGVLab/InternVL2-8B (dynamic_preprocess, batch_chat), "
                                "huggingface.co/THUDM/cogvlm2-llama3-chat-19B (build_conversation_input_ids)")
    defaults: ClassVar[dict[str, Any]] = {
        "judge": "qwen2vl",
        "model_id": None,
        "revision": None,
        "backend": "transformers",
        "region": "crop",
        "margin": 0.15,
        "template_version": "v1",
        "max_new_tokens": None,
        "dtype": None,
    }

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        o = self.options
        base = vj.preset(o["judge"])
        if o["backend"] not in BACKENDS:
            raise InputError(f"unknown backend {o['backend']!r}; choose one of {BACKENDS}", field="backend")
        if o["region"] not in vj.REGIONS:
            raise InputError(f"unknown region mode {o['region']!r}; choose one of {vj.REGIONS}", field="region")
        if isinstance(o["margin"], bool) or not isinstance(o["margin"], (int, float)) or not 0 <= o["margin"] <= 2:
            raise InputError(f"must be a number in [0, 2], got {o['margin']!r}", field="margin")
        self.template_id = vj.template_id(o["region"], o["template_version"])
        judge = replace(
            base,
            model_id=o["model_id"] or base.model_id,
            revision=o["revision"] if o["revision"] is not None else base.revision,
            max_new_tokens=int(o["max_new_tokens"] or base.max_new_tokens),
        )
        if self.profile == "tiny":  # every judge runs as the tiny chat-template model
            judge = replace(judge, model_id=vj.TINY_MODEL_ID, revision=None, handler="chat_template",
                            trust_remote_code=False, vllm_supported=True)
        self.judge = judge

    # -- identity

    def title(self) -> str:
        # The EliGen paper's Table 1 names each judge's column after the judge.
        judge = self.options["judge"]
        return f"{self.display_name} ({JUDGE_TITLES.get(judge, judge)})"

    def model_ids(self) -> dict[str, str]:
        return {"judge": self.judge.model_id, "judge_revision": self.judge.revision or "default"}

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["judge"] = vj.preset_record(self.judge)
        ident["template"] = {"id": self.template_id, "text": vj.TEMPLATES[self.template_id]}
        if self.judge.handler == "internvl2":  # the image tiling changes what the judge sees
            ident["preprocessing"] = {"rule": "model-card dynamic_preprocess", "size": vj.INTERNVL_SIZE,
                                      "max_num": vj.INTERNVL_MAX_TILES, "thumbnail": True}
        if self.profile == "tiny":
            ident["warning"] = TINY_WARNING
        return ident

    # -- loading

    def load(self) -> Any:
        if self.options["backend"] == "vllm":
            _require_vllm()
        device = self.resolve_device()
        key = ("vlm_judge", self.judge.model_id, self.judge.revision, self.options["backend"],
               self.profile, device, self.options["dtype"], self.judge.max_new_tokens)
        self._judge_key = key
        return self.cache.get(key, lambda: self._build(device))

    _judge_key: tuple | None = None

    def release(self) -> None:
        """Judges are the largest models of a run (7B-19B): free this one before the next metric
        loads, so a run with the paper's three judges needs memory for one at a time."""
        owned = self._owns_model
        super().release()
        if owned and self._judge_key is not None:
            self.cache.drop(self._judge_key)
            from eligen_bench.api.generator import release_cuda_memory

            release_cuda_memory()

    def _build(self, device: str) -> Any:
        if self.profile == "tiny":
            with tempfile.TemporaryDirectory(prefix="tiny-qwen2vl-") as directory:
                vj.build_tiny_qwen2vl(directory)
                return self._load_from(directory, device)
        return self._load_from(self.judge.model_id, device)

    def _load_from(self, path: str, device: str) -> Any:
        if self.options["backend"] == "vllm":
            return vj.load_vllm_judge(path, self.judge, self.judge.revision, self.judge.max_new_tokens)
        return vj.load_transformers_judge(
            path, self.judge, self.judge.revision, device, self.options["dtype"], self.judge.max_new_tokens
        )

    # -- scoring

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        jobs: list[tuple[ScoreItem, int, Any, str]] = []
        for item in items:
            if not item.layout.entities:
                continue
            image = item.load_image()
            for index, entity in enumerate(item.layout.entities):
                view = vj.render_region(image, entity.bbox, self.options["region"], float(self.options["margin"]))
                jobs.append((item, index, view, vj.question(self.template_id, entity.prompt)))
        answers: list[str] = []
        step = max(1, self.batch_size)
        for start in range(0, len(jobs), step):
            chunk = jobs[start : start + step]
            got = list(self.model.answer([j[2] for j in chunk], [j[3] for j in chunk]))
            if len(got) != len(chunk):
                raise RuntimeError(f"judge returned {len(got)} answers for {len(chunk)} questions")
            answers.extend(got)
        return [self._row(item, index, answer) for (item, index, _, _), answer in zip(jobs, answers, strict=True)]

    def _row(self, item: ScoreItem, index: int, answer: str) -> ScoreRow:
        verdict = vj.parse_answer(answer)
        value = {vj.YES: 1.0, vj.NO: 0.0}.get(verdict, math.nan)
        detail: dict[str, Any] = {
            "judge": self.judge.name,
            "model": self.judge.model_id,
            "template": self.template_id,
            "region": self.options["region"],
            "answer": str(answer)[:ANSWER_CHARS],
            "parsed": verdict,
        }
        if self.profile == "tiny":
            detail["warning"] = TINY_WARNING
        status = "ok" if verdict in (vj.YES, vj.NO) else "unparsed"
        return row(self, item, value, entity_index=index, status=status, **detail)


def summarize(rows: Iterable[ScoreRow]) -> dict[str, float | int]:
    """Counts and rates of `vlm_success` rows.

    `success_rate`: yes / (yes + no), the metric's value; `strict_success_rate`: yes / all
    entities (unparsed counted as failures); `unparsed`: how many answers could not be read.
    """
    rows = [r for r in rows if r.metric == VlmSuccess.name]
    yes = sum(1 for r in rows if r.status == "ok" and r.value == 1.0)
    no = sum(1 for r in rows if r.status == "ok" and r.value == 0.0)
    unparsed = sum(1 for r in rows if r.status == "unparsed")
    total = len(rows)
    return {
        "entities": total,
        "yes": yes,
        "no": no,
        "unparsed": unparsed,
        "success_rate": yes / (yes + no) if yes + no else math.nan,
        "strict_success_rate": yes / total if total else math.nan,
        "unparsed_rate": unparsed / total if total else math.nan,
    }


def _require_vllm() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise InputError(
            "backend 'vllm' needs the optional vllm package (pip install 'eligen-bench[vllm]', "
            "GPU only); or use backend='transformers'",
            where="metric 'vlm_success'",
            field="backend",
        ) from exc
