"""Per-item claims: two processes on one run folder never make the same item at once.

Before making an item (an image, a score shard) a process takes an exclusive OS file lock
(flock) on `<run>/.eligen-bench.claims/<hash of the item's name>.lock` without waiting. An item
whose claim another process holds is skipped and come back to at the end of the stage: then
its claim is waited for, one at a time, and the item is made only if it is still not on disk
(its maker died). The kernel drops a claim when its holder dies, so a killed process never
leaves a stale one.

Claims are taken only inside `RunDir.working` (the shared work lock), so clean-up, which runs
only when it can take that lock exclusively, removes claim files no process has open.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
CLAIMS_FOLDER = ".eligen-bench.claims"
_CLAIM_FILE = re.compile(r"^[0-9a-f]{32}\.lock$")
Task = TypeVar("Task")


def claim_path(root: Path, name: str) -> Path:
    """The lock file of item `name` (hashed: item names hold '/' and may be long)."""
    return root / CLAIMS_FOLDER / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.lock"


@contextmanager
def claimed(root: Path, name: str, *, wait: bool) -> Iterator[bool]:
    """Hold the claim on item `name` while the block runs; yields whether it is held.

    Without `wait`, a claim another process holds yields False at once (the block must then
    leave the item alone); with it, the claim is waited for. Call it inside `RunDir.working`.
    """
    import fcntl

    from eligen_bench.run_files import open_control

    path = claim_path(root, name)
    path.parent.mkdir(exist_ok=True)
    fd = open_control(path)  # never through a link
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        if not held and wait:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = True
        yield held
    finally:
        os.close(fd)  # closing releases the claim


def make_all(tasks: Sequence[Task], make: Callable[[Task, bool], list[Task]], size: Callable[[Task], int],
             bar: Any, what: str) -> None:
    """Run `make(task, wait)` over every task, `bar.update` as each is settled.

    `make` returns the parts of a task it skipped because another process holds their claims;
    they are made (or found made) at the end, with `wait`, after every other task, so this
    process never idles while there is work nobody holds.
    """
    later: list[Task] = []
    for task in tasks:
        skipped = make(task, False)
        later += skipped
        bar.update(size(task) - sum(map(size, skipped)))
    if later:
        log.warning("%s: %d item(s) are being made by another process; waiting for them (Ctrl-C to stop)",
                    what, len(later))
    for task in later:
        make(task, True)
        bar.update(size(task))


def remove_claim_files(root: Path) -> int:
    """Delete the claim files of a run nobody works on (the caller holds the work lock
    exclusively); returns how many. Only files named like claims are touched."""
    folder = root / CLAIMS_FOLDER
    if not folder.is_dir() or folder.is_symlink():
        return 0
    count = 0
    for path in folder.iterdir():
        if _CLAIM_FILE.match(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            count += 1
    if not any(folder.iterdir()):
        folder.rmdir()
    return count
