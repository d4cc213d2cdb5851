"""The mig_bench metric on tiny random GroundingDINO and SAM, saved and reloaded through the same
loading code as the hub models; batched against one by one; preprocessing against transformers'."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eligen_bench.api.metric import ModelCache, ScoreItem
from eligen_bench.errors import InputError
from eligen_bench.layout import Entity, Layout
from eligen_bench.metrics.mig_bench import grounding, protocol, segmenting
from eligen_bench.metrics.mig_bench.metric import MigBench, MigModels, prepare_image
from eligen_bench.metrics.mig_bench.tiny import save_tiny_grounder, save_tiny_segmenter

LAYOUT = Layout("mig-x", "a photo of a red car and a blue dog and a red car and a pink cat", (
    Entity("a red car", (0.05, 0.1, 0.45, 0.5)),
    Entity("a blue dog", (0.5, 0.5, 0.95, 0.9)),
    Entity("a red car", (0.55, 0.05, 0.9, 0.35)),
    Entity("a pink cat", (0.1, 0.6, 0.3, 0.9)),  # not a scorer colour: excluded
), 512, 512)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> MigModels:
    folder = tmp_path_factory.mktemp("tiny-mig")
    save_tiny_grounder(str(folder / "detector"))
    save_tiny_segmenter(str(folder / "segmenter"))
    return MigModels(grounding.load_grounder(str(folder / "detector"), None, "cpu"),
                     segmenting.load_segmenter(str(folder / "segmenter"), None, "cpu"))


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[ScoreItem]:
    folder = tmp_path_factory.mktemp("mig-images")
    rng = np.random.default_rng(0)
    found = []
    for k, size in enumerate((512, 384)):  # the second one is resized to 512 first
        pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        pixels[40:200, 40:200] = (230, 20, 20)
        Image.fromarray(pixels).save(folder / f"{k}.png")
        found.append(ScoreItem("g", LAYOUT, 0, k, folder / f"{k}.png", ""))
    return found


def test_tiny_models_reload_with_the_real_special_token_ids(models) -> None:
    ids = models.grounder.tokenizer("fire hydrant.")["input_ids"]
    assert ids[0] == 101 and ids[-2:] == [1012, 102] and 100 not in ids  # [CLS] ... . [SEP], no [UNK]
    assert models.grounder.model.config.max_text_len == 256
    assert models.segmenter.config.vision_config.image_size == 1024


def test_detection_batched_equals_one_by_one(models, items) -> None:
    images = [prepare_image(item) for item in items]
    captions = [["car.", "dog.", "car."], ["fire hydrant."]]
    batched = grounding.detect(models.grounder, images, captions, pairs_per_batch=3)
    single = grounding.detect(models.grounder, images, captions, pairs_per_batch=1)
    assert [sorted(d) for d in batched] == [["car.", "dog."], ["fire hydrant."]]
    for b, s in zip(batched, single, strict=True):
        for caption in b:
            assert len(b[caption].boxes) > 0
            np.testing.assert_allclose(b[caption].boxes, s[caption].boxes, atol=1e-3)
            np.testing.assert_allclose(b[caption].scores, s[caption].scores, atol=1e-5)


def test_segmentation_all_boxes_at_once_equals_one_box_at_a_time(models, items) -> None:
    images = [prepare_image(item)[..., ::-1].copy() for item in items]
    images.insert(1, images[0][::-1].copy())
    boxes = [np.array([[20.0, 30.0, 250.0, 260.0], [300.5, 280.0, 500.0, 470.25]]), np.zeros((0, 4)),
             np.array([[100.0, 100.0, 400.0, 300.0]])]
    together = segmenting.segment(models.segmenter, images, boxes, images_per_batch=3)
    assert [m.shape for m in together] == [(2, 512, 512), (0, 512, 512), (1, 512, 512)]
    for i, image_boxes in enumerate(boxes):
        for k, box in enumerate(image_boxes):
            alone = segmenting.segment(models.segmenter, [images[i]], [box[None]], images_per_batch=1)[0][0]
            assert (alone == together[i][k]).all()


def test_metric_rows_follow_the_rule_and_batching_changes_nothing(models, items) -> None:
    # IoU threshold 0 lets every detected instance reach SAM and the colour test.
    def score(batch_size: int) -> list:
        metric = MigBench(model=models, batch_size=batch_size, iou_threshold=0.0, device="cpu", cache=ModelCache())
        return metric.score(items)

    rows = score(2)
    assert [r.to_record() for r in rows] == [r.to_record() for r in score(1)]
    assert len(rows) == 2 * 4
    excluded = [r for r in rows if r.entity_index == 3]
    assert all(r.status == "excluded" and "pink" in r.detail["reason"] for r in excluded)
    scored = [r for r in rows if r.status == "ok"]
    assert any(r.detail["colour_area"] for r in scored)  # SAM and the HSV test ran
    for r in scored:
        d = r.detail
        assert r.value == float(d["position_ok"] and d["colour_ok"])
        assert d["miou"] == (d["iou"] if r.value or not d["position_ok"] else 0.0)
        assert d["models"] == {"detector": "IDEA-Research/grounding-dino-tiny@default",
                               "segmenter": "facebook/sam-vit-huge@default"}
    # Both 'a red car' instances read the same detections (one pair per image and noun).
    first = {r.entity_index: r.detail for r in rows[:4]}
    assert first[0]["detections"] == first[2]["detections"]


def test_metric_identity_options_and_tiny_profile() -> None:
    metric = MigBench(profile="tiny", device="cpu")
    assert metric.model_ids() == {"detector": "tiny-random-grounding-dino", "segmenter": "tiny-random-sam"}
    full = MigBench(device="cpu")
    ident = full.identity()
    assert ident["models"]["detector"] == "IDEA-Research/grounding-dino-tiny"
    assert ident["options"]["box_threshold"] == 0.25 and ident["options"]["nms_threshold"] == 0.8
    assert ident["protocol"]["reference"] == "LeyRio/MIG_Bench@063ec45: eval_mig.py"
    assert MigBench(device="cpu", pairs_per_batch=2).key == full.key  # batch sizes change no number
    assert MigBench(device="cpu", iou_threshold=0.4).key != full.key
    for bad in ({"iou_threshold": 2.0}, {"dtype": "int8"}, {"image_size": 0}):
        with pytest.raises(InputError):
            MigBench(device="cpu", **bad)
    models = metric.load()  # tiny models saved to a folder and loaded back by the hub code path
    assert isinstance(models, MigModels) and models.commits == (None, None)


def test_preprocessing_matches_transformers_processors(items) -> None:
    from transformers import GroundingDinoImageProcessorPil, SamImageProcessor

    image = prepare_image(items[0])
    ours = grounding.pixel_values(image)
    theirs = GroundingDinoImageProcessorPil()(images=image[..., ::-1].copy(), return_tensors="pt")["pixel_values"][0]
    assert ours.shape == (3, 800, 800) and (ours - theirs).abs().max() == 0
    ours = segmenting.pixel_values(image[..., ::-1].copy(), 1024)
    theirs = SamImageProcessor()(images=image[..., ::-1].copy(), return_tensors="pt")["pixel_values"][0]
    assert (ours - theirs).abs().max() < 1e-5


def test_images_are_resized_as_the_script_does(items) -> None:
    import cv2

    small = items[1]
    bgr = np.asarray(Image.open(small.image_path).convert("RGB"))[..., ::-1].copy()
    assert (prepare_image(small) == cv2.resize(bgr, (512, 512))).all()
    assert prepare_image(dataclasses.replace(small, image_path=items[0].image_path)).shape == (512, 512, 3)


@pytest.mark.weights
def test_real_models_load_from_the_hub(tmp_path: Path) -> None:
    metric = MigBench()
    models = metric.load()
    config = models.segmenter.config.vision_config
    assert (config.hidden_size, config.num_hidden_layers, config.global_attn_indexes) == (1280, 32, [7, 15, 23, 31])
    backbone = models.grounder.model.config.backbone_config
    assert (backbone.embed_dim, list(backbone.depths)) == (96, [2, 2, 6, 2])  # Swin-T
    assert all(models.commits)
    image = np.full((512, 512, 3), 200, dtype=np.uint8)
    image[100:400, 150:350] = (220, 30, 30)
    Image.fromarray(image).save(tmp_path / "x.png")
    layout = Layout("x", "a photo of a red stop sign", (Entity("a red stop sign", (0.29, 0.2, 0.68, 0.78)),), 512, 512)
    (row,) = metric.score([ScoreItem("g", layout, 0, 0, tmp_path / "x.png", "")])
    assert row.status == "ok" and row.detail["models"]["detector"].startswith(protocol.DETECTOR_ID + "@")
