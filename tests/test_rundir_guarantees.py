"""What a run folder guarantees: a user's folder is never touched, one command at a time works
on a run, tables never silently lose or mix rows, and inputs are checked for integrity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from eligen_bench.cli import main
from eligen_bench.layout import Layout
from eligen_bench.specs import parse_spec
from eligen_bench.suite import Suite

from fixtures import small_suite, write_small_suite

TESTS = Path(__file__).parent
PAINTER = "painter=harness_plugins:BoxPainter"
FILL = "harness_plugins:RegionFill"


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def generate(suite: Path, out: Path, *extra: str, generators: str = PAINTER) -> int:
    return main(["generate", "--suite", str(suite), "--generators", generators, "--seeds", "2",
                 "--out", str(out), "--no-progress", *extra])


def score(out: Path, metrics: str) -> int:
    return main(["score", "--out", str(out), "--metrics", metrics, "--no-progress"])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


# 1. the user's data ---------------------------------------------------------------------
@pytest.mark.parametrize("command", ["generate", "run", "dry-run"])
def test_a_folder_that_is_not_a_run_folder_is_refused_untouched(command, tmp_path, capsys) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "mine"
    (out / "deep" / "er").mkdir(parents=True)
    for name in ("notes.txt", "suite.jsonl", "scores.parquet", ".draft.tmp", "deep/er/.cache.tmp",
                 "report/table.md"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(f"the user's {name}\n")
    before = snapshot(out)
    args = ["--suite", str(suite), "--generators", PAINTER, "--out", str(out), "--no-progress"]
    if command == "run":
        args = ["run", *args, "--metrics", FILL]
    else:
        args = ["generate", *args] + (["--dry-run"] if command == "dry-run" else [])
    capsys.readouterr()
    assert main(args) == 2
    assert "not a run folder" in one_line_error(capsys)
    assert snapshot(out) == before  # not a byte changed, no lock file, no temporaries removed


def test_an_empty_folder_is_used(tmp_path) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    (tmp_path / "empty").mkdir()
    assert generate(suite, tmp_path / "empty") == 0
    assert (tmp_path / "empty" / "manifest.json").exists()


def test_clean_up_removes_only_the_projects_temporaries_in_the_runs_own_folders(tmp_path) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert generate(suite, out) == 0
    ours = [out / ".manifest.json.k3j_x9a0.eligen.tmp", out / "images" / "painter" / ".plain_0.png.a1b2c3d4.eligen.tmp"]
    kept = [out / ".notes.tmp", out / "images" / "painter" / ".plain_0.png.tmp",
            out / "mine" / ".data.json.a1b2c3d4.eligen.tmp", out / "images" / "painter" / "draft.eligen.tmp"]
    for path in ours + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    assert generate(suite, out) == 0
    assert not any(path.exists() for path in ours)
    assert all(path.exists() for path in kept)


def test_bad_input_on_an_existing_run_writes_nothing(tmp_path, capsys) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert generate(suite, out) == 0
    before = snapshot(out)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(suite.read_text() + '{"id": "x"}\n')
    capsys.readouterr()
    assert generate(bad, out) == 2
    assert "bad.jsonl:" in one_line_error(capsys)
    assert snapshot(out) == before


# 2. concurrency ----------------------------------------------------------------------------
@pytest.mark.slow
def test_two_concurrent_score_commands_keep_both_metrics(tmp_path) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert generate(suite, out) == 0
    command = [sys.executable, "-m", "eligen_bench.cli", "score", "--out", str(out), "--no-progress", "--metrics"]
    slow, quick = "slow=harness_plugins:RegionFill[delay=0.8]", "quick=harness_plugins:RegionFill[tolerance=3]"
    first = subprocess.Popen(command + [slow], env=cli_env(), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while "slow" not in json.loads((out / "manifest.json").read_text())["config"]["metrics"]:
        assert time.time() < deadline and first.poll() is None, "the first score command did not start"
        time.sleep(0.05)
    second = subprocess.run(command + [quick], env=cli_env(), cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                            timeout=120)
    first_err = first.communicate(timeout=120)[1]
    assert first.returncode == 0, first_err
    assert second.returncode == 0, second.stderr
    table = pd.read_parquet(out / "scores.parquet")
    entities = sum(len(layout.entities) for layout in small_suite().layouts)
    assert table.groupby("metric").size().to_dict() == {"quick": 2 * entities, "slow": 2 * entities}
    assert set(json.loads((out / "manifest.json").read_text())["config"]["metrics"]) == {"slow", "quick"}


def test_items_are_made_outside_the_manifest_lock_and_clean_up_spares_live_writers(tmp_path) -> None:
    """Only manifest and compile phases are serialised; a process making items holds the shared
    work lock, and clean-up by another process then leaves every temporary alone."""
    from filelock import FileLock

    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert generate(suite, out) == 0
    live = out / "images" / "painter" / ".plain_0.png.a1b2c3d4.eligen.tmp"
    live.write_text("being written")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from eligen_bench.rundir import RunDir\n"
                               "with RunDir(Path(sys.argv[1])).working():\n"
                               "    print('working', flush=True); time.sleep(60)", str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "working"
        FileLock(out / ".eligen-bench.lock").acquire(timeout=5).lock.release()  # the manifest lock is free
        assert generate(suite, out) == 0
        assert live.exists()  # a live writer's temporary is never removed
    finally:
        holder.kill()
        holder.wait()
    assert generate(suite, out) == 0
    assert not live.exists()  # once nobody makes items, the stale temporary goes


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path) -> None:
    from filelock import FileLock, Timeout

    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert generate(suite, out) == 0
    lock = out / ".eligen-bench.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock; "
                               "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(60)",
                               str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(Timeout):
        FileLock(lock).acquire(timeout=0.1)
    holder.kill()
    holder.wait()
    assert generate(suite, out) == 0


# 5. no silently wrong table ------------------------------------------------------------------
@pytest.mark.parametrize("metrics", [f"a={FILL},b={FILL}", f"{FILL},{FILL}[tolerance=0]"])
def test_two_labels_of_one_metric_are_refused_up_front(metrics, tmp_path, capsys) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert generate(suite, out) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert score(out, metrics) == 2
    assert "is the same metric as" in one_line_error(capsys)
    assert snapshot(out) == before
    assert main(["run", "--suite", str(suite), "--generators", PAINTER, "--seeds", "2", "--out",
                 str(tmp_path / "new"), "--metrics", metrics, "--no-progress"]) == 2
    assert not (tmp_path / "new").exists()


def test_a_metric_already_in_the_run_under_another_label_is_refused(tmp_path, capsys) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert generate(suite, out) == 0
    assert score(out, f"a={FILL}") == 0
    capsys.readouterr()
    assert score(out, f"b={FILL}") == 2
    assert "same metric as 'a'" in one_line_error(capsys)


def test_rows_take_the_label_they_are_compiled_under(tmp_path) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert generate(suite, out) == 0
    assert score(out, f"a={FILL}") == 0
    assert score(out, f"a={FILL}[tolerance=3]") == 0  # 'a' moves to another key; its old shards stay
    assert score(out, f"b={FILL}") == 0  # 'b' is the metric 'a' was: its shards are found again
    table = pd.read_parquet(out / "scores.parquet")
    counts = table.groupby(["metric", "metric_key"]).size()
    entities = sum(len(layout.entities) for layout in small_suite().layouts)
    assert len(counts) == 2 and (counts == 2 * entities).all()
    assert set(table["metric"]) == {"a", "b"}


def test_allow_mixed_adding_a_generator_keeps_the_earlier_one(tmp_path) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert generate(suite, out, generators="first=harness_plugins:BoxPainter") == 0
    assert score(out, FILL) == 0
    stamps = {p: p.stat().st_mtime_ns for p in (out / "images" / "first").glob("*.png")}
    assert generate(suite, out, "--allow-mixed", generators="second=harness_plugins:BoxPainter[skip_every=2]") == 0
    assert score(out, FILL) == 0
    assert main(["report", "--out", str(out)]) == 0
    table = pd.read_parquet(out / "scores.parquet")
    assert table.groupby("generator").size().to_dict() == {"first": len(table) // 2, "second": len(table) // 2}
    summary = pd.read_csv(out / "report" / "summary.csv")
    assert set(summary["generator"]) == {"first", "second"}
    assert {p: p.stat().st_mtime_ns for p in (out / "images" / "first").glob("*.png")} == stamps
    # Resuming one generator of the mixed run needs no flag and drops nothing.
    assert generate(suite, out, generators="first=harness_plugins:BoxPainter") == 0
    assert set(json.loads((out / "manifest.json").read_text())["config"]["generators"]) == {"first", "second"}


def test_allow_mixed_with_other_seeds_must_name_every_generator(tmp_path, capsys) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert generate(suite, out, generators="first=harness_plugins:BoxPainter,second=harness_plugins:BoxPainter[skip_every=2]") == 0
    before = snapshot(out)
    capsys.readouterr()
    assert generate(suite, out, "--allow-mixed", "--base-seed", "5", generators="first=harness_plugins:BoxPainter") == 2
    assert "['second']" in one_line_error(capsys)
    assert snapshot(out) == before


def test_the_regression_gate_fails_closed(tmp_path, capsys) -> None:
    def run(out: Path, count: int, *extra: str) -> int:
        suite = write_small_suite(tmp_path / f"s{count}.jsonl", count=count)
        return main(["run", "--suite", str(suite), "--generators", "p=harness_plugins:BoxPainter", "--metrics", FILL,
                     "--seeds", "2", "--out", str(out), "--no-progress", *extra])

    assert run(tmp_path / "last", 4) == 0
    capsys.readouterr()
    assert run(tmp_path / "other-suite", 3, "--compare", str(tmp_path / "last"), "--fail-on-regression") == 2
    err = one_line_error(capsys)
    assert "nothing comparable to check: run last" in err and "suite hash" in err
    assert (tmp_path / "other-suite" / "report" / "deltas.md").exists()  # the report says why
    assert main(["report", "--out", str(tmp_path / "last"), "--fail-on-regression"]) == 2
    assert "--compare" in one_line_error(capsys)


# 8. integrity ----------------------------------------------------------------------------------
def inpainting_suite(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "suite"
    (folder / "inputs").mkdir(parents=True)
    garden = folder / "inputs" / "garden.png"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(garden)
    layout = Layout("inpaint", "a garden", small_suite().layouts[1].entities, 64, 64, init_image="inputs/garden.png")
    Suite("inpaint", "1", (layout, small_suite().layouts[2])).write(folder / "s.jsonl")
    return folder / "s.jsonl", garden


def test_an_input_image_changed_after_generation_is_not_scored(tmp_path, capsys) -> None:
    suite, garden = inpainting_suite(tmp_path)
    out = tmp_path / "run"
    assert generate(suite, out) == 0
    assert score(out, FILL) == 0
    table = (out / "scores.parquet").read_bytes()
    Image.new("RGB", (64, 64), (0, 0, 255)).save(garden)
    capsys.readouterr()
    assert score(out, f"{FILL}[tolerance=2]") == 2
    err = one_line_error(capsys)
    assert "layout 'inpaint'" in err and "init_image" in err and "changed since generation" in err
    assert (out / "scores.parquet").read_bytes() == table
    assert generate(suite, out) == 0  # remakes the images from the new input
    assert score(out, f"{FILL}[tolerance=2]") == 0


def test_an_image_made_from_an_older_input_is_not_trusted(tmp_path, capsys) -> None:
    suite, garden = inpainting_suite(tmp_path)
    out = tmp_path / "run"
    both = "old=harness_plugins:BoxPainter,new=harness_plugins:BoxPainter[skip_every=3]"
    assert generate(suite, out, generators=both) == 0
    Image.new("RGB", (64, 64), (0, 0, 255)).save(garden)
    assert generate(suite, out, generators="new=harness_plugins:BoxPainter[skip_every=3]") == 0
    capsys.readouterr()
    assert score(out, FILL) == 2
    err = one_line_error(capsys)
    assert "of 'old' was made from another version of input image" in err and "garden.png" in err
    assert generate(suite, out, generators=both) == 0
    assert score(out, FILL) == 0


def test_the_default_worker_label_leaves_out_the_interpreter() -> None:
    def label(text: str) -> str:
        return parse_spec(text, kind="generator").label

    assert label("eligen[worker_python=/opt/a/bin/python]") == label("eligen[worker_python=/b/python]") == "eligen"
    assert label("eligen[lora_scale=0.5,worker_python=/opt/a/bin/python]") == label("eligen[lora_scale=0.5]")


def test_moving_a_worker_environment_does_not_regenerate(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", cli_env()["PYTHONPATH"])
    suite = write_small_suite(tmp_path / "s.jsonl")
    moved = tmp_path / "moved" / "bin" / "python"
    moved.parent.mkdir(parents=True)
    moved.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    moved.chmod(0o755)
    out = tmp_path / "run"
    assert generate(suite, out, generators=f"harness_plugins:BoxPainter[worker_python={sys.executable}]") == 0
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert generate(suite, out, generators=f"harness_plugins:BoxPainter[worker_python={moved}]") == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps
    assert [p.name for p in (out / "images").iterdir()] == ["boxpainter"]
