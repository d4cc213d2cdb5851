"""vlm_success: answer parsing, region rendering, scoring with a fake judge, the tiny Qwen2-VL end to end."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eligen_bench.api.metric import ScoreItem
from eligen_bench.errors import InputError
from eligen_bench.executors.local import LocalExecutor
from eligen_bench.layout import Entity, Layout
from eligen_bench.metrics.vlm import judges as vj
from eligen_bench.metrics.vlm.success import VlmSuccess, summarize
from eligen_bench.registry import metric_class

PARSE_TABLE = [
    ("yes", "yes"),
    ("Yes.", "yes"),
    ("YES", "yes"),
    ("  yes  \n", "yes"),
    ("**No**", "no"),
    ("No.", "no"),
    ("no, there is no cat in the region", "no"),
    ("yes, there is a cat", "yes"),
    ("Yes! The cat is clearly visible.", "yes"),
    ("The answer is: no", "no"),
    ("The answer is yes.", "yes"),
    ("Answer: Yes", "yes"),
    ("Final answer: **no**", "no"),
    ("Sure, yes.", "yes"),
    ("`yes`", "yes"),
    ("\"No\"", "no"),
    ("Nope.", "no"),
    ("Yeah, it is there", "yes"),
    ("I cannot tell", "unparsed"),
    ("I'm not sure.", "unparsed"),
    ("", "unparsed"),
    ("yes and no", "unparsed"),
    ("Yes/No", "unparsed"),
    ("yes or no", "unparsed"),
    ("There is no cat", "unparsed"),
    ("A cat sits on the mat.", "unparsed"),
    ("The image shows a dog. No.", "no"),
    ("It is hard to say. Yes.", "yes"),
    ("N/A", "unparsed"),
    ("�ryT�=o", "unparsed"),
    ("Yes.\n\nThe region shows a cat sitting.", "yes"),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_TABLE)
def test_parse_answer(text: str, expected: str) -> None:
    assert vj.parse_answer(text) == expected


def test_parse_table_is_large_enough() -> None:
    assert len(PARSE_TABLE) >= 20
    assert {e for _, e in PARSE_TABLE} == {"yes", "no", "unparsed"}


# ---------------------------------------------------------------- region rendering


def _square_image() -> Image.Image:
    """100x100 white with a black rectangle on columns 20..39 and rows 30..59."""
    array = np.full((100, 100, 3), 255, dtype=np.uint8)
    array[30:60, 20:40] = 0
    return Image.fromarray(array)


def test_crop_without_margin_is_exactly_the_box() -> None:
    crop = vj.render_region(_square_image(), (0.2, 0.3, 0.4, 0.6), "crop", margin=0.0, min_side=1)
    assert crop.size == (20, 30)
    assert np.asarray(crop).max() == 0


def test_crop_margin_adds_context_and_clamps() -> None:
    crop = vj.render_region(_square_image(), (0.2, 0.3, 0.4, 0.6), "crop", margin=0.5, min_side=1)
    assert crop.size == (40, 60)  # 10 px more on each side in x, 15 px in y
    pixels = np.asarray(crop)
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[30, 20].tolist() == [0, 0, 0]
    edge = vj.render_region(_square_image(), (0.0, 0.0, 0.1, 0.1), "crop", margin=0.5, min_side=1)
    assert edge.size == (15, 15)  # clamped at the image border on the left and top


def test_small_crops_are_upscaled() -> None:
    crop = vj.render_region(_square_image(), (0.2, 0.3, 0.4, 0.6), "crop", margin=0.0, min_side=56)
    assert min(crop.size) == 56


def test_box_mode_draws_red_rectangle_only_on_the_border() -> None:
    image = _square_image()
    out = vj.render_region(image, (0.1, 0.1, 0.9, 0.9), "box")
    pixels = np.asarray(out)
    assert out.size == image.size
    assert pixels[10, 50].tolist() == [255, 0, 0]  # top edge
    assert pixels[50, 89].tolist() == [255, 0, 0]  # right edge (last pixel column of the box)
    assert pixels[5, 5].tolist() == [255, 255, 255]  # outside untouched
    assert pixels[45, 30].tolist() == [0, 0, 0]  # inside untouched
    assert np.asarray(image)[10, 50].tolist() == [255, 255, 255]  # the input is not modified


def test_unknown_region_mode() -> None:
    with pytest.raises(InputError, match="region"):
        vj.render_region(_square_image(), (0.1, 0.1, 0.9, 0.9), "outline")


# ---------------------------------------------------------------- scoring with a fake judge


class FakeJudge:
    """Answers by entity prompt found in the question; records every call."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.calls: list[tuple[list[tuple[int, int]], list[str]]] = []

    def answer(self, images, questions):
        self.calls.append(([im.size for im in images], list(questions)))
        out = []
        for q in questions:
            match = [a for p, a in self.answers.items() if p in q]
            out.append(match[0])
        return out


def _items(tmp_path: Path) -> list[ScoreItem]:
    path = tmp_path / "img.png"
    _square_image().save(path)
    first = Layout(id="one", prompt="animals", width=100, height=100, entities=(
        Entity("a cat", (0.2, 0.3, 0.4, 0.6)),
        Entity("a dog", (0.5, 0.5, 0.9, 0.9)),
        Entity("a red ball", (0.0, 0.0, 0.3, 0.3)),
    ))
    second = Layout(id="two", prompt="more", width=100, height=100, entities=(
        Entity("a tree", (0.1, 0.1, 0.5, 0.9)),
        Entity("a blue car", (0.5, 0.1, 0.9, 0.5)),
    ))
    empty = Layout(id="three", prompt="no entities", width=100, height=100)
    return [ScoreItem("gen", layout, 0, 7, path, "sha") for layout in (first, second, empty)]


def test_fake_judge_gives_exact_rates_and_unparsed_counts(tmp_path: Path) -> None:
    judge = FakeJudge({
        "a cat": "Yes.", "a dog": "**No**", "a red ball": "I cannot tell",
        "a tree": "yes, there is a tree", "a blue car": "The answer is: yes",
    })
    metric = VlmSuccess(model=judge, batch_size=2)
    rows = metric.score(_items(tmp_path))
    assert [(r.layout_id, r.entity_index) for r in rows] == [("one", 0), ("one", 1), ("one", 2), ("two", 0), ("two", 1)]
    assert [r.status for r in rows] == ["ok", "ok", "unparsed", "ok", "ok"]
    assert [r.value for r in rows][:2] == [1.0, 0.0] and math.isnan(rows[2].value)
    assert rows[2].detail["answer"] == "I cannot tell" and rows[2].detail["parsed"] == "unparsed"
    assert all(r.detail["judge"] == "qwen2vl" and r.detail["model"] == "Qwen/Qwen2-VL-7B-Instruct" for r in rows)
    summary = summarize(rows)
    assert summary == {
        "entities": 5, "yes": 3, "no": 1, "unparsed": 1, "success_rate": 0.75,
        "strict_success_rate": 0.6, "unparsed_rate": 0.2,
    }
    # items 1-2 (5 entities) then item 3 (none): questions go in chunks of at most batch_size
    assert [len(qs) for _, qs in judge.calls] == [2, 2, 1]
    assert "a cat" in judge.calls[0][1][0] and "yes or no" in judge.calls[0][1][0]
    assert all(size != (100, 100) for sizes, _ in judge.calls for size in sizes)  # crops by default
    metric.update(_items(tmp_path))
    assert metric.compute() == 0.75


def test_box_region_shows_the_whole_image(tmp_path: Path) -> None:
    judge = FakeJudge({"a cat": "yes", "a dog": "no", "a red ball": "no", "a tree": "no", "a blue car": "no"})
    metric = VlmSuccess(model=judge, region="box")
    rows = metric.score(_items(tmp_path))
    assert summarize(rows)["success_rate"] == pytest.approx(0.2)
    assert all(size == (100, 100) for sizes, _ in judge.calls for size in sizes)
    assert "red rectangle" in judge.calls[0][1][0]
    assert metric.identity()["template"]["id"] == "box-v1"


def test_raw_answers_are_truncated(tmp_path: Path) -> None:
    long = "Yes. " + "blah " * 200
    judge = FakeJudge({"a cat": long, "a dog": long, "a red ball": long, "a tree": long, "a blue car": long})
    rows = VlmSuccess(model=judge).score(_items(tmp_path))
    assert all(len(r.detail["answer"]) == 200 and r.value == 1.0 for r in rows)


def test_options_are_validated() -> None:
    with pytest.raises(InputError, match="judge"):
        VlmSuccess(judge="gpt4v")
    with pytest.raises(InputError, match="region"):
        VlmSuccess(region="mask")
    with pytest.raises(InputError, match="backend"):
        VlmSuccess(backend="onnx")
    with pytest.raises(InputError, match="template"):
        VlmSuccess(template_version="v99")
    with pytest.raises(InputError, match="unknown option"):
        VlmSuccess(temperature=0.7)


def test_presets_identity_and_registry() -> None:
    assert metric_class("vlm_success") is VlmSuccess
    ids = {name: VlmSuccess(judge=name).identity()["judge"]["model_id"] for name in vj.PRESETS}
    assert ids == {
        "qwen2vl": "Qwen/Qwen2-VL-7B-Instruct",
        "internvl2": "OpenGVLab/InternVL2-8B",
        "cogvlm2": "THUDM/cogvlm2-llama3-chat-19B",
    }
    a, b = VlmSuccess(judge="qwen2vl"), VlmSuccess(judge="internvl2")
    assert a.key != b.key
    assert VlmSuccess(revision="abc123").identity()["judge"]["revision"] == "abc123"
    assert VlmSuccess(region="box").key != a.key


# ---------------------------------------------------------------- backends


def test_vllm_backend_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    metric = VlmSuccess(profile="tiny", backend="vllm")
    with pytest.raises(InputError, match=r"vllm.*pip install"):
        metric.load()


def test_vllm_backend_refuses_cogvlm2() -> None:
    with pytest.raises(InputError, match="not supported by the vllm backend"):
        vj.load_vllm_judge("x", vj.PRESETS["cogvlm2"], None, 16)


def test_tiny_qwen2vl_end_to_end(tmp_path: Path) -> None:
    metric = VlmSuccess(profile="tiny", batch_size=3, device="cpu")
    items = _items(tmp_path)
    rows = metric.score(items)
    assert len(rows) == 5
    assert isinstance(metric.model, vj.TransformersJudge)
    for r in rows:
        assert r.metric == "vlm_success" and r.metric_key == metric.key
        assert r.status in ("ok", "unparsed")
        assert (r.status == "ok") == (r.value in (0.0, 1.0))
        assert r.status == "ok" or math.isnan(r.value)
        assert r.detail["parsed"] == vj.parse_answer(r.detail["answer"])
        assert "meaningless" in r.detail["warning"]
    ident = metric.identity()
    assert ident["template"] == {"id": "crop-v1", "text": vj.TEMPLATES["crop-v1"]}
    assert ident["judge"]["model_id"] == vj.TINY_MODEL_ID and ident["judge"]["name"] == "qwen2vl"
    assert ident["models"]["judge"] == vj.TINY_MODEL_ID
    counts = summarize(rows)
    assert counts["yes"] + counts["no"] + counts["unparsed"] == 5


def test_tiny_model_is_shared_through_the_cache(tmp_path: Path) -> None:
    first = VlmSuccess(profile="tiny", device="cpu")
    first.ensure_loaded()
    second = VlmSuccess(profile="tiny", device="cpu", cache=first.cache, region="box")
    second.ensure_loaded()
    assert second.model is first.model
    # Once scored, a judge is freed: the cache no longer holds it and the next user rebuilds it.
    first.release()
    assert first.model is None and not any(k[0] == "vlm_judge" for k in first.cache._models)
    first.ensure_loaded()
    assert first.model is not second.model


def test_the_scoring_stage_releases_each_metric_after_its_shards(tmp_path: Path) -> None:
    from eligen_bench.rundir import RunDir
    from eligen_bench.stages.score import run_scoring

    metric = VlmSuccess(profile="tiny", batch_size=3, device="cpu")
    injected = VlmSuccess(profile="tiny", device="cpu", model=FakeJudge({"a": "yes"}))
    run_scoring(RunDir(tmp_path / "run"), {"a": metric, "b": injected}, {"g": _items(tmp_path)}, progress=False,
                executor=LocalExecutor())
    assert metric.model is None and not any(k[0] == "vlm_judge" for k in metric.cache._models)
    assert injected.model is not None  # an injected model belongs to the caller


@pytest.mark.weights
@pytest.mark.gpu
@pytest.mark.parametrize("judge", sorted(vj.PRESETS))
def test_real_judges_answer_yes_or_no(tmp_path: Path, judge: str) -> None:
    # A red square on white: each real judge must give a parseable answer about it.
    array = np.full((512, 512, 3), 255, dtype=np.uint8)
    array[128:384, 128:384] = (220, 0, 0)
    path = tmp_path / "red.png"
    Image.fromarray(array).save(path)
    layout = Layout(id="red", prompt="a red square", width=512, height=512,
                    entities=(Entity("a red square", (0.25, 0.25, 0.75, 0.75)),))
    rows = VlmSuccess(judge=judge).score([ScoreItem("gen", layout, 0, 0, path, "sha")])
    assert rows[0].status == "ok" and rows[0].value == 1.0
