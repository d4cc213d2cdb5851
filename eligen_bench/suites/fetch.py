"""Downloading suite source files to a local cache, atomically and with optional checksums."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from eligen_bench.errors import InputError
from eligen_bench.hashing import file_sha256

USER_AGENT = "eligen-bench (suite builder)"


def default_cache_dir(*parts: str) -> Path:
    """`$ELIGEN_BENCH_CACHE`, else `$XDG_CACHE_HOME/eligen_bench`, else `~/.cache/eligen_bench`."""
    root = os.environ.get("ELIGEN_BENCH_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "eligen_bench"
    return base.joinpath(*parts)


def fetch(url: str, dest: Path, *, sha256: str | None = None, timeout: float = 60.0, offline_help: str = "") -> Path:
    """Download `url` to `dest` unless a good copy is already there; returns `dest`.

    The body goes to a temporary file next to `dest` and is renamed only when complete (and,
    when `sha256` is given, only when it matches), so an interrupted download never leaves a
    truncated file that a later run would trust. `offline_help` says how to do without the
    download (the option, the files, where to get them); it ends the error of a failed download.
    """
    if dest.is_file() and (sha256 is None or file_sha256(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        help_text = offline_help or "without internet access pass a local directory holding the files instead"
        raise InputError(f"download failed ({exc}); {help_text}", where=url) from exc
    if sha256 is not None:
        got = file_sha256(partial)
        if got != sha256:
            partial.unlink(missing_ok=True)
            raise InputError(f"sha256 {got} differs from the expected {sha256}", where=url)
    os.replace(partial, dest)
    return dest

