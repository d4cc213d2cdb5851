"""The results folder of one run: manifest, images, score shards, the compiled score table.

```
<run>/manifest.json            config, suite hash, seeds, versions, model ids
<run>/suite.jsonl              the layouts as run
<run>/images/<generator>/<layout>_<seed index>.png   (PNG text chunk holds the request key)
<run>/scores/<metric key>/<generator>/<shard>.parquet
<run>/scores.parquet           all rows of the run's current metrics
<run>/report/                  tables, plots, leaderboard
<run>/provenance/<worker>.jsonl  where each image and score shard was made, one line per item
<run>/.eligen-bench.lock       held while a command reads or writes the manifest (see `RunDir.locked`)
<run>/.eligen-bench.work       held shared by every process making items (see `RunDir.working`)
<run>/.eligen-bench.claims/    one lock file per item being made (see `eligen_bench.claims`)
```
A stage is done for an item when its file exists and its recorded key matches; every write
is atomic, so a run killed at any moment resumes without a half-written file.

The folder belongs to the run: a command writes into a folder only when it does not exist, is
empty, or holds a run manifest, and cleans up only its own temporaries in its own sub-folders.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eligen_bench import __version__
from eligen_bench.atomic import (
    atomic_write,
    atomic_write_text,
    is_temporary,
    remove_stale_temporaries,
)
from eligen_bench.claims import CLAIMS_FOLDER, remove_claim_files
from eligen_bench.errors import InputError
from eligen_bench.hashing import content_hash
from eligen_bench.run_files import (
    check_control,
    is_run_file,
    open_control,
    open_run_file,
    resolved_inside,
)

if TYPE_CHECKING:
    from PIL import Image

    from eligen_bench.suite import Suite

log = logging.getLogger(__name__)
KEY_CHUNK = "eligen_bench_key"
INPUT_CHUNK = "eligen_bench_input_sha256"
"""PNG text chunk with the content hash of the input image an inpainting image was made from."""
LOCK_NAME = ".eligen-bench.lock"
WORK_LOCK_NAME = ".eligen-bench.work"
OWN_MARKERS = (LOCK_NAME, WORK_LOCK_NAME, CLAIMS_FOLDER)
"""The run's own lock files: a folder holding only these (and temporaries) is still empty to `check_owned`."""
OWN_FOLDERS = ("images", "scores", "report", "provenance")
"""Sub-folders a run writes; temporaries are cleaned up there and at the top level only."""
SHARED_CONFIG = ("suite", "seeds", "base_seed", "seed_list", "profile")
"""Configuration every generator of one run folder shares (its images are compared on them)."""
PROVENANCE_FIELDS = ("kind", "generator", "item", "worker")
"""The fields of one provenance line (`RunDir.record_made`)."""
PACKAGES = (
    "torch", "torchvision", "diffusers", "transformers", "open_clip_torch", "ultralytics",
    "pycocotools", "pandas", "numpy", "pillow", "peft", "vllm",
)


@dataclass(frozen=True)
class RunDir:
    """Paths and atomic I/O of one results folder."""

    root: Path
    """The run's folder."""

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def suite_path(self) -> Path:
        return self.root / "suite.jsonl"

    @property
    def scores_path(self) -> Path:
        return self.root / "scores.parquet"

    def image_path(self, generator: str, stem: str) -> Path:
        return self.root / "images" / generator / f"{stem}.png"

    def shard_path(self, metric_key: str, generator: str, shard: str) -> Path:
        return self.root / "scores" / metric_key / generator / f"{shard}.parquet"

    def holds(self, path: Path) -> bool:
        """Whether the run holds `path` as a regular file inside it (a FIFO, a device or a link
        out of the run counts as absent: it is never opened, and making the item replaces it)."""
        return is_run_file(self.root, path)

    def read_suite(self) -> Suite:
        """The run's `suite.jsonl`, read only when it is a regular file inside the run."""
        from eligen_bench.suite import read_suite

        open_run_file(self.root, self.suite_path).close()  # InputError naming it unless safe to read
        return read_suite(self.suite_path)

    def check_inside(self, path: Path) -> None:
        """Refuse to write `path` when its folder resolves outside the run (a linked sub-folder)."""
        if resolved_inside(self.root, path.parent) is None:
            raise InputError("resolves outside the run folder (a linked folder); nothing is written there",
                             where=str(path.parent))

    # manifest -----------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any] | None:
        """The checked manifest (`run_records.check_manifest`), or None when there is none."""
        from eligen_bench.run_records import read_manifest

        return read_manifest(self.root)

    def require_manifest(self) -> dict[str, Any]:
        manifest = self.read_manifest()
        if manifest is None:
            raise InputError("no manifest.json: not a run folder (run `eligen-bench generate` first)", where=str(self.root))
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    def check_owned(self) -> None:
        """Refuse a folder that exists, is not empty and holds no run manifest: it is not ours."""
        if not self.root.exists():
            return
        if not self.root.is_dir():
            raise InputError("exists and is not a folder; choose another --out", where=str(self.root))
        if self.manifest_path.exists():
            return
        # The first manifest's temporary counts as ours: another process may be writing it now.
        others = sorted(p.name for p in self.root.iterdir()
                        if p.name not in OWN_MARKERS and not is_temporary(p.name))
        if others:
            raise InputError(f"is not empty and holds no manifest.json, so it is not a run folder "
                             f"(it holds {others[0]!r}{' and more' if len(others) > 1 else ''}); "
                             "choose a new or empty --out folder", where=str(self.root))

    @property
    def provenance_dir(self) -> Path:
        return self.root / "provenance"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run's lock: one process at a time reads-modifies-writes the manifest or
        compiles a table; a second one waits. Making items (images, score shards) happens
        outside it, under `working`, so several processes share a run's work.

        The lock is an OS file lock (flock) on `<run>/.eligen-bench.lock`, released by the
        kernel when its holder dies, so a killed run never leaves the folder locked. A file
        system without flock is refused rather than locked by a file's mere existence, which a
        killed run would leave behind.
        """
        from filelock import FileLock, Timeout

        self.check_owned()
        self.root.mkdir(parents=True, exist_ok=True)
        check_control(self.root / LOCK_NAME)  # a link there would be created or truncated through
        check_control(self.root / CLAIMS_FOLDER, folder=True)
        lock = FileLock(self.root / LOCK_NAME, fallback_to_soft=False)
        try:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                log.warning("%s is in use by another eligen-bench command; waiting for it to finish "
                            "(Ctrl-C to stop)", self.root)
                lock.acquire()
        except (NotImplementedError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno != errno.ENOSYS:
                raise
            raise InputError("the file system does not support file locks (flock); put the run folder "
                             "on a local disk", where=str(self.root)) from None
        try:
            self.check_owned()  # another process may have filled the folder while we waited
            yield
        finally:
            lock.release()

    @contextmanager
    def working(self) -> Iterator[None]:
        """Hold a shared lock while making items: clean-up takes it exclusively, so it never
        removes the temporary of a live writer in another process or on another machine."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        check_control(self.root / CLAIMS_FOLDER, folder=True)
        fd = open_control(self.root / WORK_LOCK_NAME)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def remove_stale_temporaries(self) -> int:
        """Delete temporaries a killed command left in the run's own places, and the claim
        files of items no longer being made (under the lock); returns how many temporaries.

        Skipped while another process makes items (it holds `working`): their temporaries and
        claims are live, and stale ones are removed by the next command that finds the run idle.
        """
        import fcntl

        if not self.root.is_dir():
            return 0
        fd = open_control(self.root / WORK_LOCK_NAME)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.debug("%s: items are being made elsewhere; clean-up left for later", self.root)
                return 0
            count = remove_stale_temporaries(self.root, recursive=False)
            for name in OWN_FOLDERS:
                count += remove_stale_temporaries(self.root / name)
            remove_claim_files(self.root)
            return count
        finally:
            os.close(fd)

    # provenance ------------------------------------------------------------------
    def record_made(self, worker: dict[str, Any], kind: str, generator: str, item: str) -> None:
        """Append where one item was made to this worker's own file (no lock: one writer each).

        A line cut short by a kill is skipped when the provenance is read."""
        self.provenance_dir.mkdir(parents=True, exist_ok=True)
        path = self.provenance_dir / f"{worker['id']}.jsonl"
        self.check_inside(path)
        line = json.dumps({"kind": kind, "generator": generator, "item": item, "worker": worker["id"]})
        try:  # never through a link, never into a FIFO
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
        except OSError as exc:
            raise InputError(f"cannot append to the provenance file ({exc.strerror})", where=str(path)) from None
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def read_provenance(self) -> list[dict[str, Any]]:
        """Every complete, well-formed line of every worker's provenance file, the latest record
        per item last (a line cut short by a kill, or not of the form `record_made` writes, is skipped)."""
        records = []
        for path in sorted(self.provenance_dir.glob("*.jsonl")) if self.provenance_dir.is_dir() else ():
            with open_run_file(self.root, path) as handle:
                text = handle.read().decode("utf-8", errors="replace")
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(record, dict) and all(isinstance(record.get(k), str) for k in PROVENANCE_FIELDS):
                    records.append(record)
        return records

    def open_for(self, config: dict[str, Any], *, allow_mixed: bool) -> dict[str, Any]:
        """Create the manifest, or add `config` to a compatible existing one (under the lock).

        Compatible: the same suite, seeds and profile, and every generator of `config` either
        new to the run or configured as before. Anything else needs `allow_mixed`. Generators
        of the run that `config` does not name are kept, with their images and scores.
        """
        self.check_owned()
        self.remove_stale_temporaries()
        existing = self.read_manifest()
        merged = merge_config(existing.get("config") if existing else None, config,
                              allow_mixed=allow_mixed, where=str(self.root))
        manifest = dict(existing or {})
        history = list(manifest.get("history", []))
        if existing is not None and existing.get("config_hash") != generation_hash(merged):
            history.append({"config_hash": existing.get("config_hash"), "config": existing.get("config")})
        manifest.update(
            format=1,
            eligen_bench_version=__version__,
            created=manifest.get("created") or _now(),
            updated=_now(),
            code_version=code_version(),
            packages=package_versions(),
            config=merged,
            config_hash=generation_hash(merged),
            history=history,
        )
        self.write_manifest(manifest)
        return manifest

    # images -------------------------------------------------------------------
    def write_image(self, path: Path, image: Image.Image, key: str, input_sha256: str | None = None) -> None:
        from PIL.PngImagePlugin import PngInfo

        self.check_inside(path)
        info = PngInfo()
        info.add_text(KEY_CHUNK, key)
        if input_sha256:
            info.add_text(INPUT_CHUNK, input_sha256)
        atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))

    def image_key(self, path: Path) -> str | None:
        """The request key stored in a PNG, or None when absent or unreadable (then regenerate)."""
        return self.image_text(path).get(KEY_CHUNK)

    def image_text(self, path: Path) -> dict[str, str]:
        """The text chunks of a PNG; empty when absent, unreadable, not a PNG, or not a regular
        file inside the run (never opened then: a FIFO would block)."""
        if not self.holds(path):
            return {}
        from PIL import Image

        try:
            with open_run_file(self.root, path) as handle:
                with Image.open(handle, formats=["PNG"]) as image:
                    image.verify()
                handle.seek(0)
                with Image.open(handle, formats=["PNG"]) as image:
                    return dict(image.text)  # type: ignore[attr-defined]
        except Exception:  # a corrupt image is simply not done
            return {}


def worker_record(executor: str, device: str | None, threads: int) -> dict[str, Any]:
    """Who makes items: host, process, device and the torch CPU threads it makes them with
    (`runtime.threads`); `id` names its provenance file. `runtime.record_facts` adds what the
    process and its plugins actually ran with."""
    host = socket.gethostname()
    return {"id": f"{host}-{os.getpid()}", "executor": executor, "host": host, "pid": os.getpid(),
            "device": device or "default", "threads": threads}


def merge_config(existing: dict[str, Any] | None, config: dict[str, Any], *, allow_mixed: bool,
                 where: str) -> dict[str, Any]:
    """The run's configuration once `config` (one command's) is added; see `RunDir.open_for`."""
    if existing is None:
        return {**config, "metrics": {}}
    old_generators = dict(existing.get("generators", {}))
    new_generators = config["generators"]
    same_base = all(existing.get(k) == config.get(k) for k in SHARED_CONFIG)
    changed = [label for label, identity in new_generators.items() if old_generators.get(label) != identity]
    if same_base and not changed:
        return dict(existing)
    if not allow_mixed:
        what = "generator(s) " + ", ".join(repr(c) for c in changed) if same_base else "suite, seeds or profile"
        raise InputError(
            f"was made by a different configuration ({what} differ; config hash {generation_hash(existing)}, "
            f"now {generation_hash(config)}); use a new --out folder, or --allow-mixed to add to it",
            where=where,
        )
    left = sorted(set(old_generators) - set(new_generators))
    if not same_base and left:
        raise InputError(
            f"--allow-mixed with another suite, seeds or profile would leave generator(s) {left} of this "
            "run made with the old ones; name them in --generators too, or use a new --out folder",
            where=where,
        )
    generators = {**old_generators, **new_generators} if same_base else dict(new_generators)
    return {**config, "generators": generators, "metrics": dict(existing.get("metrics", {}))}


def generation_hash(config: dict[str, Any]) -> str:
    """Hash of what determines the images (metrics excluded: changing one never regenerates)."""
    return content_hash({k: v for k, v in config.items() if k != "metrics"})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def code_version() -> str:
    """The git commit of the source tree (with '+dirty' when modified), else the package version."""
    source = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return __version__
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return __version__
