"""`--executor ray`: work items spread over Ray actors, one per model replica and device.

Each actor loads its generator or metric once and is handed batches from the driver's queue,
at most `DEPTH` at a time, so a fast worker takes more and a slow one fewer. An actor that dies
(killed, node preempted) loses only the items it held; they go back to the queue and a new
actor takes its place. Items are the same idempotent ones the local executor makes, written
atomically into a run folder every node sees (see the README's Scale-out section).

Ray is imported here only, and only when this executor is chosen.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eligen_bench.api.generator import Generator
from eligen_bench.api.metric import Metric, ScoreItem
from eligen_bench.arguments import MAX_GPUS_PER_WORKER, MAX_WORKERS
from eligen_bench.errors import InputError
from eligen_bench.requests import GenerationRequest
from eligen_bench.rundir import RunDir
from eligen_bench.runtime import DEFAULT_THREADS

log = logging.getLogger(__name__)
DEPTH = 2
"""Items queued per actor: one running, one waiting, so an actor never idles on a round trip."""
MAX_RESTARTS = 8
"""Actors replaced per stage before giving up (a cluster losing workers faster is broken)."""
PROBE_SECONDS = 5.0
_ACTOR: Any = None


def actor_prefix() -> str:
    """Names of this process's actors start with it (`ray.util.list_named_actors`)."""
    return f"eligen-bench-{os.getpid()}-"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError("needs Ray, which is not installed: pip install -e \".[ray]\"",
                         field="--executor") from None
    return ray


def _actor_class(ray: Any) -> Any:
    """The actor class, made on first use (defining it needs ray)."""
    global _ACTOR
    if _ACTOR is None:
        _ACTOR = ray.remote(max_restarts=0)(ItemWorker)
    return _ACTOR


def check_reachable(address: str) -> None:
    """`host:port` (or `ray://host:port`, or `auto`) that answers; Ray itself would wait for
    minutes on a wrong one before failing."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"must be host:port, ray://host:port or auto, got {address!r}", field="--address")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        raise InputError(f"no Ray cluster answers at {address!r} ({exc.strerror or type(exc).__name__})",
                         field="--address") from None


class ItemWorker:
    """Runs in a Ray actor: one generator or metric, loaded once, many work items."""

    def __init__(self, run_root: str, plugin: Generator | Metric, threads: int) -> None:
        import ray

        from eligen_bench.rundir import worker_record

        self.run = RunDir(Path(run_root))
        self.plugin = plugin
        gpus = ray.get_gpu_ids()
        # Ray sets OMP_NUM_THREADS to the actor's CPUs; the items use `threads`, as any executor's do.
        self.worker = worker_record("ray", f"gpu {','.join(str(g) for g in gpus)}" if gpus else plugin.device,
                                    threads)
        self.worker["node"] = ray.get_runtime_context().get_node_id()

    # Each call returns this worker's record, so the driver learns who made what without
    # asking an actor that may be gone by then, and the parts of its task it skipped because
    # another process holds their claims (`eligen_bench.claims`), for the driver to hand out
    # again, with `wait`, once every other task is done.
    def generate(self, label: str, batch: Sequence[GenerationRequest],
                 wait: bool) -> tuple[dict[str, Any], list[list[GenerationRequest]]]:
        from eligen_bench.stages.generate import make_images

        assert isinstance(self.plugin, Generator)
        skipped = make_images(self.run, label, self.plugin, batch, self.worker, wait=wait)
        return self.worker, [[r] for r in skipped]

    def score(self, label: str, path: Path, chunk: Sequence[ScoreItem],
              wait: bool) -> tuple[dict[str, Any], list[tuple[Path, list[ScoreItem]]]]:
        from eligen_bench.stages.score import score_shard

        assert isinstance(self.plugin, Metric)
        done = score_shard(self.run, label, self.plugin, path, chunk, self.worker, wait=wait)
        return self.worker, [] if done else [(path, list(chunk))]


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, workers: int = 1, gpus_per_worker: float = 0,
                 threads: int = DEFAULT_THREADS) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise InputError(f"must be an integer in [1, {MAX_WORKERS}], got {workers}", field="--workers")
        if not 0 <= gpus_per_worker <= MAX_GPUS_PER_WORKER:  # NaN fails too
            raise InputError(f"must be a number in [0, {MAX_GPUS_PER_WORKER:g}], got {gpus_per_worker}",
                             field="--gpus-per-worker")
        self.ray = _import_ray()
        self.workers_wanted = workers
        self.gpus = gpus_per_worker
        self.threads = threads
        self._connect(address)
        self._check_resources()
        self._seen: dict[str, dict[str, Any]] = {}
        self._count = 0

    def _connect(self, address: str | None) -> None:
        if self.ray.is_initialized():
            return  # a session the caller started (a test, a notebook) is used as it is
        if address is not None:
            check_reachable(address)
        try:
            self.ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot connect to a Ray cluster at {address!r} ({first})",
                             field="--address") from None

    def _check_resources(self) -> None:
        """Refuse what the cluster cannot place (the actors would wait for ever)."""
        total = self.ray.cluster_resources()
        resource, each = ("GPU", self.gpus) if self.gpus else ("CPU", 1)
        if total.get(resource, 0) < each * self.workers_wanted:
            raise InputError(f"{self.workers_wanted} worker(s) x {each} {resource} do not fit the Ray cluster "
                             f"({total.get(resource, 0):g} {resource})", field="--workers")

    # stages --------------------------------------------------------------------------
    def generate(self, run: RunDir, label: str, generator: Generator,
                 batches: Sequence[Sequence[GenerationRequest]], bar: Any) -> None:
        self._dispatch(run, generator, f"generate-{label}", list(batches),
                       lambda actor, batch, wait: actor.generate.remote(label, list(batch), wait), len, bar)

    def score(self, run: RunDir, label: str, metric: Metric,
              shards: Sequence[tuple[Path, Sequence[ScoreItem]]], bar: Any) -> None:
        self._dispatch(run, metric, f"score-{label}", list(shards),
                       lambda actor, shard, wait: actor.score.remote(label, shard[0], list(shard[1]), wait),
                       lambda shard: len(shard[1]), bar)

    def workers(self) -> list[dict[str, Any]]:
        return list(self._seen.values())

    def close(self) -> None:
        return None  # actors end with each stage; a session this process started ends with it

    # the queue -------------------------------------------------------------------------
    def _start(self, run: RunDir, plugin: Generator | Metric, stage: str) -> Any:
        self._count += 1
        actor = _actor_class(self.ray).options(
            name=f"{actor_prefix()}{stage}-{self._count}", num_cpus=0 if self.gpus else 1,
            num_gpus=self.gpus).remote(str(run.root.resolve()), plugin, self.threads)
        return actor

    def _dispatch(self, run: RunDir, plugin: Generator | Metric, stage: str, tasks: list[Any],
                  submit: Callable[[Any, Any, bool], Any], size: Callable[[Any], int], bar: Any) -> None:
        """Keep every actor fed from one queue of (task, wait); what actors skip as claimed by
        another process is queued again, with wait, once nothing else is left."""
        queue = deque((task, False) for task in tasks)
        later: list[Any] = []
        actors = [self._start(run, plugin, stage) for _ in range(min(self.workers_wanted, len(tasks)))]
        load = {id(actor): 0 for actor in actors}
        inflight: dict[Any, tuple[Any, tuple[Any, bool]]] = {}
        restarts = 0
        try:
            while queue or inflight or later:
                if not queue and not inflight:
                    log.warning("%s: %d item(s) are being made by another process; waiting for them "
                                "(Ctrl-C to stop)", stage, len(later))
                    queue.extend((task, True) for task in later)
                    later.clear()
                for actor in actors:
                    while queue and load[id(actor)] < DEPTH:
                        entry = queue.popleft()
                        inflight[submit(actor, *entry)] = (actor, entry)
                        load[id(actor)] += 1
                ready, _ = self.ray.wait(list(inflight), num_returns=1)
                for future in ready:
                    actor, entry = inflight.pop(future)
                    load[id(actor)] -= 1
                    try:
                        worker, skipped = self.ray.get(future)
                    except self.ray.exceptions.RayActorError:
                        restarts += 1
                        if restarts > MAX_RESTARTS * DEPTH:
                            raise RuntimeError(f"{stage}: too many Ray workers lost") from None
                        queue.appendleft(entry)  # lost in flight: done again, by another actor
                        index = next((i for i, a in enumerate(actors) if a is actor), None)
                        if index is not None:  # the first of its lost items replaces it
                            log.warning("%s: a Ray worker was lost; its items go back to the queue", stage)
                            actors[index] = replacement = self._start(run, plugin, stage)
                            load[id(replacement)] = 0
                        continue
                    later += skipped
                    bar.update(size(entry[0]) - sum(map(size, skipped)))
                    self._seen[worker["id"]] = worker
        finally:
            for actor in actors:
                self.ray.kill(actor)
