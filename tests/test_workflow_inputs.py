"""What a new user meets first: a stratified sample, offline suite builds that say what to
fetch, a dry run that never touches the network, validate naming every problem, --version,
and the run folder given either way."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from eligen_bench import __version__
from eligen_bench.cli import main
from eligen_bench.suite import Suite, read_suite
from eligen_bench.suites import mig_bench
from eligen_bench.suites.bundled import load_mini

from fixtures import write_small_suite

MIG_DIR = Path(__file__).parents[2] / "shared" / "data" / "mig_bench"
PAINTER = "painter=harness_plugins:BoxPainter"
FILL = "harness_plugins:RegionFill"


def test_sample_is_stratified_by_entity_count_seeded_and_says_so() -> None:
    mini = load_mini()
    sizes = Counter(len(layout.entities) for layout in mini.layouts)  # 0: 3, 1..4: 5, 5..6: 4, 7..8: 3
    sample = mini.sample(12, seed=0)
    counts = Counter(len(layout.entities) for layout in sample.layouts)
    assert len(sample.layouts) == 12 and set(counts) <= set(sizes)
    # Hamilton's method by hand: 12 x share = 0.97 (0, 7, 8), 1.62 (1-4), 1.30 (5, 6); the floors
    # give 6, the other 6 go to the largest remainders: 0, 7, 8 (0.97), then 1, 2, 3 (0.62; ties:
    # fewer entities first).
    assert counts == {0: 1, 1: 2, 2: 2, 3: 2, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1}
    ids = [layout.id for layout in mini.layouts]
    assert [layout.id for layout in sample.layouts] == sorted((la.id for la in sample.layouts), key=ids.index)
    assert mini.sample(12, seed=0) == sample and mini.sample(12, seed=1) != sample
    assert sample.notes[-1] == (f"stratified sample: 12 of 37 layouts (suite hash {mini.hash}), drawn per entity "
                                "count in proportion, seed 0")
    first = [layout.id for layout in mini.layouts[:6]]
    assert {len(layout.entities) for layout in mini.layouts if layout.id in first} <= {0, 1}  # what --limit 6 gives
    assert len({len(layout.entities) for layout in mini.sample(6).layouts}) == 6
    assert mini.sample(100) is mini


def test_sample_is_recorded_in_the_run(tmp_path: Path, capsys) -> None:
    suite = write_small_suite(tmp_path / "small.jsonl", count=6)
    out = tmp_path / "run"
    args = ["run", "--suite", str(suite), "--generators", PAINTER, "--metrics", FILL, "--out", str(out),
            "--no-progress", "--sample", "3", "--sample-seed", "5", "--plot-formats", "png"]
    assert main([*args, "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "suite: small v1, 3 layouts" in plan and "note: stratified sample: 3 of 7 layouts" in plan
    assert not out.exists()
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["sample"]["layouts"] == 3 and manifest["sample"]["seed"] == 5
    assert "seed 5" in read_suite(out / "suite.jsonl").notes[-1]
    assert not any("stratified" in w for w in manifest["warnings"])  # a note, not a warning
    assert main(["run", "--suite", str(suite), "--limit", "2", "--sample", "2", "--out", str(tmp_path / "x")]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test; urllib downloads fail as offline."""
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network access: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return attempts


def test_offline_suite_builds_say_what_to_fetch_and_where(tmp_path: Path, monkeypatch, no_network, capsys) -> None:
    monkeypatch.setenv("ELIGEN_BENCH_CACHE", str(tmp_path / "cache"))
    assert main(["suite", "build", "mig-bench", "--out", str(tmp_path / "mig.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    for part in ("--dir DIR", mig_bench.DIR_ENV, "mig_bench.txt", "mig_bench_anno.yaml",
                 "https://github.com/limuloo/MIGC/tree/effd6cc/bench_file", str(tmp_path / "cache")):
        assert part in err[0], part
    assert main(["suite", "build", "coco", "--out", str(tmp_path / "coco.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    for part in ("--annotations DIR", "instances_val2017.json", "captions_val2017.json",
                 "annotations_trainval2017.zip"):
        assert part in err[0], part
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["suite", "build", "coco", "--annotations", str(empty), "--out", str(tmp_path / "c.jsonl")]) == 2
    assert "--annotations DIR" in capsys.readouterr().err
    assert main(["suite", "build", "mig-bench", "--dir", str(empty), "--out", str(tmp_path / "m.jsonl")]) == 2
    assert "MIG-Bench prompt file not found" in capsys.readouterr().err
    assert not no_network


def test_dry_run_never_touches_the_network(tmp_path: Path, monkeypatch, no_network, capsys) -> None:
    monkeypatch.setenv("ELIGEN_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(mig_bench.DIR_ENV, raising=False)
    downloads: list[str] = []
    monkeypatch.setattr(mig_bench, "download_mig_bench", lambda *a, **k: downloads.append("called"))
    command = ["run", "--suite", "mig-bench", "--generators", PAINTER, "--metrics", FILL, "--dry-run",
               "--out", str(tmp_path / "run")]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "a dry run downloads nothing" in err and mig_bench.DIR_ENV in err
    assert not downloads and not no_network
    if (MIG_DIR / mig_bench.PROMPTS_FILE).is_file():
        monkeypatch.setenv(mig_bench.DIR_ENV, str(MIG_DIR))
        assert main(command + ["--sample", "10"]) == 0
        assert "suite: mig-bench v2, 10 layouts" in capsys.readouterr().out
    # The full profile's plan (models named, nothing loaded) asks no server either.
    assert main(["run", "--suite", "mini", "--limit", "2", "--profile", "full", "--dry-run",
                 "--generators", "eligen,gligen", "--metrics", "miou,clip_entity", "--out",
                 str(tmp_path / "full")]) == 0
    assert not no_network and not (tmp_path / "full").exists()


def test_validate_reports_every_problem_of_a_line_and_warns_on_unknown_categories(tmp_path: Path, capsys) -> None:
    good = {"id": "ok", "prompt": "a living room",
            "entities": [{"prompt": "a sofa", "bbox": [0.1, 0.1, 0.5, 0.5], "category": "sofa"},
                         {"prompt": "a unicorn", "bbox": [0.5, 0.5, 0.9, 0.9], "category": "unicorn"}]}
    bad = {"id": "bad one", "prompt": "", "width": 5,
           "entities": [{"prompt": "", "bbox": [0, 0, 2, 1]}, {"prompt": "x", "bbox": [0.1, 0.1, 0.2, 0.2], "size": 1}]}
    path = tmp_path / "suite.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    assert main(["validate", str(path)]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: suite.jsonl:2")]
    fields = ["id", "prompt", "width", "entities[0].prompt", "entities[0].bbox", "entities[1]"]
    assert len(errors) == len(fields), errors
    for field, line in zip(fields, errors, strict=True):
        assert f": {field}: " in line, (field, line)
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "'unicorn' is not one of COCO's 80 thing classes" in warnings[0]  # 'sofa' = couch
    assert lines[-1] == f"6 problem(s) in {path}"
    path.write_text(json.dumps(good) + "\n", encoding="utf-8")
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.strip().endswith("(1 warning(s))")


def test_version_and_both_forms_of_the_run_folder(tmp_path: Path, capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"eligen-bench {__version__}"
    suite = write_small_suite(tmp_path / "small.jsonl")
    out = tmp_path / "run"
    assert main(["run", "--suite", str(suite), "--generators", PAINTER, "--metrics", FILL, "--out", str(out),
                 "--no-progress", "--plot-formats", "png"]) == 0
    for command in (["status", str(out)], ["status", "--out", str(out)], ["score", str(out), "--metrics", FILL,
                    "--no-progress"], ["report", str(out), "--plot-formats", "png"],
                    ["report", "--out", str(out), "--plot-formats", "png"]):
        assert main(command) == 0, command
    capsys.readouterr()
    assert main(["status", str(out), "--out", str(tmp_path / "other")]) == 2
    assert "two run folders given" in capsys.readouterr().err
    assert main(["report"]) == 2
    assert "name the run folder" in capsys.readouterr().err


def test_sample_keeps_suite_order_and_folder() -> None:
    layouts = load_mini().layouts
    suite = Suite("s", "1", layouts, notes=("n",), folder="/somewhere")
    sample = suite.sample(5, seed=3)
    assert sample.folder == "/somewhere" and sample.notes[0] == "n" and len(sample.layouts) == 5
