"""Opening the files of a run folder, which someone else may have written.

A run folder received from another lab is untrusted input. Every file read from it must
resolve inside the folder (a link to a private file elsewhere is refused) and be a regular
file (a FIFO or a device would block the reader for ever, or never end). Both are checked
with lstat/stat before the file is opened, and again on the open descriptor, which is opened
without blocking and without following a last link, so a file swapped in between cannot slip
past either check.

The run's control files (its lock files and its claims folder) must not be links either: a
link there would make a command create or truncate a file outside the run.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from eligen_bench.errors import InputError

MISSING = "missing"
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def kind(mode: int) -> str:
    """What a file of this mode is, in words (for 'is not a regular file (a FIFO)')."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def resolved_inside(root: Path, path: Path) -> Path | None:
    """`path` with every link followed, when that lies inside `root` (also resolved); else None."""
    base = root.resolve()
    target = path.resolve()
    return target if target == base or target.is_relative_to(base) else None


def problem(root: Path, path: Path) -> str | None:
    """Why `path` is not a regular file inside the run `root`: None when it is, MISSING when
    there is nothing there, else a short reason. Never opens the file."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return MISSING
    try:
        target = resolved_inside(root, path)
    except (OSError, RuntimeError):  # a loop of links
        return "is a link that cannot be resolved"
    if target is None:
        return "is a link that resolves outside the run folder"
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "is a broken link"
    if not stat.S_ISREG(mode):
        return f"is not a regular file ({kind(mode)})"
    return None


def is_run_file(root: Path, path: Path) -> bool:
    """Whether `path` is a regular file inside the run (anything else counts as not made)."""
    return problem(root, path) is None


def open_run_file(root: Path, path: Path, *, limit: int | None = None) -> BinaryIO:
    """Open a regular file of the run for reading; InputError naming it otherwise (missing
    included), or when it holds more than `limit` bytes."""
    why = problem(root, path)
    if why is not None:
        raise InputError("no such file" if why == MISSING else f"{why}; it is not read", where=str(path))
    target = resolved_inside(root, path)
    assert target is not None
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"cannot open ({exc.strerror})", where=str(path)) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or (limit is not None and info.st_size > limit):
        os.close(fd)
        why = f"changed into {kind(info.st_mode)}" if not stat.S_ISREG(info.st_mode) else \
            f"holds {info.st_size} bytes, more than the {limit} allowed"
        raise InputError(f"{why}; it is not read", where=str(path))
    return os.fdopen(fd, "rb")


def check_control(path: Path, *, folder: bool = False) -> None:
    """A run's lock file (or claims folder, with `folder`) is absent or its own regular file
    (folder), never a link or anything else; InputError naming it otherwise."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise InputError("is a symbolic link; a run's lock and claim files must be its own: remove it",
                         where=str(path))
    if not (stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode)):
        raise InputError(f"is {kind(mode)}, not the run's own {'folder' if folder else 'lock file'}: remove it",
                         where=str(path))


def open_control(path: Path) -> int:
    """Open (creating) a run's lock file for flock, refusing links and special files; a file
    descriptor the caller closes."""
    check_control(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise InputError(f"cannot open the run's lock file ({exc.strerror})", where=str(path)) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError("is not a regular file: remove it", where=str(path))
    return fd
