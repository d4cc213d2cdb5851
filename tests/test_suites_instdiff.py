"""InstDiff-Bench suite builder on a small COCO-format fixture, against a transcription of
frank-xwang/InstanceDiffusion@722900e eval_local.py (lines 170-258) run with pycocotools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eligen_bench.cli import main
from eligen_bench.errors import InputError
from eligen_bench.suite import read_suite
from eligen_bench.suites.instdiff_bench import (
    COLORS,
    TEXTURES,
    InstDiffOptions,
    attribute_of,
    build_instdiff_suite,
)

CATS = [{"id": 1, "name": "person"}, {"id": 11, "name": "fire hydrant"}, {"id": 18, "name": "dog"}]


def _ann(ann_id: int, image_id: int, cat: int, box: list[float], crowd: int = 0) -> dict:
    x, y, w, h = box
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": box, "area": w * h,
            "iscrowd": crowd, "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}


@pytest.fixture()
def annotations(tmp_path: Path) -> Path:
    """Image ids out of order in the file; annotation ids chosen so id % 8 covers every slot."""
    images = [{"id": i, "width": w, "height": h, "file_name": f"{i:012d}.jpg"}
              for i, w, h in ((30, 640, 480), (7, 100, 200), (12, 300, 300), (5, 64, 64))]
    anns = [
        _ann(909, 7, 18, [10, 20, 30, 40]),  # 909 % 8 = 5: blue / fabric
        _ann(16, 7, 1, [0, 0, 100, 200], crowd=1),  # crowd instances count (iscrowd=None)
        _ann(803, 7, 11, [50.5, 60.25, 20, 10]),  # 803 % 8 = 3: green / wooden
        _ann(1002, 12, 1, [0, 0, 301, 150]),  # runs past the right edge: clamped
        _ann(1003, 12, 18, [10, 10, 0, 5]),  # zero width: dropped
    ]
    # image 30: 33 instances, more than the cap of 30; ids 100..132 cover every remainder
    anns += [_ann(100 + k, 30, (1, 11, 18)[k % 3], [k * 10, k * 5, 40, 30]) for k in range(33)]
    # image 5 has no annotation at all
    captions = [
        {"id": 900, "image_id": 7, "caption": "A dog near a hydrant. "},  # first in file order
        {"id": 3, "image_id": 7, "caption": "Lowest id, never used."},
        {"id": 901, "image_id": 12, "caption": "A man\nand a dog"},
        {"id": 902, "image_id": 30, "caption": "A crowded street"},
        {"id": 903, "image_id": 5, "caption": "An empty field."},
    ]
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / "instances_val2017.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": CATS}))
    (folder / "captions_val2017.json").write_text(json.dumps({"images": images, "annotations": captions}))
    return folder


def reference_inputs(folder: Path, attribute: str) -> list[dict]:
    """eval_local.py:170-258 with --use_captions and --add_random_<attribute>, transcribed."""
    from pycocotools.coco import COCO

    color_list = ["black", "white", "red", "green", "yellow", "blue", "pink", "purple"]
    texture_list = ["rubber", "fluffy", "metallic", "wooden", "plastic", "fabric", "leather", "glass"]
    coco_caption = COCO(str(folder / "captions_val2017.json"))
    coco = COCO(str(folder / "instances_val2017.json"))
    image_ids = coco.getImgIds()
    image_ids.sort()
    out = []
    for img_id in image_ids:
        img_info = coco.loadImgs([img_id])[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id], iscrowd=None))
        anns_caption = coco_caption.loadAnns(coco_caption.getAnnIds(imgIds=[img_id], iscrowd=None))[0]["caption"]
        locations = [[b[0] / img_info["width"], b[1] / img_info["height"], (b[0] + b[2]) / img_info["width"],
                      (b[1] + b[3]) / img_info["height"]] for b in (a["bbox"] for a in anns)][:30]
        cat_names = [c["name"] for c in coco.loadCats([a["category_id"] for a in anns])]
        ids = [a["id"] for a in anns]
        if attribute == "color":
            cat_names = [color_list[i % 8] + " " + n for n, i in zip(cat_names, ids, strict=True)]
        if attribute == "texture":
            cat_names = [texture_list[i % 8] + " " + n for n, i in zip(cat_names, ids, strict=True)]
        caption = ""
        for name in cat_names:  # make_a_sentence, dataset/decode_item.py:368-385
            caption += name + ", "
        caption = caption[:-2]
        out.append({"id": img_id, "prompt": anns_caption + caption, "phrases": cat_names[:30],
                    "locations": locations})
    return out


@pytest.mark.parametrize("attribute", ["color", "texture", "none"])
def test_suite_matches_the_reference_transcription(annotations: Path, attribute: str) -> None:
    suite = build_instdiff_suite(annotations, InstDiffOptions(attribute=attribute))
    reference = reference_inputs(annotations, attribute)
    assert [layout.id for layout in suite.layouts] == [f"coco-{r['id']}" for r in reference] \
        == ["coco-5", "coco-7", "coco-12", "coco-30"]
    for layout, ref in zip(suite.layouts, reference, strict=True):
        assert layout.prompt == ref["prompt"].replace("\n", " ")
        assert layout.source == f"coco2017val:{ref['id']}" and (layout.width, layout.height) == (512, 512)
        kept = [(p, box) for p, box in zip(ref["phrases"], ref["locations"], strict=True) if box[2] > box[0]]
        assert [e.prompt for e in layout.entities] == [p for p, _ in kept]
        for entity, (_, box) in zip(layout.entities, kept, strict=True):
            assert entity.bbox == pytest.approx([min(v, 1.0) for v in box], abs=0)  # bit-identical
    names = {"coco-7": ["dog", "person", "fire hydrant"]}
    if attribute == "none":
        assert [e.prompt for e in suite.layouts[1].entities] == names["coco-7"]


def test_hand_worked_image(annotations: Path) -> None:
    suite = build_instdiff_suite(annotations, InstDiffOptions(attribute="color"))
    layouts = {layout.id: layout for layout in suite.layouts}
    seven = layouts["coco-7"]
    # the first caption in file order (id 900), not the lowest id (3); no separator before the list
    assert seven.prompt == "A dog near a hydrant. blue dog, black person, green fire hydrant"
    assert [e.category for e in seven.entities] == ["dog", "person", "fire hydrant"]
    assert seven.entities[2].bbox == (50.5 / 100, 60.25 / 200, 70.5 / 100, 70.25 / 200)
    assert layouts["coco-5"].entities == () and layouts["coco-5"].prompt == "An empty field."
    assert layouts["coco-12"].prompt == "A man and a dog" + "red person, green dog"  # 1002 % 8 = 2, 1003 % 8 = 3
    assert layouts["coco-12"].entities[0].bbox == (0.0, 0.0, 1.0, 0.5)  # clamped from 301/300
    crowded = layouts["coco-30"]
    assert len(crowded.entities) == 30  # capped; the prompt names all 33
    assert crowded.prompt.count(", ") == 32
    assert crowded.prompt.endswith("red person, green fire hydrant, yellow dog")  # ids 130-132: % 8 = 2, 3, 4
    texture = build_instdiff_suite(annotations, InstDiffOptions(attribute="texture"))
    assert texture.layouts[1].prompt.endswith("fabric dog, rubber person, wooden fire hydrant")
    notes = " | ".join(suite.notes)
    assert "1 instances dropped: empty box" in notes and "3 instances beyond the cap" in notes
    assert "1 captions with control characters" in notes


def test_attribute_is_annotation_id_mod_8() -> None:
    assert [attribute_of(i, "color") for i in range(16, 24)] == list(COLORS)
    assert [attribute_of(i, "texture") for i in (8, 9, 10, 11, 12, 13, 14, 15)] == list(TEXTURES)
    assert attribute_of(2_000_007, "color") == "purple" and attribute_of(5, "none") is None


def test_options_without_captions_and_with_masks(annotations: Path) -> None:
    suite = build_instdiff_suite(annotations, InstDiffOptions(attribute="none", captions=False, masks=True,
                                                              max_objects=2, size=64))
    # image 5 has neither caption nor instance: an empty prompt, skipped and noted
    assert [layout.id for layout in suite.layouts] == ["coco-7", "coco-12", "coco-30"]
    seven = suite.layouts[0]
    assert seven.prompt == "dog, person, fire hydrant" and len(seven.entities) == 2
    mask = seven.entities[0].mask.to_array()
    assert mask.shape == (64, 64) and mask.any()
    # the polygon box x 10-40, y 20-60 of a 100x200 image at 64x64: columns 6-25, rows 6-19
    assert np.argwhere(mask.any(axis=0)).ravel()[[0, -1]].tolist() == [6, 25]
    assert any("empty prompt" in note for note in suite.notes)


def test_bad_input_is_one_line(annotations: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="attribute"):
        InstDiffOptions(attribute="shape")
    with pytest.raises(InputError, match="annotation file not found"):
        build_instdiff_suite(tmp_path / "nowhere")
    data = json.loads((annotations / "captions_val2017.json").read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 12]
    (annotations / "captions_val2017.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="image 12 has no caption"):
        build_instdiff_suite(annotations)


def test_cli_writes_the_suite(annotations: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "instdiff_texture.jsonl"
    assert main(["suite", "build", "instdiff-bench", "--annotations", str(annotations), "--attribute",
                 "texture", "--out", str(out)]) == 0
    suite = read_suite(out)
    assert suite.name == "instdiff-bench-texture" and len(suite.layouts) == 4
    assert "instdiff-bench-texture: 4 layouts" in capsys.readouterr().out
