"""Choosing an executor from the command line, and recording in the run who made what."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone

from eligen_bench.atomic import atomic_write_text
from eligen_bench.config import ExecutorConfig
from eligen_bench.errors import InputError
from eligen_bench.executors.base import Executor
from eligen_bench.executors.shard import Shard
from eligen_bench.rundir import RunDir

log = logging.getLogger(__name__)
EXECUTORS = ("local", "ray")
POLL_SECONDS = 2.0


def make_executor(config: ExecutorConfig) -> Executor:
    """The executor the command asks for; Ray is imported (and connected) only for `ray`,
    before anything is written, so a bad address or a missing Ray loses nothing."""
    if config.name == "local":
        for option in ("address", "workers", "gpus_per_worker"):
            if getattr(config, option) is not None:
                raise InputError("only applies with --executor ray", field="--" + option.replace("_", "-"))
        from eligen_bench.executors.local import LocalExecutor

        return LocalExecutor(device=config.device, threads=config.threads)
    if config.name == "ray":
        from eligen_bench.executors.ray import RayExecutor

        return RayExecutor(address=config.address, workers=1 if config.workers is None else config.workers,
                           gpus_per_worker=config.gpus_per_worker or 0.0, threads=config.threads)
    raise InputError(f"unknown executor {config.name!r}; choose one of {EXECUTORS}", field="--executor")


def record_execution(run: RunDir, command: str, executor: Executor, shard: Shard | None) -> None:
    """Add this command's executor and workers to the manifest, and compile `provenance.json`
    (item -> worker) from the workers' files; call it holding the run's lock."""
    manifest = run.require_manifest()
    workers = {**manifest.get("workers", {}), **{w["id"]: w for w in executor.workers()}}
    manifest["workers"] = workers
    manifest["executions"] = [*manifest.get("executions", []), {
        "command": command, "executor": executor.name, "shard": str(shard) if shard else None,
        "workers": sorted(w["id"] for w in executor.workers()),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }]
    made: dict[str, dict[str, str]] = {"image": {}, "score": {}}
    for record in run.read_provenance():
        made.setdefault(record["kind"], {})[f"{record['generator']}/{record['item']}"] = record["worker"]
    atomic_write_text(run.root / "provenance.json", json.dumps(made, indent=1, sort_keys=True) + "\n")
    manifest["provenance"] = {"file": "provenance.json",
                              "items": {kind: len(items) for kind, items in made.items()}}
    run.write_manifest(manifest)


def wait_for_images(run: RunDir, shard: Shard, timeout: float | None = None) -> None:
    """Wait until every image of the run exists (other shards make theirs); says once what it
    waits for and how to see it. InputError (exit 2) when `timeout` seconds pass first."""
    from eligen_bench.run_records import seed_table
    from eligen_bench.status import missing_images

    said = False
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        manifest = run.require_manifest()
        layout_ids = [layout.id for layout in run.read_suite().layouts]
        seeds = seed_table(manifest, layout_ids, str(run.manifest_path))
        missing = sum(len(missing_images(run, label, seeds, layout_ids)) for label in manifest["config"]["generators"])
        if not missing:
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise InputError(f"{missing} image(s) of the other shards still missing after {timeout:g} s; "
                             f"`eligen-bench status {run.root}` names them", field="--wait-timeout")
        if not said:
            log.warning("shard %s: its images are made; waiting for %d image(s) of the other shards before "
                        "scoring (`eligen-bench status %s` shows which; Ctrl-C stops, nothing is lost%s)",
                        shard, missing, run.root, "" if timeout is not None else "; --wait-timeout sets a limit")
            said = True
        time.sleep(POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS, deadline - time.monotonic())))
