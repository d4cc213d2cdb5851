"""`--executor ray` on a local CPU cluster: same tables as the local executor, and a worker
killed mid-run loses only its items in flight, which are made again exactly once."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from eligen_bench.cli import main

from fixtures import small_suite

ray = pytest.importorskip("ray")
TESTS = Path(__file__).parent
PAINTER = "painter=harness_plugins:BoxPainter"
FILL = "harness_plugins:RegionFill"


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    """One two-CPU Ray session for the module (starting one costs seconds); its workers import
    the test plugins from here."""
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def run_args(suite: Path, out: Path, generators: str, *extra: str) -> list[str]:
    return ["run", "--suite", str(suite), "--generators", generators, "--metrics", FILL, "--seeds", "2",
            "--shard-size", "2", "--out", str(out), "--no-progress", *extra]


def test_two_ray_workers_give_the_local_executors_table(tmp_path) -> None:
    suite = small_suite(5)
    suite.write(tmp_path / "s.jsonl")
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert main(run_args(tmp_path / "s.jsonl", local, PAINTER)) == 0
    assert main(run_args(tmp_path / "s.jsonl", distributed, PAINTER, "--executor", "ray", "--workers", "2")) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(distributed / "scores.parquet"),
                                  pd.read_parquet(local / "scores.parquet"))
    for image in (local / "images" / "painter").glob("*.png"):
        assert (distributed / "images" / "painter" / image.name).read_bytes() == image.read_bytes()
    import json

    manifest = json.loads((distributed / "manifest.json").read_text())
    ray_runs = [e for e in manifest["executions"] if e["executor"] == "ray"]
    assert {e["command"] for e in ray_runs} == {"generate", "score"}
    workers = {w for e in ray_runs for w in e["workers"]}
    assert len(workers) >= 2 and all(manifest["workers"][w]["host"] for w in workers)
    made = json.loads((distributed / "provenance.json").read_text())
    assert set(made["image"].values()) <= workers and len(made["image"]) == 2 * len(suite.layouts)


def test_a_worker_killed_mid_run_loses_only_its_items_in_flight(tmp_path) -> None:
    from eligen_bench.executors.ray import actor_prefix

    suite = small_suite(5)
    suite.write(tmp_path / "s.jsonl")
    calls, out = tmp_path / "calls.txt", tmp_path / "run"
    generators = f"painter=harness_plugins:CountingPainter[delay=0.4,calls={calls}]"
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(
        main(run_args(tmp_path / "s.jsonl", out, generators, "--executor", "ray", "--workers", "2"))))
    thread.start()
    deadline = time.time() + 120
    while not calls.exists() or calls.read_text().count("done") < 2:
        assert time.time() < deadline and thread.is_alive(), "generation did not start"
        time.sleep(0.05)
    victim = next(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith(f"{actor_prefix()}generate"))
    ray.kill(ray.get_actor(victim, namespace=next(
        a["namespace"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"] == victim)))
    thread.join(timeout=300)
    assert result == [0]
    lines = calls.read_text().splitlines()
    done = Counter(line.split()[1] for line in lines if line.startswith("done"))
    started = Counter(line.split()[1] for line in lines if line.startswith("start"))
    stems = {f"{layout.id}_{i}" for layout in suite.layouts for i in range(2)}
    assert set(done) == stems and all(done[s] <= started[s] for s in stems)
    # One item was in flight on the killed worker (begun, perhaps finished, not yet written): it
    # was made again, once; every other item was made exactly once.
    redone = [s for s in stems if started[s] > 1]
    assert len(redone) == 1 and started[redone[0]] == 2, started
    table = pd.read_parquet(out / "scores.parquet")
    assert set(zip(table.layout_id, table.seed_index, strict=True)) >= {
        (layout.id, i) for layout in suite.layouts if layout.entities for i in range(2)}


def test_ray_actors_and_the_local_process_make_identical_tiny_images(tmp_path) -> None:
    """GLIGEN and MultiDiffusion on CPU depend on torch's thread count; every executor uses the
    same setting (`--threads`, default 1), so the images are equal byte for byte."""
    import json

    args = ["generate", "--profile", "tiny", "--generators", "gligen,multidiffusion", "--limit", "3", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray"), "--executor", "ray", "--workers", "1"]) == 0
    images = sorted((tmp_path / "local" / "images").rglob("*.png"))
    assert len(images) == 6
    for image in images:
        assert (tmp_path / "ray" / image.relative_to(tmp_path / "local")).read_bytes() == image.read_bytes(), image
    workers = json.loads((tmp_path / "ray" / "manifest.json").read_text())["workers"].values()
    assert {(w["executor"], w["threads"], w["torch_threads"]) for w in workers} == {("ray", 1, 1)}
