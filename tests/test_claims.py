"""Per-item claims: two commands on one run folder, not sharded apart, never make one item twice,
and a claim whose holder was killed does not block the survivor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from eligen_bench.claims import CLAIMS_FOLDER
from eligen_bench.cli import main
from eligen_bench.rundir import RunDir

from fixtures import small_suite, write_small_suite

TESTS = Path(__file__).parent
SEEDS = 4


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "eligen_bench.cli", *args, "--no-progress"]


def generate_command(suite: Path, out: Path, generators: str) -> list[str]:
    return cli("generate", "--suite", str(suite), "--generators", generators, "--seeds", str(SEEDS),
               "--out", str(out))


def wait_until(condition, what: str, *processes: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline and all(p.poll() is None for p in processes), what
        time.sleep(0.05)


def made_by(out: Path, kind: str) -> dict[str, Counter[str]]:
    """Per worker (provenance file), how often it made each item of `kind`."""
    counts: dict[str, Counter[str]] = {}
    for path in (out / "provenance").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["kind"] == kind:
                counts.setdefault(path.stem, Counter())[record["item"]] += 1
    return counts


def finish(*processes: subprocess.Popen) -> list[str]:
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * len(processes), errors
    return errors


def overlap(first: subprocess.Popen, out: Path, started, start_second) -> subprocess.Popen:
    """Start the second command while the first is stopped in the middle of its work, and let
    the first go on once the second has made something: the two surely work at once."""
    wait_until(started, "the first command did not start", first)
    first.send_signal(signal.SIGSTOP)
    try:
        second = start_second()
        wait_until(lambda: any((out / "provenance").glob(f"*-{second.pid}.jsonl")),
                   "the second command made nothing", second)
    finally:
        first.send_signal(signal.SIGCONT)
    return second


@pytest.mark.slow
def test_two_generate_commands_on_one_run_make_every_image_once(tmp_path) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    calls, out = tmp_path / "calls.txt", tmp_path / "run"
    command = generate_command(suite, out, f"painter=harness_plugins:CountingPainter[delay=0.3,calls={calls}]")
    first = subprocess.Popen(command, env=cli_env(), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    second = overlap(first, out, lambda: calls.exists() and "start" in calls.read_text(),
                     lambda: subprocess.Popen(command, env=cli_env(), cwd=tmp_path, stderr=subprocess.PIPE, text=True))
    errors = finish(first, second)
    stems = {f"{layout.id}_{i}" for layout in small_suite().layouts for i in range(SEEDS)}
    started = Counter(line.split()[1] for line in calls.read_text().splitlines() if line.startswith("start"))
    assert set(started) == stems and set(started.values()) == {1}, started
    workers = made_by(out, "image")
    assert len(workers) == 2 and all(workers.values()), errors
    assert sum(workers.values(), Counter()) == Counter(stems)
    run = RunDir(out)
    assert all(run.image_key(run.image_path("painter", stem)) for stem in stems)
    assert not (out / CLAIMS_FOLDER).exists()  # the last command to finish removed the claim files


@pytest.mark.slow
def test_two_score_commands_on_one_run_score_every_shard_once(tmp_path) -> None:
    suite = write_small_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert main(["generate", "--suite", str(suite), "--generators", "painter=harness_plugins:BoxPainter",
                 "--seeds", str(SEEDS), "--out", str(out), "--no-progress"]) == 0
    command = cli("score", "--out", str(out), "--metrics", "fill=harness_plugins:RegionFill[delay=0.15]",
                  "--shard-size", "2")
    first = subprocess.Popen(command, env=cli_env(), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    second = overlap(first, out, lambda: made_by(out, "score"),
                     lambda: subprocess.Popen(command, env=cli_env(), cwd=tmp_path, stderr=subprocess.PIPE, text=True))
    errors = finish(first, second)
    workers = made_by(out, "score")
    shards = sum(workers.values(), Counter())
    images = len(small_suite().layouts) * SEEDS
    assert len(shards) == images // 2 and set(shards.values()) == {1}, shards
    assert len(workers) == 2 and all(workers.values()), errors
    assert len(list((out / "scores").rglob("*.parquet"))) == images // 2
    assert not (out / CLAIMS_FOLDER).exists()


@pytest.mark.slow
def test_a_claim_held_by_a_killed_process_does_not_block(tmp_path) -> None:
    """A process holds one image's claim and is killed with -9; the command waiting for that
    image (after making all others) then makes it."""
    suite = write_small_suite(tmp_path / "s.jsonl")
    calls, out = tmp_path / "calls.txt", tmp_path / "run"
    claim = "image:painter/layout-2_1"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path\n"
         "from eligen_bench.claims import claimed\nfrom eligen_bench.rundir import RunDir\n"
         "run = RunDir(Path(sys.argv[1]))\n"
         "with run.working(), claimed(run.root, sys.argv[2], wait=False) as held:\n"
         "    print('held' if held else 'free', flush=True); time.sleep(120)", str(out), claim],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # The folder holds only the run's own lock and claim files, so it may become the run.
        command = generate_command(suite, out, f"painter=harness_plugins:CountingPainter[calls={calls}]")
        survivor = subprocess.Popen(command, env=cli_env(), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        assert survivor.stderr is not None
        said: list[str] = []
        while not said or "waiting for them" not in said[-1]:
            said.append(survivor.stderr.readline())
            assert said[-1], "".join(said)  # it ended without waiting for the claim
        assert "1 item(s) are being made by another process" in said[-1], said[-1]
        time.sleep(0.5)
        assert survivor.poll() is None  # still waiting for the claim
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        rest = survivor.communicate(timeout=120)[1]
        assert survivor.returncode == 0, rest
    finally:
        holder.kill()
        holder.wait()
    assert "".join(said + [rest]).count("waiting for them") == 1  # said once
    started = Counter(line.split()[1] for line in calls.read_text().splitlines() if line.startswith("start"))
    stems = {f"{layout.id}_{i}" for layout in small_suite().layouts for i in range(SEEDS)}
    assert set(started) == stems and set(started.values()) == {1}
    run = RunDir(out)
    assert run.image_key(run.image_path("painter", "layout-2_1"))
    assert not (out / CLAIMS_FOLDER).exists()


def test_a_folder_holding_only_the_runs_own_files_is_still_a_run_folder(tmp_path) -> None:
    """Lock, claim and temporary files (another command may be writing the first manifest) are
    the run's own; anything else makes the folder someone else's, and clean-up leaves it."""
    from eligen_bench.claims import claim_path
    from eligen_bench.errors import InputError

    out = tmp_path / "run"
    run = RunDir(out)
    claim = claim_path(out, "image:painter/plain_0")
    claim.parent.mkdir(parents=True)
    claim.touch()
    (out / ".eligen-bench.work").touch()
    (out / ".manifest.json.abcd1234.eligen.tmp").touch()
    run.check_owned()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt"):
        run.check_owned()
    run.remove_stale_temporaries()
    assert not claim.parent.exists() and (out / "notes.txt").read_text() == "mine"
