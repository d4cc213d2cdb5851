"""ContextGen's LayoutSAM-Eval subset: the record indices of `layoutsam_sampled.json`.

ContextGen (ICLR 2026) reports LayoutSAM-Eval on "1K samples with sufficiently large bounding
boxes" (Sec. 4.1) and gives no rule for them. Its scorer reads the indices from
`layoutsam_reference_pack/layoutsam_sampled.json` and scores `test_dataset[idx]` for each
(nenhang/ContextGen@f22fa90: bench/sample_scripts/layoutsam/layoutsam_eval.py:40, 462-464, 422),
so the subset is exactly those split rows. The file ships inside the Git LFS archive
`bench/sample_scripts/layoutsam/layoutsam_reference_pack.tar.gz` (278 MB, with reference images
this project does not use); the archive is downloaded at the pinned commit, checked against the
sha256 of its LFS pointer, and only the JSON member is read, in memory. Nothing is extracted
to disk and nothing of the pack is shipped.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from eligen_bench.errors import InputError

CONTEXTGEN_REPO = "nenhang/ContextGen"
CONTEXTGEN_COMMIT = "f22fa907554253bd64b0456fcb7ad085ffc3242c"
PACK_PATH = "bench/sample_scripts/layoutsam/layoutsam_reference_pack.tar.gz"
PACK_SHA256 = "aadd37aaafdc0be507b0bfd633883cda49bb6f0d38f476b6fd4ce48f9704a5f4"
PACK_SIZE = 277_794_175
"""The archive's Git LFS pointer at the pinned commit (oid sha256 and size)."""
MEMBER = "layoutsam_sampled.json"
MAX_MEMBER_BYTES = 64 << 20
PACK_ENV = "ELIGEN_BENCH_CONTEXTGEN_PACK"


def pack_url(commit: str = CONTEXTGEN_COMMIT) -> str:
    """GitHub's media endpoint serves a public repository's LFS objects by commit and path."""
    return f"https://media.githubusercontent.com/media/{CONTEXTGEN_REPO}/{commit}/{PACK_PATH}"


def download_pack(dest: Path | None = None) -> Path:
    """The archive in the cache (downloaded once, checked against the pinned sha256)."""
    from eligen_bench.suites.fetch import default_cache_dir, fetch

    dest = Path(dest) if dest is not None else default_cache_dir("contextgen", CONTEXTGEN_COMMIT)
    return fetch(pack_url(), dest / Path(PACK_PATH).name, sha256=PACK_SHA256, timeout=120.0)


def subset_rows(pack: Path | None = None) -> tuple[list[int], str]:
    """The split rows of ContextGen's subset and a note on where they came from.

    `pack`: the archive (checked against the pinned sha256) or the extracted JSON file (its own
    digest is recorded; nothing pins it); None downloads the archive to the cache.
    """
    from eligen_bench.hashing import file_sha256

    path = download_pack() if pack is None else Path(pack)
    if not path.is_file():
        raise InputError("no such file (the ContextGen reference pack .tar.gz, or its layoutsam_sampled.json)",
                         where=str(path))
    origin = f"{CONTEXTGEN_REPO}@{CONTEXTGEN_COMMIT[:7]}: {PACK_PATH}"
    if path.suffix == ".json":
        data, digest = path.read_bytes(), file_sha256(path)
        note_source = f"{path.name} (sha256 {digest[:12]}, not pinned: the pinned digest is the archive's)"
    else:
        digest = file_sha256(path)
        if digest != PACK_SHA256:
            raise InputError(f"sha256 {digest} is not the pinned pack's {PACK_SHA256} ({origin})", where=str(path))
        data = read_member(path)
        note_source = f"{MEMBER} in {origin} (sha256 {PACK_SHA256[:12]})"
    rows = parse_rows(data, where=str(path))
    note = (f"ContextGen 1K subset: {len(rows)} split rows from {note_source}; ContextGen's paper gives no "
            "selection rule ('sufficiently large bounding boxes')")
    return rows, note


def read_member(archive: Path) -> bytes:
    """The bytes of the one regular file named `MEMBER` in a .tar.gz, read without extracting."""
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            found = [m for m in tar if Path(m.name).name == MEMBER]
            files = [m for m in found if m.isfile()]
            if len(files) != 1 or len(found) != 1:
                raise InputError(f"expected one regular file named {MEMBER}, found "
                                 f"{[m.name for m in found] or 'none'}", where=str(archive))
            if files[0].size > MAX_MEMBER_BYTES:
                raise InputError(f"{files[0].name} is {files[0].size} bytes; at most {MAX_MEMBER_BYTES}",
                                 where=str(archive))
            handle = tar.extractfile(files[0])
            assert handle is not None  # a regular file always has one
            return handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"cannot read the archive ({exc})", where=str(archive)) from None


def parse_rows(data: bytes, *, where: str) -> list[int]:
    """Sorted unique `index` values of a JSON list of objects."""
    try:
        items = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"{MEMBER} is not JSON ({exc})", where=where) from None
    if not isinstance(items, list) or not items:
        raise InputError(f"{MEMBER} must be a non-empty list of objects", where=where)
    rows = []
    for k, item in enumerate(items):
        index = item.get("index") if isinstance(item, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise InputError(f"item {k} has no non-negative integer 'index'", where=where)
        rows.append(index)
    if len(set(rows)) != len(rows):
        raise InputError(f"{MEMBER} repeats {len(rows) - len(set(rows))} index value(s)", where=where)
    return sorted(rows)
