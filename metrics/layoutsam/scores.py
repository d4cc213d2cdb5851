"""LayoutSAM-Eval's four region scores, as its own scorer computes them.

For every ground-truth box of a layout, the judge (MiniCPM-V 2.6, `judge.py`) sees the box's
crop of the generated image and answers the spatial question about the entity's region
caption; only after a spatial yes is it asked whether the crop's colour, texture and shape
agree with the entity's detailed description; otherwise those count 0. A yes is the script's
substring test. Both captions lose their '/' first. (HuiZhang0812/CreatiLayout@860d8bd:
score_layoutsam_benchmark.py:53-136; `protocol.py` holds the text and arithmetic.)

Four metrics, one per score: `layoutsam_spatial`, `layoutsam_color`, `layoutsam_texture`,
`layoutsam_shape`. Each writes one row per box, 1.0 or 0.0; the report's value (x100) is the
mean over all rows, i.e. yes-count over all boxes of all images, the script's aggregate
(:161-189). The four share the run's model cache: the judge is loaded under one key and each
answer is memoised by image content, crop, question and judge, so the spatial question of a box is
asked once per process when all four run. Attribute metrics need entity descriptions (LayoutSAM-Eval
suites carry them).

What the judge sees (`crop`): by default each box scaled by the generated image's own width and
height; `crop='fixed', crop_resolution=512|1024` reproduces the script's single hard-coded
resolution exactly (float32 product, truncation), for parity with its published numbers.
`jpeg_quality=75` (default) scores the image after the JPEG round trip the reference's saved
`.jpg` files went through; `jpeg_quality=null` (None) scores the PNG as generated. An empty crop (a box
thinner than a pixel at the image's size) scores 0 on all four without asking the judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from eligen_bench.api.metric import Metric, ScoreItem, ScoreRow, row
from eligen_bench.errors import InputError
from eligen_bench.layout import Entity
from eligen_bench.metrics.layoutsam import judge as jd
from eligen_bench.metrics.layoutsam import protocol as pr
from eligen_bench.tiny import TINY_WARNING

ANSWER_CHARS = 200
TINY_MAX_NEW_TOKENS = 8
"""The tiny stand-in's answers are random tokens; a few are enough to exercise the path."""
DTYPES = ("bfloat16", "float16", "float32")


class LayoutSamScore(Metric):
    """One of LayoutSAM-Eval's region scores (the subclass names which)."""

    aspect: ClassVar[str] = "spatial"
    level = "entity"
    higher_is_better = True
    scale = 100.0
    in_default_run = False  # an 8B judge and suites with descriptions: opt in by name
    reference: ClassVar[str] = (f"{pr.REFERENCE} (judge openbmb/MiniCPM-V-2_6 remote code chat()); "
                                "nenhang/ContextGen@f22fa90: bench/sample_scripts/layoutsam/layoutsam_eval.py (crop by image size)")
    defaults: ClassVar[dict[str, Any]] = {
        "backend": "transformers",
        "model_id": jd.MODEL_ID,
        "revision": jd.REVISION,
        "remote_code_sha256": None,
        "decoding": "sample",
        "seed": jd.SEED,
        "max_new_tokens": jd.CHAT_MAX_NEW_TOKENS,
        "crop": "image-size",
        "crop_resolution": None,
        "jpeg_quality": 75,
        "dtype": "bfloat16",
    }

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        o = self.options
        where = f"metric {self.name!r}"
        if o["backend"] not in jd.BACKENDS:
            raise InputError(f"unknown backend {o['backend']!r}; choose one of {jd.BACKENDS}", where=where, field="backend")
        jd.check_decoding(o["decoding"])
        if o["crop"] not in pr.CROPS:
            raise InputError(f"unknown crop {o['crop']!r}; choose one of {pr.CROPS}", where=where, field="crop")
        resolution = o["crop_resolution"]
        if o["crop"] == "fixed" and (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1):
            raise InputError(f"crop='fixed' needs crop_resolution=<pixels> (512 for the script's FLUX model, 1024 "
                             f"for SD3), got {resolution!r}", where=where, field="crop_resolution")
        if o["crop"] == "image-size" and resolution is not None:
            raise InputError("crop_resolution applies only with crop='fixed'", where=where, field="crop_resolution")
        quality = o["jpeg_quality"]
        if quality is not None and (isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100):
            raise InputError(f"must be an integer in [1, 100] or None, got {quality!r}", where=where, field="jpeg_quality")
        for name in ("seed", "max_new_tokens"):
            value = o[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 1):
                raise InputError(f"must be a {'non-negative' if name == 'seed' else 'positive'} integer, got {value!r}",
                                 where=where, field=name)
        if o["dtype"] not in DTYPES:
            raise InputError(f"unknown dtype {o['dtype']!r}; choose one of {DTYPES}", where=where, field="dtype")
        self.max_new_tokens = TINY_MAX_NEW_TOKENS if self.profile == "tiny" else int(o["max_new_tokens"])

    # -- identity

    def model_ids(self) -> dict[str, str]:
        if self.profile == "tiny":
            return {"judge": "tiny-random-qwen2vl (stand-in)"}
        return {"judge": str(self.options["model_id"]), "judge_revision": str(self.options["revision"])}

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["aspect"] = self.aspect
        ident["questions"] = {"spatial": pr.spatial_question("{description}"),
                              **({} if self.aspect == "spatial" else
                                 {self.aspect: pr.attribute_question(self.aspect, "{description}", "{detail_description}")})}
        ident["decoding_settings"] = {**jd.generation_settings(self.options["decoding"]),
                                      "max_new_tokens": self.max_new_tokens,
                                      "rng": f"torch.manual_seed({self.options['seed']}) before each answer"}
        if self.profile == "tiny":
            ident["warning"] = TINY_WARNING
        return ident

    # -- loading

    def judge_key(self, device: str) -> tuple:
        o = self.options
        return ("layoutsam_judge", self.profile, o["backend"], o["model_id"], o["revision"], o["remote_code_sha256"],
                o["decoding"], o["seed"], self.max_new_tokens, device, o["dtype"])

    def load(self) -> Any:
        device = self.resolve_device()
        self._judge_key = self.judge_key(device)
        return self.cache.get(self._judge_key, lambda: self._build(device))

    _judge_key: tuple | None = None

    def _build(self, device: str) -> Any:
        o = self.options
        if self.profile == "tiny":
            return jd.load_tiny_judge(device, o["decoding"], o["seed"], self.max_new_tokens)
        if o["backend"] == "vllm":
            return jd.load_vllm_judge(o["model_id"], o["revision"], o["remote_code_sha256"], o["dtype"],
                                      o["decoding"], o["seed"], self.max_new_tokens)
        return jd.load_chat_judge(o["model_id"], o["revision"], o["remote_code_sha256"], device, o["dtype"],
                                  o["decoding"], o["seed"], self.max_new_tokens)

    def release(self) -> None:
        """The judge is the run's largest model: drop it when this metric is done (the answers
        memo stays, so the next LayoutSAM metric asks only what it has not seen)."""
        owned = self._owns_model
        super().release()
        if owned and self._judge_key is not None:
            self.cache.drop(self._judge_key)
            from eligen_bench.api.generator import release_cuda_memory

            release_cuda_memory()

    # -- scoring

    def _memo(self) -> dict:
        key = self._judge_key if self._judge_key is not None else ("injected", id(self.model))
        return self.cache.get(("layoutsam_answers", key), dict)

    def _ask(self, jobs: list[tuple[_Box, str]]) -> dict[int, str]:
        """{id(box): answer} for (box, question) jobs: memoised answers first, the rest from the judge
        in chunks of `batch_size`."""
        memo = self._memo()
        todo = [(box, q) for box, q in jobs if (box.key, q) not in memo]
        step = max(1, self.batch_size)
        for start in range(0, len(todo), step):
            chunk = todo[start:start + step]
            got = list(self.model.answer([box.crop for box, _ in chunk], [q for _, q in chunk]))
            if len(got) != len(chunk):
                raise RuntimeError(f"judge returned {len(got)} answers for {len(chunk)} questions")
            memo.update({(box.key, q): str(a) for (box, q), a in zip(chunk, got, strict=True)})
        return {id(box): memo[(box.key, q)] for box, q in jobs}

    def _boxes(self, items: Sequence[ScoreItem]) -> list[_Box]:
        o = self.options
        boxes = []
        for item in items:
            if not item.layout.entities:
                continue
            if self.aspect != "spatial" and any(e.description is None for e in item.layout.entities):
                raise InputError(f"{self.name} asks about each entity's detailed description, which this layout "
                                 "lacks (LayoutSAM-Eval suites carry one per entity)", where=item.layout.where)
            image = pr.as_saved_jpeg(item.load_image(), o["jpeg_quality"])
            sha = item.content_sha256()
            for index, entity in enumerate(item.layout.entities):
                pixels = pr.crop_box(entity.bbox, image.size, o["crop"], o["crop_resolution"])
                crop = None if pr.is_empty(pixels) else image.crop(pixels)
                boxes.append(_Box(item, index, entity, pixels, crop, f"{sha}/jpeg={o['jpeg_quality']}/{pixels}"))
        return boxes

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        boxes = self._boxes(items)
        asked = [b for b in boxes if b.crop is not None]
        spatial = self._ask([(b, pr.spatial_question(pr.strip_slashes(b.entity.prompt))) for b in asked])
        attribute: dict[int, str] = {}
        if self.aspect != "spatial":  # asked only after a spatial yes (score_layoutsam_benchmark.py:88-130)
            attribute = self._ask([
                (b, pr.attribute_question(self.aspect, pr.strip_slashes(b.entity.prompt),
                                          pr.strip_slashes(b.entity.description)))
                for b in asked if pr.is_yes(spatial[id(b)])])
        return [self._row(b, spatial.get(id(b)), attribute.get(id(b))) for b in boxes]

    def _row(self, box: _Box, spatial: str | None, attribute: str | None) -> ScoreRow:
        answer = spatial if self.aspect == "spatial" else attribute
        value = 1.0 if answer is not None and pr.is_yes(answer) else 0.0
        detail: dict[str, Any] = {"aspect": self.aspect, "crop": list(box.pixels),
                                  "spatial_answer": None if spatial is None else spatial[:ANSWER_CHARS]}
        if self.aspect != "spatial":
            detail["answer"] = None if attribute is None else attribute[:ANSWER_CHARS]
        if spatial is None:
            detail["note"] = "empty crop: not asked, scored 0"
        remote = getattr(self.model, "remote_code", None)
        if remote:
            detail["remote_code_sha256"] = remote
        if self.profile == "tiny":
            detail["warning"] = TINY_WARNING
        return row(self, box.item, value, entity_index=box.index, **detail)


@dataclass(frozen=True, eq=False)
class _Box:
    """One ground-truth box of one image: its crop (None when empty) and its memo key."""

    item: ScoreItem
    index: int
    entity: Entity
    pixels: tuple[int, int, int, int]
    crop: Any
    key: str


class LayoutSamSpatial(LayoutSamScore):
    name = "layoutsam_spatial"
    display_name = "Spatial (LayoutSAM)"
    aspect = "spatial"
    description = "LayoutSAM-Eval Spatial (%): MiniCPM-V says the entity is present in its box's crop"


class LayoutSamColor(LayoutSamScore):
    name = "layoutsam_color"
    display_name = "Color (LayoutSAM)"
    aspect = "color"
    description = "LayoutSAM-Eval Color (%): present, and its colour agrees with the detailed description"


class LayoutSamTexture(LayoutSamScore):
    name = "layoutsam_texture"
    display_name = "Texture (LayoutSAM)"
    aspect = "texture"
    description = "LayoutSAM-Eval Texture (%): present, and its texture agrees with the detailed description"


class LayoutSamShape(LayoutSamScore):
    name = "layoutsam_shape"
    display_name = "Shape (LayoutSAM)"
    aspect = "shape"
    description = "LayoutSAM-Eval Shape (%): present, and its shape agrees with the detailed description"
