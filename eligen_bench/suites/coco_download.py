"""Downloading the official COCO 2017 annotation archives, over https, with checked digests.

Each archive is checked against its sha256: a digest published elsewhere is pinned here;
without one, the digest of the first download is recorded in the cache (`<archive>.sha256`)
and every later download must match it. The files extracted from an archive are recorded
with their own digests (`annotations/sources.json`), and checked on every later use, so a
cache edited or damaged after extraction is reported instead of silently building another suite.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from eligen_bench.errors import InputError
from eligen_bench.hashing import file_sha256
from eligen_bench.suites.coco import CAPTIONS_FILE, INSTANCES_FILE, STUFF_FILE

ANNOTATIONS_URL = "https://images.cocodataset.org/annotations/annotations_trainval2017.zip"
ANNOTATIONS_SHA256: str | None = "113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268"
"""Published for the same official URL (252,907,541 bytes) by facebookresearch/ParlAI@d805733,
`parlai/tasks/coco_caption/build_2017.py`; several unrelated projects pin the same value."""
STUFF_ANNOTATIONS_URL = "https://images.cocodataset.org/annotations/stuff_annotations_trainval2017.zip"
STUFF_ANNOTATIONS_SHA256: str | None = None
"""No published sha256 found (only an MD5): recorded on first download, checked afterwards."""
RECORD_FILE = "sources.json"


@dataclass(frozen=True)
class Archive:
    url: str
    sha256: str | None
    """The pinned digest; None: trust the first download and record it."""
    members: tuple[str, ...]

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


def _archives(stuff: bool) -> list[Archive]:
    # Read at call time, so a test can serve its own archive under its own digest.
    wanted = [Archive(ANNOTATIONS_URL, ANNOTATIONS_SHA256, (INSTANCES_FILE, CAPTIONS_FILE))]
    if stuff:
        wanted.append(Archive(STUFF_ANNOTATIONS_URL, STUFF_ANNOTATIONS_SHA256, (STUFF_FILE,)))
    return wanted


def download_annotations(dest: Path, *, stuff: bool = False) -> Path:
    """Fetch the official annotation zip(s) into `dest` and extract the val2017 files.

    Returns the folder holding `instances_val2017.json` and `captions_val2017.json` (and
    `stuff_val2017.json` when `stuff`). Files already extracted (and matching their recorded
    digests) are not downloaded again. The zips (about 250 MB, and 1.1 GB for stuff) stay in `dest`.
    """
    from eligen_bench.atomic import atomic_write_text

    out = dest / "annotations"
    record = read_record(out)
    for archive in _archives(stuff):
        entry = record.get(archive.filename)
        if entry is not None and all((out / name).is_file() for name in archive.members):
            _check_extracted(out, archive, entry)
            continue
        path, digest = _fetch_checked(archive, dest)
        _extract(path, archive.members, out)
        if archive.sha256 is None:  # recorded only once the archive proved readable
            atomic_write_text(_sidecar(archive, dest), digest + "\n")
        record[archive.filename] = {
            "url": archive.url,
            "sha256": digest,
            "pinned": archive.sha256 is not None,
            "files": {name: file_sha256(out / name) for name in archive.members},
        }
        _write_record(out, record)
    return out


def source_notes(annotations_dir: Path) -> list[str]:
    """One suite note per archive the folder's files were extracted from, with its digest."""
    notes = []
    for _, entry in sorted(read_record(annotations_dir).items()):
        how = "pinned" if entry.get("pinned") else "recorded at first download"
        notes.append(f"annotations from {entry['url']} (sha256 {entry['sha256']}, {how})")
    return notes


def read_record(out: Path) -> dict:
    path = out / RECORD_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable digest record ({exc}); delete the folder to download again",
                         where=str(path)) from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise InputError("not a digest record; delete the folder to download again", where=str(path))
    return data


def _write_record(out: Path, record: dict) -> None:
    from eligen_bench.atomic import atomic_write_text

    atomic_write_text(out / RECORD_FILE, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _check_extracted(out: Path, archive: Archive, entry: dict) -> None:
    expected_archive = archive.sha256 or entry.get("sha256")
    if entry.get("sha256") != expected_archive:
        raise InputError(f"extracted from an archive of sha256 {entry.get('sha256')}, not the expected "
                         f"{expected_archive}; delete the folder to download again", where=str(out))
    for name in archive.members:
        got, recorded = file_sha256(out / name), (entry.get("files") or {}).get(name)
        if got != recorded:
            raise InputError(f"sha256 {got} differs from {recorded}, recorded when it was extracted from "
                             f"{archive.filename}; delete it to extract again", where=str(out / name))


def offline_help(stuff: bool) -> str:
    """What to do without the download: the files, where to get them, the options."""
    text = (f"unzip {INSTANCES_FILE} and {CAPTIONS_FILE} from {ANNOTATIONS_URL} into a folder and pass "
            "it as `suite build coco --annotations DIR`")
    if stuff:
        text += f", with {STUFF_FILE} from {STUFF_ANNOTATIONS_URL} in the same folder or as `--stuff FILE`"
    return text


def _fetch_checked(archive: Archive, dest: Path) -> tuple[Path, str]:
    """The archive in `dest`, downloaded when missing, checked against the pinned digest or the
    one recorded at its first download; returns its path and digest."""
    from eligen_bench.suites.fetch import fetch

    sidecar = _sidecar(archive, dest)
    expected = archive.sha256
    if expected is None and sidecar.is_file():
        expected = sidecar.read_text(encoding="utf-8").strip()
    stuff = archive.url == STUFF_ANNOTATIONS_URL
    path = fetch(archive.url, dest / archive.filename, sha256=expected, offline_help=offline_help(stuff))
    return path, expected or file_sha256(path)


def _sidecar(archive: Archive, dest: Path) -> Path:
    return dest / f"{archive.filename}.sha256"


def _extract(archive: Path, names: tuple[str, ...], out: Path) -> None:
    from eligen_bench.atomic import atomic_write

    try:
        with zipfile.ZipFile(archive) as zf:
            members = {Path(info.filename).name: info.filename for info in zf.infolist()}
            for name in names:
                if name not in members:
                    raise InputError(f"the archive holds no {name}", where=str(archive))

                def write(tmp: Path, member: str = members[name], zf: zipfile.ZipFile = zf) -> None:
                    with zf.open(member) as src, open(tmp, "wb") as dst:
                        while block := src.read(1 << 20):
                            dst.write(block)

                atomic_write(out / name, write)
    except zipfile.BadZipFile as exc:
        archive.unlink(missing_ok=True)  # a broken download: fetch it again next time
        raise InputError(f"not a valid zip archive ({exc}); removed, run again", where=str(archive)) from exc
