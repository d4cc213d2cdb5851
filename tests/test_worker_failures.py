"""Workers that fail, print garbage or never answer: one line naming the worker, exit 2, no hang."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from eligen_bench.api.generator import Capabilities
from eligen_bench.cli import main

from fixtures import small_suite

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def plugins_importable(monkeypatch) -> None:
    """The worker process imports the test plugins too."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
HELLO = {"protocol": 1, "type": "hello", "identity": {"name": "fake", "settings": {}},
         "capabilities": Capabilities(max_entities=8, resolution=(64, 64)).to_dict()}


def fake_python(tmp_path: Path, name: str, script: str) -> Path:
    """An 'interpreter' that ignores its arguments and runs `script` (a Python program)."""
    program = tmp_path / f"{name}.py"
    program.write_text(script)
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\nexec {sys.executable} {program}\n")
    path.chmod(0o755)
    return path


def generate(tmp_path: Path, python: Path, *options: str) -> list[str]:
    """`generate` through a worker, in a thread that must finish within 60 s; its error lines."""
    small_suite().write(tmp_path / "s.jsonl")
    spec = f"p=harness_plugins:BoxPainter[{','.join([f'worker_python={python}', *options])}]"
    args = ["generate", "--suite", str(tmp_path / "s.jsonl"), "--generators", spec, "--out", str(tmp_path / "run"),
            "--no-progress"]
    result: list[int] = []
    errors = io.StringIO()

    def call() -> None:
        with contextlib.redirect_stderr(errors):
            result.append(main(args))

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the command hung"
    assert result == [2], errors.getvalue()
    lines = [line for line in errors.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), errors.getvalue()
    return lines


def one_error_line(lines: list[str]) -> str:
    return lines[0]


SLEEP = "import time\ntime.sleep(120)\n"


def test_a_worker_that_never_says_hello_times_out(tmp_path) -> None:
    python = fake_python(tmp_path, "silent", SLEEP)
    started = time.monotonic()
    line = one_error_line(generate(tmp_path, python, "worker_start_timeout=1"))
    assert time.monotonic() - started < 60
    assert "worker harness_plugins:BoxPainter sent no hello within 1 s" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("garbage", ["Traceback (most recent call last):", "[1, 2]", "{\"protocol\": ", "\x00\xff"])
def test_a_worker_that_prints_garbage_is_one_error(tmp_path, garbage) -> None:
    python = fake_python(tmp_path, "noisy", f"print({garbage!r}, flush=True)\n{SLEEP}")
    line = one_error_line(generate(tmp_path, python, "worker_start_timeout=30"))
    assert "worker harness_plugins:BoxPainter sent" in line and "instead of a protocol line" in line


@pytest.mark.parametrize("hello", [
    {**HELLO, "identity": "fake"},
    {**HELLO, "capabilities": {"boxes": True}},
    {**HELLO, "capabilities": {**HELLO["capabilities"], "colour": 1}},
    {**HELLO, "protocol": 99},
])
def test_a_bad_hello_is_one_error(tmp_path, hello) -> None:
    python = fake_python(tmp_path, "odd", f"import json\nprint(json.dumps({hello!r}), flush=True)\n{SLEEP}")
    line = one_error_line(generate(tmp_path, python, "worker_start_timeout=30"))
    assert "worker harness_plugins:BoxPainter" in line


def test_a_worker_that_stops_answering_times_out(tmp_path) -> None:
    script = f"import json, sys\nprint(json.dumps({HELLO!r}), flush=True)\nsys.stdin.readline()\n{SLEEP}"
    python = fake_python(tmp_path, "stuck", script)
    line = one_error_line(generate(tmp_path, python, "worker_timeout=2"))
    assert "sent no answer to request 1 within 2 s" in line


def test_a_worker_answering_garbage_or_dying_mid_run(tmp_path) -> None:
    answer = f"import json, sys\nprint(json.dumps({HELLO!r}), flush=True)\nsys.stdin.readline()\n"
    python = fake_python(tmp_path, "liar", answer + "print('42 images made', flush=True)\n" + SLEEP)
    assert "instead of a protocol line" in one_error_line(generate(tmp_path, python, "worker_timeout=30"))
    python = fake_python(tmp_path, "dying", answer + "sys.exit(5)\n")
    assert "exited (code 5) without answering" in one_error_line(generate(tmp_path, python))
    reply = {"type": "result", "id": 1, "images": [{"path": "/etc/hostname", "sha256": "0"}]}
    python = fake_python(tmp_path, "wanderer", answer + f"print(json.dumps({reply!r}), flush=True)\n{SLEEP}")
    assert "named an image outside its output folder" in one_error_line(generate(tmp_path, python, "worker_timeout=30"))


def test_worker_timeouts_are_checked(tmp_path) -> None:
    for option in ("worker_timeout=0", "worker_timeout=-1", "worker_start_timeout=true", "worker_timeout=1e9"):
        line = one_error_line(generate(tmp_path, Path(sys.executable), option))
        assert option.split("=")[0] in line and "seconds" in line
