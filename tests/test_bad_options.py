"""Option values, devices and plugin targets: one line naming the option, exit 2, nothing written."""

from __future__ import annotations

import pytest

from eligen_bench.cli import main

from fixtures import add_generator_entry, write_small_suite

PAINTER = "painter=harness_plugins:BoxPainter"


@pytest.mark.parametrize("option, value", [
    ("--batch-size", "0"), ("--batch-size", "-2"), ("--batch-size", "100000"),
    ("--limit", "-1"), ("--limit", "0"),
    ("--seeds", "0"), ("--seeds", "1000000000"), ("--seeds", "two"),
    ("--base-seed", "-1"), ("--base-seed", str(2**64)),
    ("--shard-size", "0"), ("--metric-batch-size", "0"),
])
def test_every_number_has_a_range(tmp_path, capsys, option, value) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    args = ["run", "--suite", str(suite), "--generators", PAINTER, "--metrics", "harness_plugins:RegionFill",
            "--out", str(out), "--no-progress", option, value]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: eligen-bench run: argument " + option + ": ")
    assert "must be an integer in [" in err
    assert not out.exists()


def test_score_shard_size_is_checked_before_reading_the_run(tmp_path, capsys) -> None:
    assert main(["score", "--out", str(tmp_path / "missing"), "--shard-size", "0"]) == 2
    assert "argument --shard-size" in capsys.readouterr().err


@pytest.mark.parametrize("device, expected", [
    ("cuda:7", "'cuda:7': "), ("foo", "'foo' is not a device"), ("cuda:-1", "'cuda:-1' is not a device"),
    ("cpu:0:1", "'cpu:0:1' is not a device"), ("meta", "'meta' is not a device"),
])
def test_devices_that_do_not_exist(tmp_path, capsys, device, expected) -> None:
    import torch

    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    suite = write_small_suite(tmp_path / "s.jsonl")
    for command in (["generate", "--suite", str(suite), "--generators", PAINTER, "--dry-run"],
                    ["score", "--out", str(tmp_path / "run")]):
        assert main([*command, "--device", device]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"argument --device: {expected}" in err


def test_cpu_is_a_device(tmp_path, capsys) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    assert main(["generate", "--suite", str(suite), "--generators", PAINTER, "--dry-run", "--device", "cpu"]) == 0


@pytest.mark.parametrize("target, expected", [
    ("os:system", "'os:system' is a builtin_function_or_method, not a generator"),
    ("os:path", "'os:path' is a module, not a generator"),
    ("json:JSONDecoder", "is the class JSONDecoder, not a generator"),
    ("eligen_bench.api.generator:Generator", "is abstract"),
    ("harness_plugins:RegionFill", "is the class RegionFill, not a generator"),
    ("no_such_module_here:Thing", "cannot import"),
])
def test_generator_targets_that_are_not_generators(tmp_path, capsys, target, expected) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    assert main(["generate", "--suite", str(suite), "--generators", target, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and expected in err


@pytest.mark.parametrize("target", ["os:system", "harness_plugins:BoxPainter", "eligen_bench.api.metric:Metric"])
def test_metric_targets_that_are_not_metrics(tmp_path, capsys, target) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    assert main(["run", "--suite", str(suite), "--generators", PAINTER, "--metrics", target, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and ("not a metric" in err or "is abstract" in err)


def test_a_registered_entry_that_is_not_a_generator_is_broken(monkeypatch, capsys) -> None:
    add_generator_entry(monkeypatch, "shell", "os:system")
    assert main(["ls"]) == 0
    assert "BROKEN" in capsys.readouterr().out
    assert main(["generate", "--generators", "shell", "--profile", "tiny", "--dry-run"]) == 2
    assert "not a generator" in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [
    ("--bootstrap-resamples", str(10**12)), ("--bootstrap-resamples", "0"),
    ("--layouts-per-bucket", "-1"), ("--layouts-per-bucket", str(10**9)),
])
def test_leaderboard_numbers_have_a_range(tmp_path, capsys, option, value) -> None:
    assert main(["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "site"), option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"argument {option}: must be an integer in [" in err
    assert not (tmp_path / "site").exists()


@pytest.mark.parametrize("command", ["run", "generate", "score"])
@pytest.mark.parametrize("option, value", [
    ("--workers", "-1"), ("--workers", "0"), ("--workers", str(10**6)),
    ("--gpus-per-worker", "nan"), ("--gpus-per-worker", "inf"), ("--gpus-per-worker", "-1"),
    ("--gpus-per-worker", "1e9"), ("--threads", "0"), ("--threads", "-3"),
])
def test_executor_numbers_have_a_range_whatever_the_executor(tmp_path, capsys, command, option, value) -> None:
    out = tmp_path / "run"
    if command == "score":
        args = ["score", "--out", str(out)]
    else:
        args = [command, "--suite", str(write_small_suite(tmp_path / "s.jsonl")), "--generators", PAINTER,
                "--out", str(out), "--no-progress"] + (["--metrics", "harness_plugins:RegionFill"] if command == "run" else [])
    assert main([*args, f"{option}={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"argument {option}: must be " in err and value in err
    assert not out.exists()


@pytest.mark.parametrize("option", ["--workers=2", "--gpus-per-worker=1"])
def test_ray_options_with_the_local_executor_are_refused(tmp_path, capsys, option) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert main(["generate", "--suite", str(suite), "--generators", PAINTER, "--out", str(out), "--no-progress",
                 option]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{option.split('=')[0]}: only applies with --executor ray" in err
    assert not out.exists()


def test_a_lone_surrogate_in_a_suite_is_one_line(tmp_path, capsys) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    lines = suite.read_text().splitlines()
    lines[2] = lines[2].replace('"a scene with 1 things"', '"a scene \\ud800 with"')
    assert "\\ud800" in lines[2]
    suite.write_text("\n".join(lines) + "\n")
    assert main(["validate", str(suite)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "prompt: contains the lone surrogate '\\ud800'" in out[0] and "s.jsonl:3" in out[0]
    assert main(["suite", "show", str(suite)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "s.jsonl:3: layout 'layout-1': prompt: contains the lone surrogate" in err


@pytest.fixture
def unwritable(tmp_path):
    """A folder nothing can be written in: immutable (chattr +i) for root, read-only otherwise."""
    import os
    import subprocess

    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("root here cannot make an immutable folder (chattr +i), so every folder is writable")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_out_in_a_folder_that_cannot_be_written_is_one_line(tmp_path, capsys, unwritable) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    base = ["--suite", str(suite), "--generators", PAINTER, "--no-progress"]
    for args in (["generate", *base, "--out", str(unwritable / "run")],
                 ["run", *base, "--metrics", "harness_plugins:RegionFill", "--out", str(unwritable / "a" / "b")],
                 ["leaderboard", str(tmp_path / "nothing"), "--out", str(unwritable / "site")]):
        capsys.readouterr()
        assert main(args) == 2, args[0]
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--out: cannot write in" in err and "locked" in err, err
    assert not any(unwritable.iterdir())


@pytest.mark.parametrize("args", [
    ["coco", "--min-area", "nan"], ["coco", "--min-area", "2"], ["coco", "--min-objects", "-1"],
    ["coco", "--max-objects", str(10**9)], ["coco", "--min-entities", "x"], ["mig-bench", "--size", "0"],
    ["mig-bench", "--size", "100000"],
])
def test_suite_build_numbers_have_a_range_before_any_download(tmp_path, capsys, args) -> None:
    assert main(["suite", "build", args[0], "--out", str(tmp_path / "s.jsonl"), *args[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"argument {args[1]}: must be " in err
    assert not (tmp_path / "s.jsonl").exists()
