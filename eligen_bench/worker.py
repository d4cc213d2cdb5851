"""Run a generator in another Python (its own virtual environment) behind a small protocol.

Methods whose reference code pins incompatible dependencies (MIGC, InstanceDiffusion) run as
`python -m eligen_bench.worker --target module:Class ...` inside their own environment, which
needs only this package (without extras) and the method's code. The core never imports them.

Protocol (version 1): one JSON object per line. The worker's real stdout carries only
protocol lines (anything the method prints goes to stderr).
  worker -> {"protocol": 1, "type": "hello", "identity": {...}, "capabilities": {...},
             "entity_text": "prompt"|"description" (absent: "prompt")}
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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from eligen_bench.api.generator import ENTITY_TEXTS, Capabilities, Generator
from eligen_bench.errors import InputError, WorkerError
from eligen_bench.hashing import file_sha256
from eligen_bench.layout import Layout, short_repr
from eligen_bench.registry import load_target
from eligen_bench.requests import GenerationRequest
from eligen_bench.worker_channel import Channel

if TYPE_CHECKING:
    from PIL import Image

PROTOCOL = 1


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


START_TIMEOUT = 300.0
"""Seconds a worker may take to start and say hello (`worker_start_timeout=`)."""
TIMEOUT = 7200.0
"""Seconds a worker may take to answer one batch, loading its models included (`worker_timeout=`)."""


class WorkerGenerator(Generator):
    """Client side: looks like any generator, runs the real one in a subprocess."""

    name = "worker"
    capabilities = Capabilities()

    def __init__(self, python: str, target: str, profile: str = "full", device: str | None = None,
                 start_timeout: float = START_TIMEOUT, timeout: float = TIMEOUT, **options: Any):
        self.python = python
        self.target = target
        self.options = options
        self.profile = profile
        self.device = device
        self.timeout = timeout
        self.settings = dict(options)
        self.load_notes: list[str] = []  # what the worker's own loading finds stays in its process
        self._next_id = 0
        self._loaded = False
        self._channel: Channel | None = None
        hello = self._start(start_timeout)
        try:
            self._identity, self.capabilities = _read_hello(hello, self.target)
            # The worker's generator chose its entity text; the client adapts layouts with it.
            self.text_choice = _hello_entity_text(hello, self.target)
        except WorkerError:
            self._stop()
            raise
        self.name = self._identity["name"]

    def identity(self) -> dict[str, Any]:
        # The worker's own identity: where its interpreter lies is not part of what it makes,
        # so moving the environment does not regenerate a run.
        return dict(self._identity)

    def _start(self, timeout: float) -> dict[str, Any]:
        command = [self.python, "-m", "eligen_bench.worker", "--target", self.target,
                   "--profile", self.profile, "--options", json.dumps(self.options)]
        if self.device:
            command += ["--device", self.device]
        self._channel = Channel(command, name=self.target)
        try:
            hello = self._receive(timeout=timeout, waiting_for="hello")
        except WorkerError:
            self._stop()
            raise
        if hello.get("type") == "error":
            self.close()
            raise InputError(str(hello.get("message", "worker failed to start"))[:2000], where=f"worker {self.target}")
        if hello.get("protocol") != PROTOCOL or hello.get("type") != "hello":
            self._stop()
            raise WorkerError(f"worker {self.target} speaks protocol {short_repr(hello.get('protocol'))}, "
                              f"expected {PROTOCOL}")
        return hello

    def _send(self, message: dict[str, Any]) -> None:
        assert self._channel is not None
        self._channel.send(message)

    def _receive(self, *, timeout: float | None = None, waiting_for: str = "answer") -> dict[str, Any]:
        assert self._channel is not None
        return self._channel.receive(timeout=self.timeout if timeout is None else timeout, waiting_for=waiting_for)

    def load(self) -> None:
        """The worker loads its models on the first request."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Image.Image]:
        import tempfile

        self._next_id += 1
        with tempfile.TemporaryDirectory(prefix="eligen-worker-") as out_dir:
            self._send({"type": "generate", "id": self._next_id, "out_dir": out_dir,
                        "requests": [request_to_json(r) for r in requests]})
            reply = self._receive(waiting_for=f"answer to request {self._next_id}")
            if reply.get("type") == "error":
                raise WorkerError(f"worker {self.target}: {str(reply.get('message'))[:2000]}")
            try:
                return _read_images(reply, self._next_id, len(requests), Path(out_dir), self.target)
            except WorkerError:
                self._stop()
                raise

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _stop(self) -> None:
        """End a worker that broke the protocol: it cannot be trusted to read 'close'."""
        if self._channel is not None:
            self._channel.stop()
            self._channel = None


def _read_hello(hello: dict[str, Any], target: str) -> tuple[dict[str, Any], Capabilities]:
    """The worker's identity and capabilities; WorkerError when the hello does not hold them."""
    identity, caps = hello.get("identity"), hello.get("capabilities")
    try:
        if not isinstance(identity, dict) or not isinstance(identity.get("name"), str):
            raise ValueError("identity must be an object with a name")
        if not isinstance(caps, dict):
            raise ValueError("capabilities must be an object")
        caps = dict(caps)
        caps["resolution"] = tuple(caps["resolution"])
        return identity, Capabilities(**caps)
    except (KeyError, TypeError, ValueError) as exc:
        raise WorkerError(f"worker {target} sent a bad hello ({exc})") from None


def _hello_entity_text(hello: dict[str, Any], target: str) -> str:
    text = hello.get("entity_text", "prompt")
    if text not in ENTITY_TEXTS:
        raise WorkerError(f"worker {target} sent a bad hello (entity_text {short_repr(text)})")
    return str(text)


def _read_images(reply: dict[str, Any], number: int, count: int, out_dir: Path, target: str) -> list[Image.Image]:
    """The images a result names, checked: as many as asked, inside out_dir, intact."""
    from PIL import Image

    entries = reply.get("images")
    if reply.get("type") != "result" or reply.get("id") != number or not isinstance(entries, list) \
            or len(entries) != count:
        raise WorkerError(f"worker {target} answered out of turn: {short_repr(reply, 200)}")
    images = []
    for entry in entries:
        path = Path(entry["path"]) if isinstance(entry, dict) and isinstance(entry.get("path"), str) else None
        if path is None or path.resolve().parent != out_dir.resolve() or not path.is_file():
            raise WorkerError(f"worker {target} named an image outside its output folder: {short_repr(entry)}")
        if file_sha256(path) != entry.get("sha256"):
            raise WorkerError(f"image {path} changed in transit")
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as exc:
            raise WorkerError(f"worker {target} wrote an unreadable image {path.name} ({exc})") from None
    return images


def serve(generator: Generator, inbox: IO[str], outbox: IO[str]) -> None:
    """Worker side: answer requests until 'close' or end of input."""

    def send(message: dict[str, Any]) -> None:
        outbox.write(json.dumps(message) + "\n")
        outbox.flush()

    identity = generator.identity()
    send({"protocol": PROTOCOL, "type": "hello", "identity": identity,
          "capabilities": generator.capabilities.to_dict(), "entity_text": generator.text_choice})
    for line in inbox:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict):
            send({"type": "error", "id": None, "message": f"not a protocol line: {short_repr(line.rstrip())}"})
            continue
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

        cls = load_target(args.target, kind="generator")
        generator = cls(profile=args.profile, device=args.device, **json.loads(args.options))
    except Exception as exc:
        protocol_out.write(json.dumps({"protocol": PROTOCOL, "type": "error", "message": str(exc)}) + "\n")
        return 2
    serve(generator, sys.stdin, protocol_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
