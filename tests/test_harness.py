"""The harness end to end with model-free plugins: stages, resume after kill -9, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eligen_bench.cli import main
from eligen_bench.layout import Entity, Layout
from eligen_bench.suite import Suite

from fixtures import small_suite, write_small_suite
from harness_plugins import BoxPainter

TESTS = Path(__file__).parent
PAINTER = "painter=harness_plugins:BoxPainter"
FILL = "harness_plugins:RegionFill"


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def run_args(suite: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--suite", str(suite), "--generators", PAINTER, "--seeds", "2",
            "--out", str(out), "--no-progress", *extra]


def score_table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "scores.parquet")


def test_generate_and_score_write_the_run_folder(tmp_path) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert main(run_args(suite, out)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["suite"]["hash"] == small_suite().hash
    assert manifest["config"]["generators"]["painter"]["settings"]["width"] == 64
    assert set(manifest["seeds"]) == {layout.id for layout in small_suite().layouts}
    assert len(set(manifest["seeds"]["layout-1"])) == 2
    assert "torch" in manifest["packages"] or "pandas" in manifest["packages"]
    assert manifest["code_version"]
    images = sorted(p.name for p in (out / "images" / "painter").glob("*.png"))
    assert len(images) == 2 * len(small_suite().layouts) and "layout-2_1.png" in images


def test_score_rows_carry_identity_and_values(tmp_path) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert main(run_args(suite, out)) == 0
    assert main(["score", "--out", str(out), "--metrics", FILL, "--no-progress"]) == 0
    table = score_table(out)
    entities = sum(len(layout.entities) for layout in small_suite().layouts)
    assert len(table) == 2 * entities
    # The painter fills every region exactly, so a correct harness measures 1.0 everywhere.
    assert (table["value"] == 1.0).all()
    assert table["metric"].unique().tolist() == [FILL]
    assert table["metric_key"].nunique() == 1 and table["image_sha256"].str.len().eq(64).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["metrics"][FILL]["key"] == table["metric_key"].iloc[0]
    # A changed metric option scores into new shards; images are not touched.
    before = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    assert main(["score", "--out", str(out), "--metrics", f"{FILL}[tolerance=3]", "--no-progress"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == before
    assert score_table(out)["metric_key"].nunique() == 2


def test_rerun_makes_nothing_and_mixing_is_refused(tmp_path, capsys) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert main(run_args(suite, out)) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert main(run_args(suite, out)) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before
    manifest = (out / "manifest.json").read_text()
    capsys.readouterr()
    assert main(run_args(suite, out, "--base-seed", "7")) == 2
    assert "different configuration" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == manifest
    assert main(run_args(suite, out, "--base-seed", "7", "--allow-mixed")) == 0


def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    crowded = Suite("crowded", "1", (Layout("many", "a crowd", tuple(
        Entity(f"person {i}", (0.05 * i, 0.1, 0.05 * i + 0.04, 0.5)) for i in range(9)), 64, 64),))
    crowded.write(tmp_path / "crowded.jsonl")
    cases = [
        (run_args(suite, tmp_path / "a")[:4] + ["nope", "--out", str(tmp_path / "a")], "unknown generator 'nope'"),
        (run_args(tmp_path / "crowded.jsonl", tmp_path / "b"), "9 entities, but box-painter supports at most 8"),
        (run_args(tmp_path / "missing.jsonl", tmp_path / "c"), "no such suite file"),
        (run_args(suite, tmp_path / "d", "--seeds", "0"), "--seeds"),
        (["score", "--out", str(tmp_path / "e"), "--metrics", FILL], "no manifest.json"),
        (run_args(suite, tmp_path / "f")[:4] + ["painter=harness_plugins:BoxPainter[colour=1]", "--out", str(tmp_path / "f")], "unknown option"),
    ]
    for args, expected in cases:
        capsys.readouterr()
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
    assert not any((tmp_path / name).exists() for name in "abcdef")


def test_dry_run_shows_plan_and_writes_nothing(tmp_path, capsys) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    assert main(run_args(suite, tmp_path / "run", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "generator painter: 10 images (10 to make)" in out
    assert not (tmp_path / "run").exists()


def test_validate_reports_every_problem(tmp_path, capsys) -> None:
    path = tmp_path / "v.jsonl"
    path.write_text('{"id": "x", "prompt": "p"}\n{"id": "y"}\n{"id": "z", "prompt": "p", "entities": 3}\n')
    assert main(["validate", str(path)]) == 2
    printed = capsys.readouterr().out
    assert "v.jsonl:2" in printed and "v.jsonl:3" in printed and "2 problem(s)" in printed
    good = write_small_suite(tmp_path / "good.jsonl")
    assert main(["validate", str(good)]) == 0
    assert small_suite().hash in capsys.readouterr().out


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(tmp_path) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    command = [sys.executable, "-m", "eligen_bench.cli", "generate", "--suite", str(suite),
               "--generators", "painter=harness_plugins:BoxPainter[delay=0.25]", "--seeds", "2", "--no-progress"]
    score = [sys.executable, "-m", "eligen_bench.cli", "score", "--metrics", FILL, "--no-progress",
             "--shard-size", "3"]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    for out in (reference,):
        subprocess.run(command + ["--out", str(out)], check=True, env=cli_env(), cwd=tmp_path)
        subprocess.run(score + ["--out", str(out)], check=True, env=cli_env(), cwd=tmp_path)

    process = subprocess.Popen(command + ["--out", str(resumed)], env=cli_env(), cwd=tmp_path)
    images = resumed / "images" / "painter"
    deadline = time.time() + 60
    while len(list(images.glob("*.png"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in images.glob("*.png")}
    assert 3 <= len(finished) < 10, finished

    subprocess.run(command + ["--out", str(resumed)], check=True, env=cli_env(), cwd=tmp_path)
    after = {p.name: p.stat().st_mtime_ns for p in images.glob("*.png")}
    assert all(after[name] == mtime for name, mtime in finished.items()), "a finished image was regenerated"
    assert len(after) == 10 and not list(resumed.rglob("*.tmp"))

    # Kill the scoring mid-way too, then finish it.
    process = subprocess.Popen(score + ["--out", str(resumed)], env=cli_env(), cwd=tmp_path)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    subprocess.run(score + ["--out", str(resumed)], check=True, env=cli_env(), cwd=tmp_path)

    pd.testing.assert_frame_equal(score_table(reference), score_table(resumed))
    for name in after:
        assert (reference / "images" / "painter" / name).read_bytes() == (images / name).read_bytes()


def test_written_files_have_ordinary_permissions(tmp_path) -> None:
    import stat

    from eligen_bench.atomic import atomic_write_text

    atomic_write_text(tmp_path / "x.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == 0o666 & ~umask


def test_adapt_notes_say_what_each_method_did_with_the_entities() -> None:
    from eligen_bench.generators.flux.generator import FluxGenerator
    from eligen_bench.generators.stable_diffusion.gligen import GligenGenerator

    masked = small_suite().layouts[-1]
    assert masked.has_masks
    _, flux_notes = FluxGenerator(profile="tiny").adapt(masked)
    assert flux_notes == ["entities not used (method takes the global prompt only)"]
    boxed, gligen_notes = GligenGenerator(profile="tiny").adapt(masked)
    assert gligen_notes == ["masks replaced by their bounding boxes (method takes boxes only)"]
    assert not boxed.has_masks and boxed.entities[0].bbox == masked.entities[0].bbox
    assert BoxPainter().adapt(masked) == (masked, [])


def test_regression_check_fails_only_on_a_worse_comparable_run(tmp_path, capsys) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl", count=4)

    def run(out: Path, painter: str, *extra: str) -> int:
        return main(["run", "--suite", str(suite), "--generators", painter, "--metrics", FILL,
                     "--seeds", "2", "--out", str(out), "--no-progress", *extra])

    assert run(tmp_path / "last", "p=harness_plugins:BoxPainter") == 0
    same = run(tmp_path / "same", "p=harness_plugins:BoxPainter", "--compare", str(tmp_path / "last"),
               "--fail-on-regression")
    assert same == 0
    capsys.readouterr()
    # The label names another configuration (a new checkpoint): shown, gated only when asked.
    worse = run(tmp_path / "worse", "p=harness_plugins:BoxPainter[skip_every=1]", "--compare",
                str(tmp_path / "last"), "--fail-on-regression")
    assert worse == 2
    assert "nothing comparable to check" in capsys.readouterr().err
    worse = run(tmp_path / "worse", "p=harness_plugins:BoxPainter[skip_every=1]", "--compare",
                str(tmp_path / "last"), "--fail-on-regression", "--gate-changed", "p")
    assert worse == 1
    printed = capsys.readouterr().out
    assert f"regression gate: FAIL (1 comparison, 1 regression: {FILL} p -1.00 [-1.00, -1.00] vs last)" in printed
    assert (tmp_path / "worse" / "report" / "deltas.md").exists()


def test_corrupt_shard_is_one_clear_error_and_rescored_once_removed(tmp_path, capsys) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert main(run_args(suite, out)) == 0
    score = ["score", "--out", str(out), "--metrics", FILL, "--no-progress"]
    assert main(score) == 0
    table = score_table(out)
    shard = sorted((out / "scores").rglob("*.parquet"))[0]
    shard.write_bytes(b"not parquet")
    capsys.readouterr()
    assert main(score) == 2
    err = capsys.readouterr().err
    assert "unreadable score shard" in err and shard.name in err and err.count("\n") == 1
    assert score_table(out).equals(table)  # nothing already written was lost
    shard.unlink()
    assert main(score) == 0
    pd.testing.assert_frame_equal(score_table(out), table)


def test_inpainting_inputs_resolve_from_the_suite_folder_and_key_on_content(tmp_path, capsys) -> None:
    import shutil

    from PIL import Image

    from eligen_bench.layout import Layout

    folder = tmp_path / "suite"
    (folder / "inputs").mkdir(parents=True)
    Image.new("RGB", (64, 64), (10, 200, 30)).save(folder / "inputs" / "garden.png")
    base = small_suite().layouts[1]
    layout = Layout("inpaint", "a garden", base.entities, 64, 64, init_image="inputs/garden.png")
    Suite("inpaint", "1", (layout,)).write(folder / "s.jsonl")
    out = tmp_path / "run"
    assert main(run_args(folder / "s.jsonl", out)) == 0
    image = np.asarray(Image.open(out / "images" / "painter" / "inpaint_0.png").convert("RGB"))
    region = base.entities[0].region(64, 64)
    assert (image[~region] == (10, 200, 30)).all()  # the background is the input image

    # Moving the suite with its inputs changes nothing; changing the input's content does.
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert main(run_args(moved / "s.jsonl", out)) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps
    Image.new("RGB", (64, 64), (0, 0, 255)).save(moved / "inputs" / "garden.png")
    assert main(run_args(moved / "s.jsonl", out)) == 0
    image = np.asarray(Image.open(out / "images" / "painter" / "inpaint_0.png").convert("RGB"))
    assert (image[~region] == (0, 0, 255)).all()

    capsys.readouterr()
    (moved / "inputs" / "garden.png").unlink()
    assert main(run_args(moved / "s.jsonl", tmp_path / "missing")) == 2
    err = capsys.readouterr().err
    assert "layout 'inpaint'" in err and "init_image" in err and "garden.png" in err
    assert main(["generate", "--suite", str(folder / "s.jsonl"), "--generators", "gligen", "--profile", "tiny",
                 "--out", str(tmp_path / "gligen")]) == 2
    assert "gligen cannot inpaint" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists() and not (tmp_path / "gligen").exists()


def test_validate_checks_input_images(tmp_path, capsys) -> None:
    from eligen_bench.layout import Layout

    layout = Layout("inpaint", "a garden", small_suite().layouts[1].entities, 64, 64, init_image="nope.png")
    Suite("inpaint", "1", (layout,)).write(tmp_path / "s.jsonl")
    assert main(["validate", str(tmp_path / "s.jsonl")]) == 2
    assert "layout 'inpaint': init_image: cannot read input image" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("--generators=eligen[lora_scale=x]", "lora_scale: must be a number"),
        ("--generators=gligen[steps=2.5]", "steps: must be an integer"),
        ("--generators=regional-flux[cfg_entity_control=1]", "unknown option"),
        ("--metrics=miou[conf=abc]", "conf: must be a number"),
        ("--metrics=vlm_success[judge=3]", "judge: must be a string"),
        ("--metrics=mps[allow_pickle=yes]", "allow_pickle: must be true or false"),
    ],
)
def test_option_types_are_checked_against_the_defaults(option, expected, tmp_path, capsys) -> None:
    args = ["run", "--profile", "tiny", "--limit", "1", "--dry-run", "--out", str(tmp_path / "x"),
            "--generators=flux", "--metrics=clip_global", option]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
