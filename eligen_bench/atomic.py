"""Atomic file writes: a temporary file in the same folder, fsync, then rename.

A crash at any moment leaves either the old file or the new one, never half of one. The
temporary names carry a mark of their own (`.<name>.<8 random characters>.eligen.tmp`), so
clean-up after a crash removes only files this project made, never a user's `.x.tmp`.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from eligen_bench.errors import InputError

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
        for name in [d for d in dirs if is_temporary(d)]:  # a `folder_replaced` left half filled
            dirs.remove(name)
            if not (Path(parent) / name).is_symlink():
                shutil.rmtree(Path(parent) / name, ignore_errors=True)
                count += 1
        for name in files:
            path = Path(parent) / name
            if is_temporary(name) and not path.is_symlink():
                path.unlink(missing_ok=True)
                count += 1
        if not recursive:
            dirs.clear()
    return count


@contextmanager
def folder_replaced(path: Path) -> Iterator[Path]:
    """Yield a new temporary folder beside `path` to fill; when the block ends without error it
    takes `path`'s place (an earlier folder there is moved aside, then removed), and when the
    block fails it is removed and `path` stays as it was. So `path` is never half written."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InputError("exists and is not a folder (or is a link); remove it", where=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; results are meant to be shared
        yield tmp
        _take_place(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when it took `path`'s place


def _take_place(new: Path, path: Path) -> None:
    old = None
    if path.is_dir() and any(path.iterdir()):  # rename() replaces only an empty folder
        old = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        os.rename(path, old)
    try:
        os.rename(new, path)
    except OSError:
        if old is not None:
            os.rename(old, path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_writable(path: Path, *, field: str) -> None:
    """InputError naming `field` unless the folder `path` can be written: the folder itself when
    it exists, else the nearest existing folder above it, where it would be made."""
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{str(existing)!r} is not a folder", field=field)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write in {str(existing)!r} (a read-only or immutable folder, or no permission)",
                         field=field)
