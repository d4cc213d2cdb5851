"""Run folders received from someone else: nothing in them reaches outside the folder, blocks a
command, or gives a traceback. Each case edits a copy of one real (harness) run."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from eligen_bench.cli import main

from fixtures import write_small_suite

PAINTER = "painter=harness_plugins:BoxPainter"
FILL = "harness_plugins:RegionFill"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One complete run (images, scores, report) and its suite file."""
    root = tmp_path_factory.mktemp("made")
    suite = write_small_suite(root / "s.jsonl")
    assert main(["run", "--suite", str(suite), "--generators", PAINTER, "--metrics", FILL,
                 "--out", str(root / "run"), "--no-progress"]) == 0
    return root / "run", suite


@pytest.fixture
def run(made: tuple[Path, Path], tmp_path: Path) -> Path:
    """A copy of the made run, to edit."""
    return Path(shutil.copytree(made[0], tmp_path / "received", symlinks=True))


def edit_manifest(run: Path, change) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    change(manifest)
    (run / "manifest.json").write_text(json.dumps(manifest))  # NaN is written as the JSON token NaN


def edit_scores(run: Path, change) -> None:
    change(pd.read_parquet(run / "scores.parquet")).to_parquet(run / "scores.parquet")


def one_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: "), captured.err
    return captured.err


def commands(run: Path, site: Path, other: Path) -> dict[str, list[str]]:
    return {"leaderboard": ["leaderboard", str(run), "--out", str(site), "--bootstrap-resamples", "20"],
            "status": ["status", str(run)], "report": ["report", "--out", str(run)],
            "compare": ["report", "--out", str(other), "--compare", str(run)]}


def finishes(args: list[str], fifo: Path, seconds: float = 120.0) -> int:
    """`main(args)` in a thread; fails (and unblocks it by opening the FIFO) if it hangs."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(args)), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        with contextlib.suppress(OSError):  # a writer that comes and goes lets the reader see the end
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"{args[0]} blocked on the FIFO {fifo.name}")
    return result[0]


# names that become paths ---------------------------------------------------------------------
@pytest.mark.parametrize("where", ["manifest", "scores"])
def test_a_label_that_climbs_out_is_refused_before_any_path(where, run, tmp_path, capsys) -> None:
    bad = "../../../outside"
    if where == "manifest":
        edit_manifest(run, lambda m: m["config"]["generators"].update({bad: {}}))
    else:
        edit_scores(run, lambda t: t.assign(generator=bad))
    capsys.readouterr()
    assert main(["leaderboard", str(run), "--out", str(tmp_path / "site")]) == 2
    err = one_line(capsys)
    assert ("manifest.json: config.generators" if where == "manifest" else "scores.parquet: generator") in err
    assert "is not a safe name" in err
    assert not (tmp_path / "site").exists() and not (tmp_path.parent / "outside").exists()


# files that are not the run's own -------------------------------------------------------------
def test_only_pngs_inside_the_run_are_copied_into_a_site(run, tmp_path, caplog) -> None:
    private = tmp_path / "private.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(private)
    linked, forged = run / "images" / "painter" / "plain_0.png", run / "images" / "painter" / "layout-1_0.png"
    linked.unlink()
    linked.symlink_to(private)
    forged.write_bytes(b"GIF89a not a png at all")
    inside = run / "images" / "painter" / "layout-2_0.png"
    (run / "images" / "painter" / "masked_0.png").unlink()
    (run / "images" / "painter" / "masked_0.png").symlink_to(inside)  # a link inside the run is fine
    site = tmp_path / "site"
    assert main(["leaderboard", str(run), "--out", str(site), "--bootstrap-resamples", "20"]) == 0
    copied = {p.name for p in (site / "images" / "received" / "painter").iterdir()}
    assert copied == {"layout-2_0.png", "layout-3_0.png", "masked_0.png"}
    assert "resolves outside the run folder" in caplog.text and "is not a PNG that decodes" in caplog.text
    page = (site / "index.html").read_text()
    assert "plain_0.png" not in page and "layout-1_0.png" not in page and page.count('class="missing"') == 2


def test_no_command_blocks_on_a_fifo(run, made, capsys) -> None:
    image = run / "images" / "painter" / "plain_0.png"
    image.unlink()
    os.mkfifo(image)
    assert finishes(["status", str(run)], image) == 1
    assert "missing plain_0" in capsys.readouterr().out
    assert finishes(["generate", "--suite", str(made[1]), "--generators", PAINTER, "--out", str(run),
                     "--no-progress"], image) == 0
    assert image.is_file() and not image.is_symlink()  # made again, in the FIFO's place
    shard = next((run / "scores").rglob("*.parquet"))
    shard.unlink()
    os.mkfifo(shard)
    assert finishes(["score", "--out", str(run), "--metrics", FILL, "--no-progress"], shard) == 0
    assert shard.is_file()  # scored again, in the FIFO's place
    for name in ("scores.parquet", "manifest.json", "suite.jsonl"):
        os.replace(run / name, run / f"{name}.kept")
        os.mkfifo(run / name)
        capsys.readouterr()
        assert finishes(["report", "--out", str(run)], run / name) == 2
        assert f"{name}: is not a regular file (a FIFO)" in one_line(capsys)
        os.replace(run / f"{name}.kept", run / name)


def test_a_linked_sub_folder_is_never_written_through(run, made, tmp_path, capsys) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(run / "images" / "painter")
    (run / "images" / "painter").symlink_to(elsewhere, target_is_directory=True)
    capsys.readouterr()
    assert main(["generate", "--suite", str(made[1]), "--generators", PAINTER, "--out", str(run),
                 "--no-progress"]) == 2
    assert "resolves outside the run folder" in one_line(capsys)
    assert not any(elsewhere.iterdir())


def test_a_suite_file_linking_outside_is_not_read(run, made, capsys) -> None:
    (run / "suite.jsonl").unlink()
    (run / "suite.jsonl").symlink_to(made[1])  # a readable suite, outside the run
    for args in (["status", str(run)], ["report", "--out", str(run)]):
        capsys.readouterr()
        assert main(args) == 2
        assert "suite.jsonl: is a link that resolves outside the run folder" in one_line(capsys)


@pytest.mark.parametrize("name", [".eligen-bench.lock", ".eligen-bench.work", ".eligen-bench.claims"])
def test_linked_lock_files_are_refused(name, run, tmp_path, capsys) -> None:
    target = tmp_path / "made-outside"
    if name.endswith("claims"):
        target.mkdir()
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to(target)
    manifest = (run / "manifest.json").read_bytes()
    capsys.readouterr()
    assert main(["score", "--out", str(run), "--metrics", f"{FILL}[tolerance=1]", "--no-progress"]) == 2
    assert f"{name}: is a symbolic link" in one_line(capsys)
    assert not target.exists() or not any(target.iterdir())
    assert (run / "manifest.json").read_bytes() == manifest  # refused before anything is recorded


# fields of the wrong type ---------------------------------------------------------------------
MANIFEST_CASES = {
    "seeds": lambda m: m.update(seeds="many"),
    "warnings": lambda m: m.update(warnings=5),
    "config.suite": lambda m: m["config"].update(suite="x"),
    "config.generators": lambda m: m["config"].update(generators=["painter"]),
    "config.metrics": lambda m: m["config"].update(metrics=[1]),
    "config.base_seed": lambda m: m["config"].update(base_seed=float("nan")),
    "adapt_notes.painter": lambda m: m.update(adapt_notes={"painter": 3}),
    "seeds.plain[0]": lambda m: m["seeds"].update(plain=["x"]),
    "warnings[0]": lambda m: m.update(warnings=["\x1b[2J a terminal escape"]),
    "created": lambda m: m.update(created="2026\n| INJECTED |"),
    "entity_text": lambda m: m.update(entity_text=["prompt"]),
}


@pytest.mark.parametrize("field", MANIFEST_CASES)
def test_a_manifest_field_of_the_wrong_type_is_one_line_naming_it(field, run, made, tmp_path, capsys) -> None:
    edit_manifest(run, MANIFEST_CASES[field])
    for command, args in commands(run, tmp_path / "site", made[0]).items():
        capsys.readouterr()
        assert main(args) == 2, command
        assert f"received/manifest.json: {field}: " in one_line(capsys), command
    assert not (tmp_path / "site").exists()


def test_missing_seeds_are_named_where_they_are_needed(run, capsys) -> None:
    edit_manifest(run, lambda m: m.pop("seeds"))
    assert main(["status", str(run)]) == 2
    assert "manifest.json: seeds: missing" in one_line(capsys)
    edit_manifest(run, lambda m: m.update(seeds={"plain": [1]}))
    assert main(["status", str(run)]) == 2
    assert "manifest.json: seeds: no seeds for layout 'layout-1'" in one_line(capsys)


SCORE_CASES = {
    "seed_index": lambda t: t.assign(seed_index=t["seed_index"].astype(str)),
    "value": lambda t: t.assign(value=[1e308 if i % 2 else -1e308 for i in range(len(t))]),
    "entity_index": lambda t: t.assign(entity_index=t["entity_index"] + 0.5),
    "metric": lambda t: t.assign(metric=3),
    "layout_id": lambda t: t.assign(layout_id="../x"),
}


@pytest.mark.parametrize("column", SCORE_CASES)
def test_a_score_table_of_the_wrong_types_is_one_line_naming_the_column(column, run, made, tmp_path,
                                                                        capsys) -> None:
    edit_scores(run, SCORE_CASES[column])
    for command in ("leaderboard", "report", "compare"):
        capsys.readouterr()
        assert main(commands(run, tmp_path / "site", made[0])[command]) == 2, command
        assert f"received/scores.parquet: {column}: " in one_line(capsys), command


def test_the_gate_names_the_real_reason(run, made, capsys) -> None:
    """Scores of +-1e308 are refused as such; a metric without valid values is named as that,
    not as 'no generator and metric in common'."""
    base = ["report", "--out", str(made[0]), "--compare", str(run), "--fail-on-regression"]
    edit_scores(run, SCORE_CASES["value"])
    capsys.readouterr()
    assert main(base) == 2
    assert "value: 7 value(s) outside [-1e+15, 1e+15] (e.g. -1e+308)" in one_line(capsys)
    edit_scores(run, lambda t: t.assign(value=float("nan")))
    assert main(base) == 2
    err = one_line(capsys)
    assert "no valid value there" in err and "in common" not in err


# writing whole ----------------------------------------------------------------------------------
def test_a_failed_report_or_site_leaves_no_half_of_one(run, tmp_path, monkeypatch, capsys) -> None:
    from eligen_bench.report import site_page, write

    site = tmp_path / "site"
    assert main(["leaderboard", str(run), "--out", str(site), "--bootstrap-resamples", "20"]) == 0
    before = {p: p.read_bytes() for p in sorted(site.rglob("*")) if p.is_file()}
    report = {p: p.read_bytes() for p in sorted((run / "report").rglob("*")) if p.is_file()}
    calls = []

    def full_disk(path, data) -> None:
        calls.append(path)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data) if isinstance(data, str) else path.write_bytes(data)

    for module in (write, site_page):
        monkeypatch.setattr(module, "atomic_write_text", full_disk)
        monkeypatch.setattr(module, "atomic_write_bytes", full_disk, raising=False)
    for args in (["report", "--out", str(run)],
                 ["leaderboard", str(run), "--out", str(site), "--bootstrap-resamples", "20"]):
        calls.clear()
        capsys.readouterr()
        assert main(args) == 2
        assert "cannot write (No space left on device)" in one_line(capsys)
    assert {p: p.read_bytes() for p in sorted(site.rglob("*")) if p.is_file()} == before
    assert {p: p.read_bytes() for p in sorted((run / "report").rglob("*")) if p.is_file()} == report
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert [p.name for p in run.iterdir() if p.name.startswith(".report")] == []
