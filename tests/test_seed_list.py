"""Listed seeds: the same seeds for every layout (--seed-list, or the suite's protocol seeds)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eligen_bench.cli import main
from eligen_bench.errors import InputError
from eligen_bench.layout import Entity, Layout
from eligen_bench.rundir import RunDir
from eligen_bench.seeds import NAMED_SEED_LISTS, derive_seed, parse_seed_list, resolve_seeds
from eligen_bench.suite import Suite, read_suite

PAINTER = "painter=harness_plugins:BoxPainter"
LAYOUTS = (
    Layout("one", "a photo of a red car", (Entity("a red car", (0.1, 0.1, 0.6, 0.6)),), 64, 64),
    Layout("two", "a photo of a blue cup and a green dog",
           (Entity("a blue cup", (0.1, 0.1, 0.4, 0.4)), Entity("a green dog", (0.5, 0.5, 0.9, 0.9))), 64, 64),
)


def test_parse_seed_list() -> None:
    assert parse_seed_list("42") == (42,)
    assert parse_seed_list("42, 37,519") == (42, 37, 519)
    assert parse_seed_list("cocomig-8") == (42, 37, 519, 609, 123, 401, 780, 0) == NAMED_SEED_LISTS["cocomig-8"]
    for bad in ("", "4x", "1,1", "-3"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seed_list(bad)


def test_resolve_seeds() -> None:
    plain = Suite("plain", "1", LAYOUTS)
    listed = Suite("listed", "1", LAYOUTS, seed_list=(42,))
    derived = resolve_seeds(plain, seeds=None, base_seed=None, seed_list=None)
    assert derived.for_layout("one") == [derive_seed(0, "one", 0)] and derived.config() == {"seeds": 1, "base_seed": 0}
    assert resolve_seeds(listed, seeds=None, base_seed=None, seed_list=None).for_layout("two") == [42]
    # Naming --seeds or --base-seed asks for derived seeds, even on a suite that lists its own.
    assert resolve_seeds(listed, seeds=2, base_seed=None, seed_list=None).for_layout("one") == \
        [derive_seed(0, "one", 0), derive_seed(0, "one", 1)]
    plan = resolve_seeds(plain, seeds=None, base_seed=None, seed_list=(42, 37))
    assert plan.for_layout("one") == plan.for_layout("two") == [42, 37]
    assert plan.config() == {"seeds": 2, "base_seed": None, "seed_list": [42, 37]}
    with pytest.raises(InputError, match="--base-seed"):
        resolve_seeds(plain, seeds=None, base_seed=3, seed_list=(42,))
    with pytest.raises(InputError, match="--seeds"):
        resolve_seeds(plain, seeds=3, base_seed=None, seed_list=(42, 37))


def test_suite_file_with_bad_seed_list_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    Suite("s", "1", LAYOUTS, seed_list=(1, 2)).write(path)
    text = path.read_text().replace('"seed_list": [1, 2]', '"seed_list": [1, "x"]')
    path.write_text(text)
    with pytest.raises(InputError, match="s.jsonl:1.*seed_list"):
        read_suite(path)


def test_seed_list_through_a_tiny_run(tmp_path: Path, capsys) -> None:
    suite = tmp_path / "suite.jsonl"
    Suite("pair", "1", LAYOUTS).write(suite)
    out = tmp_path / "run"
    argv = ["generate", "--suite", str(suite), "--generators", PAINTER, "--profile", "tiny", "--out", str(out),
            "--no-progress", "--seed-list", "42,37,519"]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"] == {"one": [42, 37, 519], "two": [42, 37, 519]}
    assert manifest["config"]["seed_list"] == [42, 37, 519] and manifest["config"]["seeds"] == 3
    assert "listed (--seed-list): 42, 37, 519" in manifest["seed_source"]
    folder = out / "images" / "painter"
    assert sorted(p.name for p in folder.glob("*.png")) == [f"{layout}_{i}.png" for layout in ("one", "two") for i in range(3)]
    # The painter draws its background from the request's seed: image i of both layouts shares it
    # (a corner no entity covers), and differs between seed indices.
    corner = {p.stem: np.asarray(Image.open(p))[60:, :5] for p in folder.glob("*.png")}
    assert (corner["one_1"] == corner["two_1"]).all() and not (corner["one_1"] == corner["one_2"]).all()
    # Another list is another configuration: refused in the same folder.
    assert main([*argv[:-1], "42,37,520"]) == 2
    assert "different configuration" in capsys.readouterr().err
    # The same list again makes nothing new.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == stamps
    assert RunDir(out).read_manifest()["config"]["seed_list"] == [42, 37, 519]


def test_suite_seeds_are_the_default_and_shown_in_the_plan(tmp_path: Path, capsys) -> None:
    suite = tmp_path / "suite.jsonl"
    Suite("pair", "1", LAYOUTS, seed_list=(42,)).write(suite)
    common = ["generate", "--suite", str(suite), "--generators", PAINTER, "--profile", "tiny", "--dry-run"]
    assert main(common) == 0
    assert "seeds: 1 per layout, listed (listed by suite pair" in capsys.readouterr().out
    assert main([*common, "--seeds", "2"]) == 0
    assert "seeds: 2 per layout, derived from base seed 0" in capsys.readouterr().out
    assert main([*common, "--seed-list", "1,2", "--base-seed", "5"]) == 2
    assert "--seed-list" in capsys.readouterr().err
