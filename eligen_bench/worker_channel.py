"""The client's end of a worker process: JSON lines in and out, every answer under a deadline.

A worker that dies, prints something that is not a protocol line, or does not answer in time
becomes one `WorkerError` naming the worker; the process is then stopped, never waited on
forever.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from typing import IO, Any

from eligen_bench.errors import InputError, WorkerError
from eligen_bench.layout import short_repr

MAX_LINE = 1 << 20
"""Longest protocol line read (1 MiB); a longer one is garbage."""
_EOF = None


class Channel:
    """A started worker process and the protocol lines it sends."""

    def __init__(self, command: list[str], *, name: str):
        self.name = name
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                            bufsize=1)
        except OSError as exc:
            raise InputError(f"cannot start worker interpreter ({exc})", field="worker_python") from None
        self._lines: queue.Queue[str | None] = queue.Queue()
        # A thread reads, so waiting for a line can time out (a blocking readline cannot).
        assert self.process.stdout is not None
        threading.Thread(target=_pump, args=(self.process.stdout, self._lines), daemon=True).start()

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except OSError as exc:  # the worker is gone (broken pipe)
            raise WorkerError(f"worker {self.name} stopped reading ({exc}); see its stderr") from None

    def receive(self, *, timeout: float, waiting_for: str) -> dict[str, Any]:
        """The next protocol message; WorkerError on exit, garbage or no answer within `timeout` s."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise WorkerError(f"worker {self.name} sent no {waiting_for} within {timeout:g} s; stopped it") from None
        if line is _EOF:
            code = self.process.wait()
            raise WorkerError(f"worker {self.name} exited (code {code}) without answering; see its stderr")
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict):
            self.stop()
            raise WorkerError(f"worker {self.name} sent {short_repr(line.rstrip())} instead of a protocol line "
                              f"(a JSON object) while {waiting_for} was awaited; stopped it")
        return message

    def close(self, *, timeout: float = 30) -> None:
        """Ask the worker to finish; stop it when it does not within `timeout` s."""
        if self.process.poll() is None:
            try:
                self.send({"type": "close"})
                self.process.wait(timeout=timeout)
            except (WorkerError, subprocess.TimeoutExpired):
                self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    try:
        while line := stream.readline(MAX_LINE):
            lines.put(line)
    except (OSError, ValueError):  # the stream closed under us
        pass
    lines.put(_EOF)
