"""The filtered COCO 2017 val builder, on a small synthetic COCO-format fixture."""

from __future__ import annotations

import argparse
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from eligen_bench.coco_classes import COCO_THING_CLASSES
from eligen_bench.errors import InputError
from eligen_bench.hashing import file_sha256
from eligen_bench.suite import read_suite
from eligen_bench.suites import coco, coco_download
from eligen_bench.suites.cli import add_build_parser
from eligen_bench.suites.coco import CocoFilter, build_coco_suite, crowd_free_count
from eligen_bench.suites.coco_download import download_annotations

THINGS = [(1, "person"), (3, "car"), (18, "dog"), (62, "chair")]
STUFF = [(124, "grass"), (157, "sky-other"), (169, "tree"), (183, "other")]
BIG, TINY, EXACT = (20, 20), (10, 10), (20, 10)  # 4%, 1% and exactly 2% of a 100x100 image


class Fixture:
    """Builds instances/captions/stuff files; annotation ids increase in the order added."""

    def __init__(self) -> None:
        self.images: list[dict] = []
        self.things: list[dict] = []
        self.stuff: list[dict] = []
        self.captions: list[dict] = []

    def image(self, image_id: int, width: int = 100, height: int = 100) -> None:
        self.images.append({"id": image_id, "width": width, "height": height, "file_name": f"{image_id:012d}.jpg"})

    def add(self, image_id: int, category: int, size: tuple[int, int], *, at: tuple[int, int] = (5, 5),
            crowd: int = 0, stuff: bool = False, segmentation=None) -> None:
        (x, y), (w, h) = at, size
        seg = segmentation if segmentation is not None else [[x, y, x + w, y, x + w, y + h, x, y + h]]
        target = self.stuff if stuff else self.things
        target.append({"id": 1000 + len(self.things) + len(self.stuff), "image_id": image_id,
                       "category_id": category, "bbox": [x, y, w, h], "area": w * h,
                       "iscrowd": crowd, "segmentation": seg})

    def caption(self, image_id: int, ann_id: int, text: str) -> None:
        self.captions.append({"id": ann_id, "image_id": image_id, "caption": text})

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        cats = [{"id": i, "name": n, "supercategory": "x"} for i, n in THINGS]
        scats = [{"id": i, "name": n, "supercategory": "x"} for i, n in STUFF]
        (folder / coco.INSTANCES_FILE).write_text(json.dumps(
            {"images": self.images, "annotations": self.things, "categories": cats}))
        (folder / coco.CAPTIONS_FILE).write_text(json.dumps(
            {"images": self.images, "annotations": self.captions}))
        (folder / coco.STUFF_FILE).write_text(json.dumps(
            {"images": self.images, "annotations": self.stuff, "categories": scats}))
        return folder


def _rect(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, bw, bh = box
    array = np.zeros((h, w), dtype=np.uint8)
    array[y : y + bh, x : x + bw] = 1
    return array


def _uncompressed_rle(array: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, zeros first."""
    flat = array.flatten(order="F")
    runs, current, length = [], 0, 0
    for value in flat:
        if value == current:
            length += 1
        else:
            runs.append(length)
            current, length = value, 1
    runs.append(length)
    return {"size": list(array.shape), "counts": runs}


@pytest.fixture()
def annotations(tmp_path: Path) -> Path:
    f = Fixture()
    # Image order in the file is 2, 1, 3, ...: layouts must follow it.
    for image_id in (2, 1, 3, 4, 5, 6, 7):
        f.image(image_id)
    f.image(8, width=200, height=100)
    f.image(9)
    f.image(10)
    # 1: three large things and a tiny one; stuff: a large "other".
    for cat, at in ((18, (0, 0)), (3, (30, 0)), (62, (60, 0))):
        f.add(1, cat, BIG, at=at)
    f.add(1, 1, TINY, at=(0, 50))
    f.add(1, 183, BIG, stuff=True)
    # 2: three large things plus a large crowd object (uncompressed RLE, as COCO stores crowds).
    for cat in (18, 3, 62):
        f.add(2, cat, BIG)
    f.add(2, 1, BIG, at=(50, 50), crowd=1, segmentation=_uncompressed_rle(_rect(100, 100, (50, 50, 20, 20))))
    f.add(2, 157, TINY, stuff=True)
    # 3: two large, one tiny.
    f.add(3, 18, BIG)
    f.add(3, 3, BIG)
    f.add(3, 1, TINY)
    f.add(3, 124, TINY, stuff=True)
    # 4: nine large.
    for k in range(9):
        f.add(4, 1, BIG, at=(k * 8, 10))
    f.add(4, 157, TINY, stuff=True)
    # 5: two large things; stuff: large sky and large "other".
    f.add(5, 18, BIG)
    f.add(5, 3, BIG)
    f.add(5, 157, BIG, stuff=True, at=(0, 0))
    f.add(5, 183, BIG, stuff=True, at=(50, 50))
    # 6: no things, three large stuff objects.
    for cat in (124, 157, 169):
        f.add(6, cat, BIG, stuff=True)
    # 7: three objects covering exactly 2% (the rule is strictly more than 2%).
    for cat in (18, 3, 62):
        f.add(7, cat, EXACT)
    f.add(7, 169, TINY, stuff=True)
    # 8: a 200x100 image; polygon, uncompressed RLE and compressed RLE segmentations.
    f.add(8, 18, (40, 20), at=(10, 10))
    f.add(8, 3, (40, 20), at=(100, 10), segmentation=_uncompressed_rle(_rect(100, 200, (100, 10, 40, 20))))
    compressed = mask_utils.encode(np.asfortranarray(_rect(100, 200, (50, 60, 40, 20))))
    f.add(8, 62, (40, 20), at=(50, 60), segmentation={"size": [100, 200], "counts": compressed["counts"].decode()})
    f.add(8, 157, TINY, stuff=True)
    # 9: three large things but no stuff annotations; 10: three large things but no caption.
    for image_id in (9, 10):
        for cat in (18, 3, 62):
            f.add(image_id, cat, BIG)
    for image_id in range(2, 10):
        f.caption(image_id, 100 + image_id, f"caption of image {image_id}")
    f.caption(1, 30, "A much  longer caption describing a dog,\n a car and a chair. ")
    f.caption(1, 12, "The first caption by id.")
    f.caption(1, 50, "Short.")
    return f.write(tmp_path / "annotations")


def _ids(suite) -> list[int]:
    return [int(layout.id.removeprefix("coco-")) for layout in suite.layouts]


def _counts(suite) -> dict[int, int]:
    return {int(layout.id.removeprefix("coco-")): len(layout.entities) for layout in suite.layouts}


def test_default_filter_things_only(annotations: Path) -> None:
    suite = build_coco_suite(annotations, CocoFilter())
    assert _ids(suite) == [2, 1, 8, 9]  # file order of the images list
    assert _counts(suite) == {2: 3, 1: 3, 8: 3, 9: 3}
    assert "things only (no stuff annotations)" in suite.notes
    assert "1 images dropped: no caption" in suite.notes
    layout = suite.layouts[1]
    assert layout.id == "coco-1" and layout.source == "coco2017val:1"
    assert [e.category for e in layout.entities] == ["dog", "car", "chair"]
    assert [e.prompt for e in layout.entities] == ["dog", "car", "chair"]
    assert layout.entities[1].bbox == pytest.approx((0.30, 0.0, 0.50, 0.20))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (CocoFilter(drop_crowd=False), {2: 4, 1: 3, 8: 3, 9: 3}),
        (CocoFilter(drop_crowd_images=True), {1: 3, 8: 3, 9: 3}),
        (CocoFilter(count_before_area_filter=True), {2: 3, 1: 3, 3: 2, 7: 0, 8: 3, 9: 3}),
        (CocoFilter(count_before_area_filter=True, min_entities=1), {2: 3, 1: 3, 3: 2, 8: 3, 9: 3}),
        (CocoFilter(min_object_area=0.019), {2: 3, 1: 3, 7: 3, 8: 3, 9: 3}),
        (CocoFilter(max_objects=9), {2: 3, 1: 3, 4: 9, 8: 3, 9: 3}),
        (CocoFilter(min_objects=2), {2: 3, 1: 3, 3: 2, 5: 2, 8: 3, 9: 3}),
        (CocoFilter(instance_whitelist=("dog", "car", "person")), {}),
        (CocoFilter(image_ids=(8, 1, 3)), {1: 3, 8: 3}),
        (CocoFilter.layoutdiffusion(), {2: 3, 1: 3, 5: 3, 6: 3, 8: 3}),
        (CocoFilter.layoutdiffusion(drop_other=False), {2: 3, 1: 4, 5: 4, 6: 3, 8: 3}),
        (CocoFilter.layoutdiffusion(stuff_images_only=False), {2: 3, 1: 3, 5: 3, 6: 3, 8: 3, 9: 3}),
        (CocoFilter.eligen(), {2: 3, 1: 3, 5: 2, 8: 3}),
        (CocoFilter.eligen(min_entities=0), {2: 3, 1: 3, 5: 2, 6: 0, 8: 3}),
    ],
)
def test_options_change_what_is_kept(annotations: Path, options: CocoFilter, expected: dict) -> None:
    assert _counts(build_coco_suite(annotations, options)) == expected


def test_stuff_entities_and_notes(annotations: Path) -> None:
    suite = build_coco_suite(annotations, CocoFilter.layoutdiffusion())
    sky = {layout.id: layout for layout in suite.layouts}["coco-5"].entities[2]
    assert (sky.prompt, sky.category) == ("sky", "sky-other")
    assert any("COCO-Stuff" in note for note in suite.notes)
    eligen = build_coco_suite(annotations, CocoFilter.eligen())
    assert all(e.category in COCO_THING_CLASSES for layout in eligen.layouts for e in layout.entities)
    assert any("not entities" in note for note in eligen.notes)


def test_caption_choice_is_deterministic(annotations: Path) -> None:
    def prompt(rule: str) -> str:
        suite = build_coco_suite(annotations, CocoFilter(caption=rule))
        return {layout.id: layout.prompt for layout in suite.layouts}["coco-1"]

    assert prompt("first") == "The first caption by id."  # lowest annotation id, not file order
    assert prompt("shortest") == "Short."
    assert prompt("longest") == "A much longer caption describing a dog, a car and a chair."
    assert build_coco_suite(annotations, CocoFilter()).hash == build_coco_suite(annotations, CocoFilter()).hash


def test_masks_decode_at_image_size(annotations: Path) -> None:
    suite = build_coco_suite(annotations, CocoFilter())
    layout = {layout.id: layout for layout in suite.layouts}["coco-8"]
    assert (layout.width, layout.height) == (200, 100)
    expected = [(10, 10, 40, 20), (100, 10, 40, 20), (50, 60, 40, 20)]  # polygon, RLE, compressed RLE
    for entity, box in zip(layout.entities, expected, strict=True):
        array = entity.mask.to_array()
        assert array.shape == (100, 200)
        truth = _rect(100, 200, box).astype(bool)
        assert (array & truth).sum() / (array | truth).sum() > 0.9
        x, y, w, h = box
        assert entity.bbox == pytest.approx((x / 200, y / 100, (x + w) / 200, (y + h) / 100))
    crowd = {layout.id: layout for layout in build_coco_suite(annotations, CocoFilter(drop_crowd=False)).layouts}
    assert crowd["coco-2"].entities[3].mask.to_array().sum() == 400
    no_masks = build_coco_suite(annotations, CocoFilter(masks=False))
    assert not any(layout.has_masks for layout in no_masks.layouts)


def test_written_suite_round_trips(annotations: Path, tmp_path: Path) -> None:
    suite = build_coco_suite(annotations, CocoFilter.layoutdiffusion())
    suite.write(tmp_path / "coco.jsonl")
    again = read_suite(tmp_path / "coco.jsonl")
    assert again.hash == suite.hash and again.notes == suite.notes


def test_missing_and_corrupt_files(annotations: Path, tmp_path: Path) -> None:
    (annotations / coco.CAPTIONS_FILE).unlink()
    with pytest.raises(InputError, match="captions_val2017.json"):
        build_coco_suite(annotations, CocoFilter())
    (annotations / coco.CAPTIONS_FILE).write_text('{"annotations": [')
    with pytest.raises(InputError, match="captions_val2017.json"):
        build_coco_suite(annotations, CocoFilter())
    (annotations / coco.CAPTIONS_FILE).write_text('{"annotations": []}')
    (annotations / coco.STUFF_FILE).unlink()
    with pytest.raises(InputError, match="stuff_val2017.json"):
        build_coco_suite(annotations, CocoFilter.layoutdiffusion())
    (annotations / coco.INSTANCES_FILE).write_text('{"images": []}')
    with pytest.raises(InputError, match="instances_val2017.json"):
        build_coco_suite(annotations, CocoFilter())


def test_segmentation_of_the_wrong_size_is_reported(tmp_path: Path) -> None:
    f = Fixture()
    f.image(1)
    for cat in (18, 3):
        f.add(1, cat, BIG)
    f.add(1, 62, BIG, segmentation=_uncompressed_rle(_rect(50, 50, (0, 0, 20, 20))))
    f.caption(1, 1, "three things")
    with pytest.raises(InputError, match="annotation 1002"):
        build_coco_suite(f.write(tmp_path / "a"), CocoFilter())


def test_bad_options_are_rejected() -> None:
    with pytest.raises(InputError, match="min_object_area"):
        CocoFilter(min_object_area=1.5)
    with pytest.raises(InputError, match="min_objects"):
        CocoFilter(min_objects=9, max_objects=8)
    with pytest.raises(InputError, match="caption"):
        CocoFilter(caption="random")


def _serve(annotations: Path, folder: Path, *, extra: str = "{}") -> Path:
    """An archive laid out like the official one (files under annotations/)."""
    archive = folder / "annotations_trainval2017.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for name in (coco.INSTANCES_FILE, coco.CAPTIONS_FILE):
            zf.write(annotations / name, f"annotations/{name}")
        zf.writestr("annotations/person_keypoints_val2017.json", extra)
    return archive


def test_download_uses_https_and_pins_the_official_digest() -> None:
    assert coco_download.ANNOTATIONS_URL.startswith("https://images.cocodataset.org/")
    assert coco_download.STUFF_ANNOTATIONS_URL.startswith("https://images.cocodataset.org/")
    assert len(coco_download.ANNOTATIONS_SHA256 or "") == 64


def test_download_extracts_from_the_official_zip_layout(annotations: Path, tmp_path: Path, monkeypatch) -> None:
    archive = _serve(annotations, tmp_path / "served")
    monkeypatch.setattr(coco_download, "ANNOTATIONS_URL", archive.as_uri())
    monkeypatch.setattr(coco_download, "ANNOTATIONS_SHA256", file_sha256(archive))
    cache = tmp_path / "cache"
    out = download_annotations(cache)
    assert sorted(p.name for p in out.iterdir()) == [coco.CAPTIONS_FILE, coco.INSTANCES_FILE, coco_download.RECORD_FILE]
    assert _ids(build_coco_suite(out, CocoFilter())) == [2, 1, 8, 9]
    assert coco_download.source_notes(out) == [
        f"annotations from {archive.as_uri()} (sha256 {file_sha256(archive)}, pinned)"]
    archive.unlink()  # already extracted: no second download
    assert download_annotations(cache) == out


def test_download_with_another_digest_is_refused(annotations: Path, tmp_path: Path, monkeypatch) -> None:
    archive = _serve(annotations, tmp_path / "served")
    monkeypatch.setattr(coco_download, "ANNOTATIONS_URL", archive.as_uri())
    monkeypatch.setattr(coco_download, "ANNOTATIONS_SHA256", "0" * 64)
    with pytest.raises(InputError, match="differs from the expected 0000"):
        download_annotations(tmp_path / "cache")
    assert not (tmp_path / "cache" / "annotations").exists()


def test_unpinned_digest_is_recorded_then_checked(annotations: Path, tmp_path: Path, monkeypatch) -> None:
    archive = _serve(annotations, tmp_path / "served")
    first = file_sha256(archive)
    monkeypatch.setattr(coco_download, "ANNOTATIONS_URL", archive.as_uri())
    monkeypatch.setattr(coco_download, "ANNOTATIONS_SHA256", None)
    cache = tmp_path / "cache"
    out = download_annotations(cache)
    assert (cache / "annotations_trainval2017.zip.sha256").read_text().strip() == first
    assert "recorded at first download" in coco_download.source_notes(out)[0]
    # A later download that serves other bytes is refused, not trusted.
    _serve(annotations, tmp_path / "served", extra='{"changed": 1}')
    (cache / "annotations_trainval2017.zip").unlink()
    (out / coco.INSTANCES_FILE).unlink()
    with pytest.raises(InputError, match=f"differs from the expected {first}"):
        download_annotations(cache)


def test_extracted_files_are_checked_on_every_later_use(annotations: Path, tmp_path: Path, monkeypatch) -> None:
    archive = _serve(annotations, tmp_path / "served")
    monkeypatch.setattr(coco_download, "ANNOTATIONS_URL", archive.as_uri())
    monkeypatch.setattr(coco_download, "ANNOTATIONS_SHA256", file_sha256(archive))
    out = download_annotations(tmp_path / "cache")
    with open(out / coco.CAPTIONS_FILE, "a") as handle:
        handle.write(" ")
    with pytest.raises(InputError, match=f"{coco.CAPTIONS_FILE}: sha256 .* differs"):
        download_annotations(tmp_path / "cache")


def test_download_of_a_broken_zip_is_reported_and_removed(tmp_path: Path, monkeypatch) -> None:
    served = tmp_path / "annotations_trainval2017.zip"
    served.write_bytes(b"not a zip")
    monkeypatch.setattr(coco_download, "ANNOTATIONS_URL", served.as_uri())
    monkeypatch.setattr(coco_download, "ANNOTATIONS_SHA256", None)
    with pytest.raises(InputError, match="not a valid zip"):
        download_annotations(tmp_path / "cache")
    assert not (tmp_path / "cache" / "annotations_trainval2017.zip").exists()
    assert not (tmp_path / "cache" / "annotations_trainval2017.zip.sha256").exists()  # nothing trusted


def test_paper_presets_give_every_method_boxes(annotations: Path) -> None:
    for preset in (CocoFilter.eligen(), CocoFilter.layoutdiffusion()):
        suite = build_coco_suite(annotations, preset)
        assert suite.layouts and not any(layout.has_masks for layout in suite.layouts)
        assert "boxes only: COCO segmentations not kept" in suite.notes
        masked = build_coco_suite(annotations, replace(preset, masks=True))  # the arbitrary-mask track
        assert all(e.mask is not None for layout in masked.layouts for e in layout.entities)


def test_cli_masks_is_an_explicit_option(annotations: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_build_parser(parser.add_subparsers(dest="what", required=True))
    out = tmp_path / "suite.jsonl"
    for extra, masked in (([], False), (["--masks"], True)):
        args = parser.parse_args(["coco", "--annotations", str(annotations), "--out", str(out),
                                  "--preset", "eligen", *extra])
        assert args.func(args) == 0
        assert any(layout.has_masks for layout in read_suite(out).layouts) is masked


def test_cli_prints_the_count_of_the_other_crowd_reading(annotations: Path, tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    add_build_parser(parser.add_subparsers(dest="what", required=True))
    out = tmp_path / "suite.jsonl"
    args = parser.parse_args(["coco", "--annotations", str(annotations), "--out", str(out), "--preset", "eligen"])
    assert args.func(args) == 0
    # Built independently with the other reading (image 2 holds a crowd object).
    other = len(build_coco_suite(annotations, CocoFilter.eligen(drop_crowd_images=True)).layouts)
    assert (len(read_suite(out).layouts), other) == (4, 3)
    assert f"(--drop-crowd-images): {other} layouts" in capsys.readouterr().out
    assert crowd_free_count(read_suite(out)) == other
    assert crowd_free_count(build_coco_suite(annotations, CocoFilter.eligen(drop_crowd_images=True))) is None


def test_suite_notes_name_the_source_files_by_digest(annotations: Path) -> None:
    notes = build_coco_suite(annotations, CocoFilter()).notes
    assert f"built from {coco.INSTANCES_FILE} (sha256 {file_sha256(annotations / coco.INSTANCES_FILE)})" in notes


def test_cli_builds_and_reports(annotations: Path, tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    add_build_parser(parser.add_subparsers(dest="what", required=True))
    out = tmp_path / "suite.jsonl"
    args = parser.parse_args(["coco", "--annotations", str(annotations), "--out", str(out),
                              "--preset", "layoutdiffusion", "--include-other"])
    assert args.func(args) == 0
    suite = read_suite(out)
    assert _counts(suite) == {2: 3, 1: 4, 5: 4, 6: 3, 8: 3}
    printed = capsys.readouterr().out
    assert "5 layouts" in printed and suite.hash in printed
    args = parser.parse_args(["coco", "--annotations", str(annotations), "--out", str(out),
                              "--stuff", str(annotations / coco.STUFF_FILE), "--min-objects", "2"])
    assert args.func(args) == 0
    assert 3 in _counts(read_suite(out))
