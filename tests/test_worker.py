"""The worker protocol: a generator in another process gives the same images as in-process."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from eligen_bench.cli import main
from eligen_bench.errors import InputError
from eligen_bench.requests import GenerationRequest
from eligen_bench.worker import PROTOCOL, WorkerError, WorkerGenerator, request_to_json, serve

from fixtures import small_suite
from harness_plugins import BoxPainter

TESTS = Path(__file__).parent


@pytest.fixture
def worker_env(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))


def requests_for(identity: dict) -> list[GenerationRequest]:
    return [GenerationRequest(layout, 0, 1000 + i, identity) for i, layout in enumerate(small_suite().layouts)]


def test_worker_images_equal_in_process_images(worker_env) -> None:
    worker = WorkerGenerator(python=sys.executable, target="harness_plugins:BoxPainter", profile="tiny")
    try:
        local = BoxPainter(profile="tiny")
        assert worker.identity()["name"] == "box-painter" and worker.capabilities.max_entities == 8
        assert worker.identity()["settings"] == local.identity()["settings"]
        remote_images = worker.generate(requests_for(worker.identity()))
        local_images = local.generate(requests_for(local.identity()))
        assert len(remote_images) == len(local_images) == 5
        for remote, own in zip(remote_images, local_images, strict=True):
            assert np.array_equal(np.asarray(remote), np.asarray(own))
        # The worker keeps serving after a bad request.
        worker._send({"type": "generate", "id": 99, "out_dir": "/nonexistent", "requests": [{"layout": {}}]})
        assert worker._receive()["type"] == "error"
    finally:
        worker.close()


def test_worker_start_errors_are_clear(worker_env, tmp_path) -> None:
    with pytest.raises(InputError, match="cannot import"):
        WorkerGenerator(python=sys.executable, target="harness_plugins:Missing")
    with pytest.raises(InputError, match="unknown option"):
        WorkerGenerator(python=sys.executable, target="harness_plugins:BoxPainter", colour=1)
    with pytest.raises(InputError, match="cannot start worker"):
        WorkerGenerator(python=str(tmp_path / "no-python"), target="harness_plugins:BoxPainter")
    crashing = tmp_path / "crashing-python"
    crashing.write_text("#!/bin/sh\nexit 3\n")
    crashing.chmod(0o755)
    with pytest.raises(WorkerError, match="exited \\(code 3\\)"):
        WorkerGenerator(python=str(crashing), target="harness_plugins:BoxPainter")


def test_serve_speaks_the_documented_protocol(tmp_path) -> None:
    painter = BoxPainter()
    request = requests_for(painter.identity())[1]
    inbox = io.StringIO("\n".join([
        json.dumps({"type": "generate", "id": 1, "out_dir": str(tmp_path), "requests": [request_to_json(request)]}),
        json.dumps({"type": "close"}),
    ]) + "\n")
    outbox = io.StringIO()
    serve(painter, inbox, outbox)
    hello, result = (json.loads(line) for line in outbox.getvalue().splitlines())
    assert hello == {"protocol": PROTOCOL, "type": "hello", "identity": painter.identity(),
                     "capabilities": painter.capabilities.to_dict(), "entity_text": "prompt"}
    assert result["type"] == "result" and result["id"] == 1
    assert Path(result["images"][0]["path"]).name == f"{request.stem}.png"


def test_cli_runs_a_generator_through_a_worker(tmp_path, worker_env) -> None:
    small_suite().write(tmp_path / "s.jsonl")
    args = ["generate", "--suite", str(tmp_path / "s.jsonl"), "--no-progress", "--seeds", "1"]
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert main(args + ["--generators", "p=harness_plugins:BoxPainter", "--out", str(local)]) == 0
    assert main(args + ["--generators", f"p=harness_plugins:BoxPainter[worker_python={sys.executable}]",
                        "--out", str(remote)]) == 0
    from eligen_bench.rundir import RunDir

    for path in (local / "images" / "p").glob("*.png"):
        twin = remote / "images" / "p" / path.name
        assert np.array_equal(np.asarray(_open(path)), np.asarray(_open(twin)))
        # Same generator, same keys: where it runs is not part of its identity.
        assert RunDir(local).image_key(path) == RunDir(remote).image_key(twin) is not None


def _open(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")
