"""The MIG-Bench loader (on the published files) and the bundled mini suite."""

from __future__ import annotations

import argparse
import shutil
from collections import Counter
from pathlib import Path

import pytest

from eligen_bench.coco_classes import COCO_THING_CLASSES
from eligen_bench.errors import InputError
from eligen_bench.registry import entries
from eligen_bench.suite import read_suite
from eligen_bench.suites import mig_bench
from eligen_bench.suites.bundled import load_mini
from eligen_bench.suites.cli import add_build_parser
from eligen_bench.suites.make_mini import build_mini

MIG_DIR = Path(__file__).parents[2] / "shared" / "data" / "mig_bench"
needs_mig = pytest.mark.skipif(not (MIG_DIR / mig_bench.PROMPTS_FILE).is_file(), reason="MIG-Bench files not present")


@pytest.fixture(scope="module")
def mig():
    return mig_bench.load_mig_bench(MIG_DIR)


@needs_mig
def test_mig_bench_counts(mig) -> None:
    assert len(mig.layouts) == 800  # the file has 800 prompts and no final newline
    assert [layout.id for layout in mig.layouts[:3]] == ["mig-0", "mig-1", "mig-2"]
    # Levels L2-L6: 160 prompts with each number of instances.
    assert Counter(len(layout.entities) for layout in mig.layouts) == {n: 160 for n in range(2, 7)}
    assert all(e.category in COCO_THING_CLASSES for layout in mig.layouts for e in layout.entities)
    assert all((layout.width, layout.height) == (512, 512) for layout in mig.layouts)


@needs_mig
def test_mig_bench_first_layout_by_hand(mig) -> None:
    # Line 1 of mig_bench.txt and its entry in mig_bench_anno.yaml, read by eye.
    layout = mig.layouts[0]
    assert layout.prompt == "a photo of a blue fork and a green carrot and a red carrot and a red carrot"
    assert layout.source == "mig-bench:0"
    assert [(e.prompt, e.category) for e in layout.entities] == [
        ("a blue fork", "fork"), ("a green carrot", "carrot"), ("a red carrot", "carrot"), ("a red carrot", "carrot"),
    ]
    assert layout.entities[0].bbox == pytest.approx((0.72472, 0.008986666666666667, 1.0, 0.5595466666666667))
    # The phrase that occurs twice takes its two boxes in order.
    assert layout.entities[2].bbox == pytest.approx((0.16056, 0.21597333333333332, 0.28676, 0.38949333333333336))
    assert layout.entities[3].bbox == pytest.approx((0.07587999999999999, 0.36234666666666665, 0.20118, 0.49410666666666664))


@needs_mig
def test_mig_bench_multiword_class_and_long_yaml_keys(mig) -> None:
    # Prompts over 128 characters are written as "? " keys in the YAML file.
    long_ones = [layout for layout in mig.layouts if len(layout.prompt) > 128]
    assert long_ones
    assert {e.category for e in mig.layouts[2].entities} == {"bottle", "spoon", "bowl"}
    assert any(e.category == "cell phone" for layout in mig.layouts for e in layout.entities)


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "mig"
    shutil.copytree(MIG_DIR, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


@needs_mig
def test_mig_bench_bad_box_names_the_prompt(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    anno = folder / mig_bench.ANNOTATIONS_FILE
    text = anno.read_text()
    assert "    - 0.5595466666666667\n" in text
    anno.write_text(text.replace("    - 0.5595466666666667\n", "    - 1.5\n", 1))
    with pytest.raises(InputError, match="blue fork and a green carrot") as info:
        mig_bench.load_mig_bench(folder)
    assert "outside [0, 1]" in str(info.value)


@needs_mig
def test_mig_bench_missing_file(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / mig_bench.PROMPTS_FILE).unlink()
    with pytest.raises(InputError, match="mig_bench.txt"):
        mig_bench.load_mig_bench(folder)


def test_phrase_category() -> None:
    assert mig_bench.phrase_category("a black cell phone", where="t") == "cell phone"
    with pytest.raises(InputError, match="not a COCO class"):
        mig_bench.phrase_category("a red unicorn", where="t")
    with pytest.raises(InputError, match="colour"):
        mig_bench.phrase_category("a big dog", where="t")


@needs_mig
def test_mig_bench_download_checks_sha256(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(mig_bench, "file_url", lambda name, commit=mig_bench.MIGC_COMMIT: (MIG_DIR / name).as_uri())
    folder = mig_bench.download_mig_bench(tmp_path / "cache")
    assert len(mig_bench.load_mig_bench(folder).layouts) == 800
    monkeypatch.setattr(mig_bench, "FILE_SHA256", {mig_bench.PROMPTS_FILE: "0" * 64})
    with pytest.raises(InputError, match="sha256"):
        mig_bench.download_mig_bench(tmp_path / "other")
    assert not (tmp_path / "other" / mig_bench.PROMPTS_FILE).exists()


@needs_mig
def test_mig_bench_entry_point_and_cli(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(mig_bench.DIR_ENV, str(MIG_DIR))
    suite = entries("suite")["mig-bench"].load()()
    assert len(suite.layouts) == 800
    parser = argparse.ArgumentParser()
    add_build_parser(parser.add_subparsers(dest="what", required=True))
    args = parser.parse_args(["mig-bench", "--dir", str(MIG_DIR), "--out", str(tmp_path / "mig.jsonl")])
    assert args.func(args) == 0
    assert read_suite(tmp_path / "mig.jsonl").hash == suite.hash
    assert suite.hash in capsys.readouterr().out


def test_mini_loads_through_its_entry_point() -> None:
    suite = entries("suite")["mini"].load()()
    assert suite.name == "mini" and 30 <= len(suite.layouts) <= 40
    assert suite.hash == load_mini().hash


def test_mini_covers_every_entity_count() -> None:
    counts = Counter(len(layout.entities) for layout in load_mini().layouts)
    assert set(counts) == set(range(9))
    assert counts[0] in (2, 3) and all(counts[n] >= 3 for n in range(1, 9))


def test_mini_masks_and_categories() -> None:
    suite = load_mini()
    masked = [layout for layout in suite.layouts if layout.has_masks]
    assert len(masked) == 6
    for layout in masked:
        assert (layout.width, layout.height) == (512, 512)
        for entity in layout.entities:
            array = entity.mask.to_array()
            assert array.shape == (512, 512) and array.sum() > 100
            # The box is the mask's tight bound.
            assert entity.region(512, 512)[array].all()
    assert all(e.category in COCO_THING_CLASSES for layout in suite.layouts for e in layout.entities)
    for layout in suite.layouts:
        for e in layout.entities:
            x1, y1, x2, y2 = e.bbox
            assert (x2 - x1) * (y2 - y1) > 0.001, (layout.id, e.prompt)


def test_mini_file_matches_its_generator() -> None:
    """The committed file is exactly what make_mini writes (hash recorded in the header)."""
    suite = load_mini()
    assert not any("differs from the header" in note for note in suite.notes)
    assert build_mini().hash == suite.hash


def _reference_order(path: Path) -> dict[str, list[str]]:
    """Prompt -> phrases in the order the YAML file writes them (its node graph, not a dict), each
    repeated once per box: the order limuloo/MIGC@effd6cc inference_mig_benchmark.py:48-54 walks."""
    import yaml

    root = yaml.compose(path.read_text(encoding="utf-8"))
    order = {}
    for key, value in root.value:
        order[key.value.strip()] = [phrase.value for phrase, boxes in value.value if phrase.value != "coco_id"
                                    for _ in boxes.value]
    return order


@needs_mig
def test_mig_bench_instances_follow_the_reference_scripts_order(mig) -> None:
    order = _reference_order(MIG_DIR / mig_bench.ANNOTATIONS_FILE)
    assert all([e.prompt for e in layout.entities] == order[layout.prompt] for layout in mig.layouts)
    by_mention = sum([e.prompt for e in layout.entities] != layout.prompt[len("a photo of "):].split(" and ")
                     for layout in mig.layouts)
    assert by_mention == 678  # layouts whose reference order is not the prompt's order
    # By eye, from the file's second entry: keys are written sorted, so the last-mentioned
    # 'a black orange' comes second.
    layout = next(x for x in mig.layouts if x.prompt.startswith("a photo of a black apple and a blue orange"))
    assert [e.prompt for e in layout.entities] == [
        "a black apple", "a black orange", "a blue orange", "a green orange", "a white orange"]
    assert layout.entities[1].bbox == pytest.approx((0.7416875, 0.790962441314554, 0.914578125, 0.9593661971830986))


@needs_mig
def test_mig_bench_lists_the_reference_seed(mig, tmp_path: Path) -> None:
    assert mig.seed_list == (42,) and mig.version == "2"
    mig.write(tmp_path / "mig.jsonl")
    again = read_suite(tmp_path / "mig.jsonl")
    assert again.seed_list == (42,) and again.hash == mig.hash
    assert mig.subset(3).seed_list == (42,)
