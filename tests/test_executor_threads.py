"""One torch thread setting for every executor, and what each worker ran with in the provenance
(tiny profile: GLIGEN's CPU images change with the thread count, 3 of 8 at 1 vs 2 threads)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from eligen_bench.cli import main

torch = pytest.importorskip("torch")


def tiny_generate(out: Path, *extra: str) -> dict:
    assert main(["generate", "--profile", "tiny", "--generators", "gligen", "--limit", "2", "--out", str(out),
                 "--no-progress", *extra]) == 0
    return json.loads((out / "manifest.json").read_text())


def test_each_worker_records_threads_device_dtype_and_flags(tmp_path) -> None:
    manifest = tiny_generate(tmp_path / "run")
    (worker,) = manifest["workers"].values()
    assert worker["threads"] == worker["torch_threads"] == 1  # the default, whatever the machine
    assert worker["deterministic_algorithms"] is False and worker["cudnn_benchmark"] is False
    assert {"cudnn_deterministic", "tf32_matmul", "tf32_cudnn", "interop_threads"} <= set(worker)
    assert worker["default_dtype"] == "float32" and worker["torch"] == torch.__version__
    assert worker["generators"] == {"gligen": {"device": "cpu", "dtype": "float32"}}


def test_the_thread_setting_applies_to_the_items_only(tmp_path) -> None:
    before = torch.get_num_threads()
    environment = os.environ.get("OMP_NUM_THREADS")
    manifest = tiny_generate(tmp_path / "run", "--threads", "2")
    (worker,) = manifest["workers"].values()
    assert worker["threads"] == worker["torch_threads"] == 2
    assert torch.get_num_threads() == before and os.environ.get("OMP_NUM_THREADS") == environment
