"""Atomic file writes: a temporary file in the same folder, fsync, then rename.

A crash at any moment leaves either the old file or the new one, never half of one. The
temporary names carry a mark of their own (`.<name>.<8 random characters>.eligen.tmp`), so
clean-up after a crash removes only files this project made, never a user's `.x.tmp`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

TEMP_SUFFIX = ".eligen.tmp"
# mkstemp's random part: 8 characters of [a-z0-9_] (tempfile._RandomNameSequence).
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of `atomic_write`'s temporaries."""
    return bool(_TEMP_NAME.match(name))


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` then move the result onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def remove_stale_temporaries(folder: Path, *, recursive: bool = True) -> int:
    """Delete the temporaries a killed process left in `folder` (and, when `recursive`, in the
    folders below it, without following links); returns how many. Other files are never touched.
    Call it only while holding the run's lock, or a running writer loses its temporary."""
    count = 0
    if not folder.is_dir() or folder.is_symlink():
        return 0
    for parent, dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            path = Path(parent) / name
            if is_temporary(name) and not path.is_symlink():
                path.unlink(missing_ok=True)
                count += 1
        if not recursive:
            dirs.clear()
    return count
