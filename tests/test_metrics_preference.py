"""pickscore and mps on tiny random models: end to end, against independent computations, loaders."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eligen_bench.api.metric import ModelCache, ScoreItem
from eligen_bench.errors import InputError
from eligen_bench.layout import Entity, Layout
from eligen_bench.metrics.preference.mps import MPS, load_mps, mps_scores, save_tiny_mps
from eligen_bench.metrics.preference.mps_net import MPSNet, cross_hyperparameters
from eligen_bench.metrics.preference.pickscore import PickScore
from eligen_bench.registry import metric_class


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[ScoreItem]:
    directory = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    prompts = ["a cat and a dog on a sofa", "a red car on a street", "a bowl of fruit"]
    out = []
    for i, prompt in enumerate(prompts):
        path = directory / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(path)
        layout = Layout(id=f"l{i}", prompt=prompt, width=128, height=96,
                        entities=(Entity("a thing", (0.1, 0.1, 0.5, 0.5)),))
        out.append(ScoreItem("gen", layout, 0, 11, path, f"sha{i}"))
    return out


@pytest.fixture(scope="module")
def tiny_mps_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-mps")
    save_tiny_mps(str(directory))
    return directory


def test_registered() -> None:
    assert metric_class("pickscore") is PickScore
    assert metric_class("mps") is MPS
    assert PickScore.level == MPS.level == "image"


# ---------------------------------------------------------------- pickscore


def test_pickscore_tiny_end_to_end_matches_clip_forward(items: list[ScoreItem]) -> None:
    metric = PickScore(profile="tiny", batch_size=2, device="cpu")
    rows = metric.score(items)
    assert [r.layout_id for r in rows] == ["l0", "l1", "l2"]
    assert all(r.entity_index == -1 and r.status == "ok" and math.isfinite(r.value) for r in rows)
    assert all(r.metric_key == metric.key and r.image_sha256.startswith("sha") for r in rows)
    # Independent path: CLIPModel.forward's logits_per_image = logit_scale * cos(image, text).
    model, processor = metric.model
    images = [item.load_image() for item in items]
    inputs = processor(text=[i.layout.prompt for i in items], images=images, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits_per_image
    assert [r.value for r in rows] == pytest.approx(torch.diagonal(logits).tolist(), rel=1e-5)
    assert metric.identity()["models"] == {"model": "tiny-random-clip", "processor": "tiny-random-clip"}


def test_pickscore_does_not_depend_on_batching(items: list[ScoreItem]) -> None:
    cache = ModelCache()
    one = PickScore(profile="tiny", batch_size=1, device="cpu", cache=cache).score(items)
    three = PickScore(profile="tiny", batch_size=3, device="cpu", cache=cache).score(items)
    assert [r.value for r in one] == pytest.approx([r.value for r in three], rel=1e-5)


def test_pickscore_full_identity_names_hub_ids() -> None:
    models = PickScore().identity()["models"]
    assert models["model"] == "yuvalkirstain/PickScore_v1"
    assert models["processor"] == "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


# ---------------------------------------------------------------- mps


def test_mps_tiny_end_to_end(items: list[ScoreItem]) -> None:
    metric = MPS(profile="tiny", batch_size=2, device="cpu")
    rows = metric.score(items)
    assert len(rows) == 3 and all(r.status == "ok" and math.isfinite(r.value) for r in rows)
    assert len({round(r.value, 6) for r in rows}) == 3  # different images/prompts, different scores
    ident = metric.identity()
    assert ident["options"]["condition_threshold"] == 0.3
    assert ident["options"]["condition"].startswith("light, color, clarity")
    assert "allow_pickle" not in ident["options"]


def test_mps_scores_do_not_depend_on_batching(items: list[ScoreItem]) -> None:
    cache = ModelCache()
    one = MPS(profile="tiny", batch_size=1, device="cpu", cache=cache).score(items)
    three = MPS(profile="tiny", batch_size=3, device="cpu", cache=cache).score(items)
    assert [r.value for r in one] == pytest.approx([r.value for r in three], rel=1e-5, abs=1e-6)


def test_mps_condition_mask_is_applied(tiny_mps_dir: Path, items: list[ScoreItem]) -> None:
    net, tokenizer, image_processor = load_mps(str(tiny_mps_dir / "mps.safetensors"), str(tiny_mps_dir), "cpu", None, False)
    images = [i.load_image() for i in items]
    prompts = [i.layout.prompt for i in items]
    masked = mps_scores(net, tokenizer, image_processor, images, prompts, "light, color", 0.3)
    open_ = mps_scores(net, tokenizer, image_processor, images, prompts, "light, color", -math.inf)
    assert masked != pytest.approx(open_)
    # Every token masked out: softmax over nothing, no finite score; the metric flags it.
    assert all(math.isnan(v) for v in mps_scores(net, tokenizer, image_processor, images, prompts, "x", 2.0))
    rows = MPS(model=(net, tokenizer, image_processor), condition_threshold=2.0).score(items)
    assert all(r.status == "invalid" and math.isnan(r.value) for r in rows)


def test_mps_scoring_with_injected_model_matches_a_hand_computation(tiny_mps_dir: Path, items: list[ScoreItem]) -> None:
    net, tokenizer, image_processor = load_mps(str(tiny_mps_dir / "mps.safetensors"), str(tiny_mps_dir), "cpu", None, False)
    rows = MPS(model=(net, tokenizer, image_processor)).score(items[:1])
    # Hand computation, one image, following the reference step by step.
    ids = tokenizer([items[0].layout.prompt], max_length=77, padding="max_length", truncation=True, return_tensors="pt").input_ids
    cond = tokenizer([MPS.defaults["condition"]], max_length=77, padding="max_length", truncation=True, return_tensors="pt").input_ids
    pixels = image_processor(images=[items[0].load_image()], return_tensors="pt")["pixel_values"]
    clip = net.model
    with torch.no_grad():
        text_out = clip.text_model(input_ids=ids)
        text_f, text_eos = clip.text_projection(text_out[0]), clip.text_projection(text_out[1])
        cond_f = clip.text_projection(clip.text_model(input_ids=cond)[0])
        image_f = clip.visual_projection(clip.vision_model(pixel_values=pixels)[0])
        sim = (cond_f[0] @ text_f[0].T).max(dim=0).values  # per text token
        sim = sim / sim.max()
        mask = torch.where(sim > 0.3, 0.0, float("-inf"))[None, None, :].repeat(1, image_f.shape[1], 1)
        fused = net.cross_model(image_f, text_f, mask)[0, 0]
        expected = clip.logit_scale.exp() * torch.nn.functional.cosine_similarity(fused, text_eos[0], dim=0)
    assert rows[0].value == pytest.approx(float(expected), rel=1e-5)


def test_mps_state_dict_names_follow_the_reference() -> None:
    from eligen_bench.metrics.preference.pickscore import tiny_clip_config

    net = MPSNet(tiny_clip_config(projection_dim=32), layer_num=2, dim_head=8, heads=4, ff_mult=2)
    keys = set(net.state_dict())
    for name in ("norm.weight", "norm.bias", "to_q.weight", "to_kv.weight", "to_out.weight", "ff.0.weight", "ff.2.weight"):
        assert f"cross_model.layers.1.0.fn.{name}" in keys
    for name in ("norm.weight", "fused_attn_ff_proj.weight", "attn_out.weight", "ff_out.1.weight", "rotary_emb.inv_freq"):
        assert f"cross_model.layers.1.1.fn.{name}" in keys
    assert "model.logit_scale" in keys and "model.text_projection.weight" in keys
    assert cross_hyperparameters(net.state_dict()) == {"layer_num": 2, "dim_head": 8, "heads": 4, "ff_mult": 2}


def test_mps_pickle_needs_explicit_opt_in(tiny_mps_dir: Path, tmp_path: Path, items: list[ScoreItem]) -> None:
    reference, tokenizer, image_processor = load_mps(
        str(tiny_mps_dir / "mps.safetensors"), str(tiny_mps_dir), "cpu", None, False
    )
    pth = tmp_path / "MPS_overall_checkpoint.pth"
    torch.save(reference, pth)  # a pickled full model, like the release
    refused = MPS(checkpoint=str(pth), processor_id=str(tiny_mps_dir), device="cpu")
    with pytest.raises(InputError, match="allow_pickle"):
        refused.load()
    allowed = MPS(checkpoint=str(pth), processor_id=str(tiny_mps_dir), device="cpu", allow_pickle=True)
    from_safetensors = MPS(checkpoint=str(tiny_mps_dir / "mps.safetensors"), processor_id=str(tiny_mps_dir), device="cpu")
    assert [r.value for r in allowed.score(items)] == pytest.approx([r.value for r in from_safetensors.score(items)], rel=1e-5)
    assert allowed.key == refused.key  # the opt-in does not change what is measured


def test_mps_checkpoint_errors(tmp_path: Path, tiny_mps_dir: Path) -> None:
    with pytest.raises(InputError, match="needs checkpoint"):
        MPS(device="cpu").load()
    with pytest.raises(InputError, match="no such file"):
        MPS(checkpoint=str(tmp_path / "missing.pth"), device="cpu").load()
    from safetensors.torch import save_file

    bogus = tmp_path / "bogus.safetensors"
    save_file({"weight": torch.zeros(2)}, str(bogus))
    with pytest.raises(InputError, match="not an MPS state dict"):
        MPS(checkpoint=str(bogus), processor_id=str(tiny_mps_dir), device="cpu").load()
    not_mps = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(2, 2), not_mps)
    with pytest.raises(InputError, match="not an MPS model"):
        MPS(checkpoint=str(not_mps), processor_id=str(tiny_mps_dir), device="cpu", allow_pickle=True).load()


@pytest.mark.weights
def test_real_pickscore_prefers_the_matching_prompt(tmp_path: Path) -> None:
    array = np.zeros((512, 512, 3), dtype=np.uint8)
    array[:, :] = (200, 0, 0)
    path = tmp_path / "red.png"
    Image.fromarray(array).save(path)
    red = Layout(id="red", prompt="a plain red image", width=512, height=512)
    cat = Layout(id="cat", prompt="a photo of a cat playing the piano", width=512, height=512)
    rows = PickScore().score([ScoreItem("g", red, 0, 0, path, "s"), ScoreItem("g", cat, 0, 0, path, "s")])
    assert rows[0].value > rows[1].value
