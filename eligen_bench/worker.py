"""Run a generator in another Python (its own virtual environment) behind a small protocol.

Methods whose reference code pins incompatible dependencies (MIGC, InstanceDiffusion) run as
`python -m eligen_bench.worker --target module:Class ...` inside their own environment, which
needs only this package (without extras) and the method's code. The core never imports them.

Protocol (version 1): one JSON object per line. The worker's real stdout carries only
protocol lines (anything the method prints goes to stderr).
  worker -> {"protocol": 1, "type": "hello", "identity": {...}, "capabilities": {...}}
  client -> {"type": "generate", "id": n, "out_dir": str, "requests": [request, ...]}
  worker -> {"type": "result", "id": n, "images": [{"path": str, "sha256": str}, ...]}
            or {"type": "error", "id": n, "message": str}
  client -> {"type": "close"}
A request is {"layout": Layout.to_dict(), "seed_index": int, "seed": int, "init_image": str|null,
"init_image_sha256": str|null} (the input image's resolved path and content hash);
images are PNG files the worker writes into out_dir and the client reads back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from eligen_bench.errors import InputError
from eligen_bench.generators.base import Capabilities, Generator
from eligen_bench.hashing import file_sha256
from eligen_bench.layout import Layout
from eligen_bench.requests import GenerationRequest

if TYPE_CHECKING:
    from PIL import Image

PROTOCOL = 1


class WorkerError(RuntimeError):
    """The worker process failed or broke the protocol."""


def request_to_json(request: GenerationRequest) -> dict[str, Any]:
    return {
        "layout": request.layout.to_dict(),
        "seed_index": request.seed_index,
        "seed": request.seed,
        "init_image": request.init_image,
        "init_image_sha256": request.init_image_sha256,
    }


def request_from_json(data: dict[str, Any], identity: dict[str, Any]) -> GenerationRequest:
    return GenerationRequest(
        layout=Layout.from_dict(data["layout"], where="worker request"),
        seed_index=int(data["seed_index"]),
        seed=int(data["seed"]),
        generator=identity,
        init_image=data.get("init_image"),
        init_image_sha256=data.get("init_image_sha256"),
    )


class WorkerGenerator(Generator):
    """Client side: looks like any generator, runs the real one in a subprocess."""

    name = "worker"
    capabilities = Capabilities()

    def __init__(self, python: str, target: str, profile: str = "full", device: str | None = None,
                 **options: Any):
        self.python = python
        self.target = target
        self.options = options
        self.profile = profile
        self.device = device
        self.settings = dict(options)
        self._process: subprocess.Popen[str] | None = None
        self._hello: dict[str, Any] | None = None
        self._next_id = 0
        self._loaded = False
        self._start()
        assert self._hello is not None
        self.name = self._hello["identity"]["name"]
        caps = dict(self._hello["capabilities"])
        caps["resolution"] = tuple(caps["resolution"])
        self.capabilities = Capabilities(**caps)

    def identity(self) -> dict[str, Any]:
        # The worker's own identity: where its interpreter lies is not part of what it makes,
        # so moving the environment does not regenerate a run.
        assert self._hello is not None
        return dict(self._hello["identity"])

    def _start(self) -> None:
        command = [self.python, "-m", "eligen_bench.worker", "--target", self.target,
                   "--profile", self.profile, "--options", json.dumps(self.options)]
        if self.device:
            command += ["--device", self.device]
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
            )
        except OSError as exc:
            raise InputError(f"cannot start worker interpreter ({exc})", field="worker_python") from None
        self._hello = self._receive()
        if self._hello.get("type") == "error":
            self.close()
            raise InputError(self._hello.get("message", "worker failed to start"), where=f"worker {self.target}")
        if self._hello.get("protocol") != PROTOCOL or self._hello.get("type") != "hello":
            self.close()
            raise WorkerError(f"worker speaks protocol {self._hello.get('protocol')!r}, expected {PROTOCOL}")

    def _send(self, message: dict[str, Any]) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(json.dumps(message) + "\n")
        self._process.stdin.flush()

    def _receive(self) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait()
            raise WorkerError(f"worker {self.target} exited (code {code}) without answering; see its stderr")
        return json.loads(line)

    def load(self) -> None:
        """The worker loads its models on the first request."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Image.Image]:
        import tempfile

        from PIL import Image

        self._next_id += 1
        with tempfile.TemporaryDirectory(prefix="eligen-worker-") as out_dir:
            self._send({"type": "generate", "id": self._next_id, "out_dir": out_dir,
                        "requests": [request_to_json(r) for r in requests]})
            reply = self._receive()
            if reply.get("type") == "error":
                raise WorkerError(f"worker {self.target}: {reply.get('message')}")
            if reply.get("id") != self._next_id or len(reply.get("images", [])) != len(requests):
                raise WorkerError(f"worker {self.target} answered out of turn: {reply}")
            images = []
            for entry in reply["images"]:
                if file_sha256(entry["path"]) != entry["sha256"]:
                    raise WorkerError(f"image {entry['path']} changed in transit")
                with Image.open(entry["path"]) as image:
                    images.append(image.convert("RGB"))
            return images

    def close(self) -> None:
        if self._process is None:
            return
        try:
            if self._process.poll() is None:
                self._send({"type": "close"})
                self._process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()
        self._process = None


def serve(generator: Generator, inbox: IO[str], outbox: IO[str]) -> None:
    """Worker side: answer requests until 'close' or end of input."""

    def send(message: dict[str, Any]) -> None:
        outbox.write(json.dumps(message) + "\n")
        outbox.flush()

    identity = generator.identity()
    send({"protocol": PROTOCOL, "type": "hello", "identity": identity,
          "capabilities": generator.capabilities.to_dict()})
    for line in inbox:
        message = json.loads(line)
        if message.get("type") == "close":
            break
        try:
            requests = [request_from_json(r, identity) for r in message["requests"]]
            generator.ensure_loaded()
            images = generator.generate(requests)
            out_dir = Path(message["out_dir"])
            entries = []
            for request, image in zip(requests, images, strict=True):
                path = out_dir / f"{request.stem}.png"
                image.save(path, format="PNG")
                entries.append({"path": str(path), "sha256": file_sha256(path)})
            send({"type": "result", "id": message.get("id"), "images": entries})
        except Exception as exc:  # report to the client, keep serving
            send({"type": "error", "id": message.get("id"), "message": f"{type(exc).__name__}: {exc}"})
    generator.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eligen_bench.worker")
    parser.add_argument("--target", required=True, help="module:Class of the generator")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--device", default=None)
    parser.add_argument("--options", default="{}", help="JSON object of generator options")
    args = parser.parse_args(argv)
    # Protocol lines go to the real stdout; whatever the method prints goes to stderr.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr
    try:
        from eligen_bench.plugins import load_target

        cls = load_target(args.target, kind="generator")
        generator = cls(profile=args.profile, device=args.device, **json.loads(args.options))
    except Exception as exc:
        protocol_out.write(json.dumps({"protocol": PROTOCOL, "type": "error", "message": str(exc)}) + "\n")
        return 2
    serve(generator, sys.stdin, protocol_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
