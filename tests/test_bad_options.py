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
