"""Scale-out without Ray: `--shard i/n` partitions, `status`, provenance, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eligen_bench.cli import main
from eligen_bench.executors.shard import Shard, parse_shard
from eligen_bench.layout import Layout
from eligen_bench.suite import Suite, read_suite

from fixtures import small_suite

TESTS = Path(__file__).parent
PAINTER = "painter=harness_plugins:BoxPainter"
FILL = "harness_plugins:RegionFill"


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def suite_file(path: Path, count: int = 8) -> Path:
    base = small_suite(5)
    layouts = list(base.layouts) + [Layout(f"extra-{i}", f"scene {i}", base.layouts[2].entities, 64, 64)
                                    for i in range(count)]
    Suite("scale", "1", tuple(layouts), "test suite").write(path)
    return path


def run_args(suite: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--suite", str(suite), "--generators", PAINTER, "--metrics", FILL, "--seeds", "2",
            "--shard-size", "3", "--out", str(out), "--no-progress", *extra]


def test_the_partition_is_deterministic_complete_and_disjoint() -> None:
    names = [f"g/layout-{i}_{s}" for i in range(200) for s in range(2)]
    parts = [{n for n in names if Shard(i, 3).owns(n)} for i in range(3)]
    assert set().union(*parts) == set(names)
    assert sum(len(p) for p in parts) == len(names)
    assert all(len(p) > 100 for p in parts)  # a hash spreads them, not a prefix
    assert parts[1] == {n for n in reversed(names) if Shard(1, 3).owns(n)}  # order does not matter


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "0/0"])
def test_a_bad_shard_is_one_line_and_writes_nothing(text, tmp_path, capsys) -> None:
    with pytest.raises(Exception, match="--shard"):
        parse_shard(text)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(run_args(suite_file(tmp_path / "s.jsonl"), out, f"--shard={text}")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--shard" in err, err
    assert not out.exists()


def test_a_bad_ray_address_is_one_line_and_keeps_the_run(tmp_path, capsys) -> None:
    pytest.importorskip("ray")
    suite = suite_file(tmp_path / "s.jsonl", count=0)
    out = tmp_path / "run"
    assert main(run_args(suite, out)) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for address in ("nonsense", "127.0.0.1:1"):
        capsys.readouterr()
        assert main(run_args(suite, out, "--executor", "ray", "--address", address)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--address" in err, err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_missing_ray_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    capsys.readouterr()
    assert main(run_args(suite_file(tmp_path / "s.jsonl"), tmp_path / "run", "--executor", "ray")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[ray]"' in err, err
    assert not (tmp_path / "run").exists()


def test_ls_imports_no_heavy_library() -> None:
    code = ("import sys; from eligen_bench.cli import main; main(['ls']); "
            "print(sorted(m for m in ('ray', 'torch', 'diffusers', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_two_concurrent_shards_equal_one_process_byte_for_byte(tmp_path) -> None:
    suite = suite_file(tmp_path / "s.jsonl")
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert main(run_args(suite, single)) == 0
    command = [sys.executable, "-m", "eligen_bench.cli", *run_args(suite, sharded)]
    procs = [subprocess.Popen(command + ["--shard", f"{i}/2"], env=cli_env(), cwd=tmp_path,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert (sharded / "scores.parquet").read_bytes() == (single / "scores.parquet").read_bytes()
    assert (sharded / "report" / "table.md").exists()  # the last shard to finish wrote it
    manifest = json.loads((sharded / "manifest.json").read_text())
    shards = {e["shard"] for e in manifest["executions"]}
    assert shards == {"0/2", "1/2"}
    made = json.loads((sharded / "provenance.json").read_text())
    # each image was made by exactly one of the two processes, and by the one owning it
    workers = {e["shard"]: set(e["workers"]) for e in manifest["executions"] if e["command"] == "generate"}
    for item, worker in made["image"].items():
        owner = "0/2" if Shard(0, 2).owns(item) else "1/2"
        assert worker in workers[owner], item
    assert len(made["image"]) == 2 * len(read_suite(suite).layouts)


def test_status_names_exactly_what_is_missing(tmp_path, capsys) -> None:
    suite = suite_file(tmp_path / "s.jsonl", count=2)
    out = tmp_path / "run"
    args = ["generate", "--suite", str(suite), "--generators", PAINTER, "--seeds", "2", "--out", str(out),
            "--no-progress", "--shard", "0/2"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["status", str(out), "--all"]) == 1
    printed = capsys.readouterr().out
    stems = {f"{layout.id}_{i}" for layout in read_suite(suite).layouts for i in range(2)}
    line = next(line for line in printed.splitlines() if line.startswith("images painter:"))
    missing = set(line.split("; missing ")[1].split(", "))
    made = {p.stem for p in (out / "images" / "painter").glob("*.png")}
    assert missing and made and not missing & made
    assert all(not Shard(0, 2).owns(f"painter/{stem}") for stem in missing)
    assert missing | made == stems
    assert main([*args[:-1], "1/2"]) == 0
    assert main(["score", "--out", str(out), "--metrics", FILL, "--shard-size", "2", "--no-progress",
                 "--shard", "1/2"]) == 0
    capsys.readouterr()
    assert main(["status", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"scores {FILL} / painter:" in printed and "the missing ones cover" in printed
    assert main(["score", "--out", str(out), "--metrics", FILL, "--shard-size", "2", "--no-progress",
                 "--shard", "0/2"]) == 0
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("complete")


def test_a_lone_shard_says_what_it_waits_for_and_gives_up_at_its_timeout(tmp_path, capsys, caplog) -> None:
    suite = suite_file(tmp_path / "s.jsonl", count=2)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(run_args(suite, out, "--shard", "0/2", "--wait-timeout", "1.5")) == 2
    waits = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert len(waits) == 1 and "of the other shards" in waits[0] and f"eligen-bench status {out}" in waits[0]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--wait-timeout: " in err and "still missing after 1.5 s" in err, err
    assert main(["status", str(out)]) == 1  # its own images are kept for the partner to find
    assert main(run_args(suite, out, "--wait-timeout", "1")) == 2
    assert "--wait-timeout: only applies with --shard" in capsys.readouterr().err
    assert main(run_args(suite, out, "--shard", "0/2", "--wait-timeout", "0")) == 2
    assert "argument --wait-timeout: must be a number in (0, " in capsys.readouterr().err
