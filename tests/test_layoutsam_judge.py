"""The LayoutSAM-Eval judge: how chat() is called, what decoding it gets, and which remote code may run.

MiniCPM-V 2.6 itself cannot run here (its code and weights live on the hub): `RecordingChatModel`
is a test double with chat()'s signature, and the tiny profile drives a random tiny Qwen2-VL through
the same decoding settings. Untested here: the remote code's own preprocessing and prompt
template, and vLLM (marked tests below need the real judge and a GPU).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from eligen_bench.api.metric import ScoreItem
from eligen_bench.errors import InputError
from eligen_bench.hashing import file_sha256
from eligen_bench.layout import Entity, Layout
from eligen_bench.metrics.layoutsam import judge as jd
from eligen_bench.metrics.layoutsam.protocol import as_saved_jpeg
from eligen_bench.metrics.layoutsam.scores import LayoutSamColor, LayoutSamSpatial


def remote_generation_config(sampling: bool = True, min_new_tokens: int = 0, **kwargs) -> dict:
    """Transcription of chat()'s generation settings in openbmb/MiniCPM-V-2_6 modeling_minicpmv.py
    (as read in public copies of the file): sampling defaults, beam otherwise, then only the keys
    already present are taken from **kwargs."""
    if sampling:
        generation_config = {"top_p": 0.8, "top_k": 100, "temperature": 0.7, "do_sample": True,
                             "repetition_penalty": 1.05}
    else:
        generation_config = {"num_beams": 3, "repetition_penalty": 1.2}
    if min_new_tokens > 0:
        generation_config["min_new_tokens"] = min_new_tokens
    generation_config.update((k, kwargs[k]) for k in generation_config.keys() & kwargs.keys())
    return generation_config


def test_seed_is_dropped_by_chat_and_decodings_map_onto_its_settings() -> None:
    # The reference's call: chat(..., seed=42): the seed never reaches generate().
    assert remote_generation_config(seed=42) == jd.generation_settings("sample")
    assert "seed" not in remote_generation_config(seed=42)
    assert remote_generation_config(**{**jd.chat_arguments("greedy"), "seed": 42}) == {"num_beams": 1,
                                                                                        "repetition_penalty": 1.0}
    assert remote_generation_config(**{**jd.chat_arguments("beam"), "seed": 42}) == jd.CHAT_BEAM
    with pytest.raises(InputError, match="decoding"):
        jd.chat_arguments("top-k")


class RecordingChatModel:
    """Test double of MiniCPM-V's remote model: chat() with its signature, answering from torch's
    global generator (as the real sampling does), recording every call."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def chat(self, image, msgs, tokenizer, processor=None, vision_hidden_states=None, max_new_tokens=2048,
             min_new_tokens=0, sampling=True, max_inp_length=8192, system_prompt="", stream=False,
             max_slice_nums=None, use_image_id=None, **kwargs):
        import torch

        self.calls.append({"image": image, "msgs": msgs, "tokenizer": tokenizer, "processor": processor,
                           "sampling": sampling, "max_new_tokens": max_new_tokens, **kwargs})
        return "Yes" if torch.rand(1).item() < 0.5 else f"No {torch.rand(1).item():.6f}"


def test_chat_judge_calls_chat_as_the_reference_does() -> None:
    model = RecordingChatModel()
    judge = jd.ChatJudge(model, tokenizer="tok", processor="proc", decoding="sample")
    crops = [Image.new("RGB", (8, 8), (k, 0, 0)) for k in range(3)]
    first = judge.answer(crops, ["q0", "q1", "q2"])
    again = judge.answer(crops[:1], ["q0"])
    assert first[0] == again[0]  # seeded before every call: an answer depends on nothing else
    assert len(set(first)) == 1  # the double ignores its input, so equal seeds give equal answers
    call = model.calls[0]
    assert call["image"] is None and call["tokenizer"] == "tok" and call["processor"] == "proc"
    assert call["msgs"] == [{"role": "user", "content": [crops[0], "q0"]}]
    assert call["seed"] == 42 and call["sampling"] is True and call["max_new_tokens"] == 2048
    greedy = jd.ChatJudge(RecordingChatModel(), "tok", "proc", decoding="greedy", max_new_tokens=16)
    greedy.answer(crops[:1], ["q"])
    assert {k: greedy.model.calls[0][k] for k in ("sampling", "num_beams", "repetition_penalty", "max_new_tokens")} == \
        {"sampling": False, "num_beams": 1, "repetition_penalty": 1.0, "max_new_tokens": 16}


def code_folder(path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def test_remote_code_must_be_pinned(tmp_path) -> None:
    for revision in (None, "main", "3f7a8da"):
        with pytest.raises(InputError, match="revision=<40-hex commit>"):
            jd.pinned_model_dir("openbmb/MiniCPM-V-2_6", revision, None, snapshot=lambda *a, **k: 1 / 0)
    folder = code_folder(tmp_path / "m", {"modeling_x.py": "X = 1\n", "config.json": "{}"})
    with pytest.raises(InputError, match="remote_code_sha256"):
        jd.pinned_model_dir(str(folder), None, None)
    with pytest.raises(InputError, match="is not the pinned"):
        jd.pinned_model_dir(str(folder), None, "0" * 64)


def test_remote_code_is_hashed_where_it_is_loaded_from(tmp_path) -> None:
    folder = code_folder(tmp_path / "snap", {"modeling_x.py": "X = 1\n", "resampler.py": "R = 2\n",
                                            ".cache/huggingface/stale.py": "ignored\n", "config.json": "{}"})
    fetched = []

    def snapshot(model_id, *, revision):
        fetched.append((model_id, revision))
        return str(folder)

    directory, digests, combined = jd.pinned_model_dir("openbmb/MiniCPM-V-2_6", jd.REVISION, None, snapshot=snapshot)
    assert directory == folder and fetched == [("openbmb/MiniCPM-V-2_6", jd.REVISION)]
    assert set(digests) == {"modeling_x.py", "resampler.py"}
    assert digests["modeling_x.py"] == file_sha256(folder / "modeling_x.py")
    # The same digest pins the folder when it is used as a local path; one changed byte is refused.
    assert jd.pinned_model_dir(str(folder), None, combined)[2] == combined
    (folder / "resampler.py").write_text("R = 3\n")
    with pytest.raises(InputError, match="resampler.py="):
        jd.pinned_model_dir(str(folder), None, combined)


def test_vllm_prompt_is_chats_and_beam_is_refused() -> None:
    class Tokenizer:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return repr(messages)

    class LLM:
        def get_tokenizer(self):
            return Tokenizer()

    judge = jd.VllmJudge(LLM(), "sample")
    assert judge.prompt("Is it?") == repr([{"role": "user", "content": "(<image>./</image>)\nIs it?"}])
    with pytest.raises(InputError, match="beam"):
        jd.VllmJudge(LLM(), "beam")


def test_dtype_argument_follows_the_transformers_version(monkeypatch) -> None:
    import transformers

    monkeypatch.setattr(transformers, "__version__", "4.43.3")
    assert jd.dtype_argument("x") == {"torch_dtype": "x"}
    monkeypatch.setattr(transformers, "__version__", "5.25.0")
    assert jd.dtype_argument("x") == {"dtype": "x"}


def test_tiny_profile_judge_runs_the_metric_path_and_repeats_itself(tmp_path) -> None:
    layout = Layout("layoutsam-0000", "a street", (
        Entity("a red bus", (0.1, 0.1, 0.7, 0.6), description="a red bus with wet windows"),
        Entity("a lamp/post", (0.75, 0.0, 0.9, 1.0), description="a thin black lamp post"),
    ), 96, 64)
    path = tmp_path / "i.png"
    Image.new("RGB", (96, 64), (120, 40, 40)).save(path)
    item = ScoreItem("g", layout, 0, 0, path, file_sha256(path))
    metric = LayoutSamSpatial(profile="tiny", device="cpu")
    rows = metric.score([item])
    # Asked again, after other answers moved torch's generator, the judge says the same.
    crop = as_saved_jpeg(Image.open(path), 75).crop(tuple(rows[0].detail["crop"]))
    question = 'Is the subject "a red bus" present in the image? Strictly answer with "Yes" or "No", without any irrelevant words.'
    assert metric.model.answer([crop], [question]) != [] and metric.model.answer([crop], [question]) == \
        [rows[0].detail["spatial_answer"]]
    assert all(isinstance(r.detail["spatial_answer"], str) and r.value in (0.0, 1.0) for r in rows)
    assert rows[0].detail["crop"] == [9, 6, 67, 38] and "tiny profile" in rows[0].detail["warning"]
    assert len(LayoutSamColor(profile="tiny", device="cpu", decoding="greedy").score([item])) == 2


@pytest.mark.weights
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_real_judge_answers_yes_for_a_plain_red_square(tmp_path, backend) -> None:
    layout = Layout("red", "a red square", (Entity("a red square", (0.0, 0.0, 1.0, 1.0),
                                                   description="a flat red square"),), 512, 512)
    path = tmp_path / "red.png"
    Image.new("RGB", (512, 512), (220, 20, 20)).save(path)
    rows = LayoutSamColor(backend=backend).score([ScoreItem("g", layout, 0, 0, path, file_sha256(path))])
    assert rows[0].value == 1.0 and rows[0].detail["remote_code_sha256"]
