"""LayoutSAM-Eval (CreatiLayout, ICCV 2025): 5,000 SA-1B layouts with open-set entity captions.

Source: the hub dataset `HuiZhang0812/LayoutSAM-eval`, split `test`, twelve parquet files
`data/test-000NN-of-00012.parquet` at the pinned commit `REVISION`. Each record holds
`global_caption`, `region_captions` and `detail_region_captions` (Python list literals),
`bbox_list` (a list literal of pixel xyxy boxes in the source image), `width`, `height`,
`file_name`, `image_id` and the source `image` (never read here).

One layout per record, in the split's order; its id `layoutsam-<row>` carries the row index that
ContextGen's subset file and scorer use (`test_dataset[idx]`). Entity prompt = the region caption,
description = the detail region caption, box = `round(x / width, 3)` per coordinate, exactly as
the reference's dataset class normalises it before both generation and scoring
(HuiZhang0812/CreatiLayout@860d8bd: dataset/layoutsam_benchmark.py:5-15, 43-44). The layout's
canvas is the source image's size; the boxes are normalised, so every generator draws them at
its own resolution.

Digests: a download verifies every file against the sha256 the hub records for it at the
pinned commit (its Git LFS oid) and writes them to `SHA256SUMS` in the data folder; a folder
copied to an offline machine with that file is checked against it, and a folder without it is
hashed and its digests recorded in the suite's notes.

Presets (`PRESETS`): `full` (all 5,000 records, 19,133 boxes) and `contextgen-1k`, ContextGen's
"1K subset with sufficiently large bounding boxes" (ICLR 2026, Table 2): its paper gives no
rule, its record indices are read from `layoutsam_sampled.json` inside the reference pack of
nenhang/ContextGen (`contextgen_subset`).
"""

from __future__ import annotations

import ast
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eligen_bench.errors import InputError
from eligen_bench.hashing import file_sha256
from eligen_bench.layout import Entity, Layout, check_text
from eligen_bench.suite import Suite

REPO_ID = "HuiZhang0812/LayoutSAM-eval"
REVISION = "930abfa88208248aa2eab22140a143497d590dc8"
"""The dataset's "Upload dataset" commit (2024-12-30) that added the twelve test parquet files;
the reference scripts load the default branch (score_layoutsam_benchmark.py:19-20), which holds
these files unchanged."""
FILE_PATTERN = re.compile(r"test-(\d{5})-of-(\d{5})\.parquet")
KNOWN_SHA256 = {
    "data/test-00004-of-00012.parquet": "42a4da4a17031f63619dd827c5b8546eb99617ed5fe2521829756a6414bf533e",
}
"""Digests known without the hub (the dataset page's Git LFS details, as stored for this
project); every other file is checked against the hub's own record at download time."""
EXPECTED_RECORDS, EXPECTED_BOXES = 5000, 19133
"""Records and boxes of the pinned split: the dataset card's `num_examples` and the reference
scorer's own "Total number of bbox" (HuiZhang0812/CreatiLayout issue 25)."""
COLUMNS = ("global_caption", "region_captions", "detail_region_captions", "bbox_list", "width", "height",
           "file_name")
SUMS_FILE = "SHA256SUMS"
DIR_ENV = "ELIGEN_BENCH_LAYOUTSAM_DIR"
BOX_TOLERANCE = 1e-3
"""Normalised coordinates this far outside [0, 1] are rounding and get clamped; further is an error."""
MAX_LITERAL = 1 << 20
"""Longest list literal parsed from one field (characters)."""
_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


# ---------------------------------------------------------------- download and digests


def hub_digests(revision: str = REVISION, api: Any = None) -> dict[str, tuple[str, int]]:
    """{path: (sha256, size)} of the split's parquet files as the hub records them at `revision`."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    digests = {}
    for entry in api.list_repo_tree(REPO_ID, path_in_repo="data", repo_type="dataset", revision=revision):
        name = Path(getattr(entry, "path", "")).name
        lfs = getattr(entry, "lfs", None)
        if FILE_PATTERN.fullmatch(name) and lfs is not None:
            digests[f"data/{name}"] = (str(lfs.sha256), int(lfs.size))
    if not digests:
        raise InputError(f"the hub lists no test parquet files under data/ at {revision}", where=REPO_ID)
    return digests


def download_layoutsam_eval(dest: Path | None = None, *, revision: str = REVISION, api: Any = None,
                            snapshot: Callable[..., Any] | None = None) -> Path:
    """The split's parquet files in `dest` (default: the cache), verified; returns `dest`.

    A folder whose `SHA256SUMS` already names `revision` and whose files match it is used as it
    is; otherwise the files are fetched with `huggingface_hub.snapshot_download` at `revision`
    and each is checked against the hub's sha256 (and `KNOWN_SHA256`) before `SHA256SUMS` is
    written. `api` and `snapshot` stand in for the hub in tests.
    """
    from eligen_bench.suites.fetch import default_cache_dir

    dest = Path(dest) if dest is not None else default_cache_dir("layoutsam_eval", revision)
    if read_sums(dest).get("revision") == revision:
        check_sums(dest)
        return dest
    expected = hub_digests(revision, api)
    for path, digest in KNOWN_SHA256.items():
        if path in expected and expected[path][0] != digest:
            raise InputError(f"the hub's sha256 {expected[path][0]} differs from the published {digest}",
                             where=f"{REPO_ID}@{revision}: {path}")
    if snapshot is None:
        from huggingface_hub import snapshot_download as snapshot
    try:
        snapshot(REPO_ID, repo_type="dataset", revision=revision, local_dir=str(dest),
                 allow_patterns=sorted(expected))
    except Exception as exc:  # network, auth, disk: one line naming what failed
        raise InputError(f"download failed ({type(exc).__name__}: {exc}); without internet access pass "
                         f"a local folder holding the parquet files instead", where=f"{REPO_ID}@{revision}") from None
    for path, (digest, size) in expected.items():
        _check_file(dest / path, digest, size, where=f"{REPO_ID}@{revision}: {path}")
    write_sums(dest, revision, expected)
    return dest


def write_sums(directory: Path, revision: str, digests: dict[str, tuple[str, int]]) -> None:
    from eligen_bench.atomic import atomic_write_text

    lines = [f"# {REPO_ID}@{revision}"] + [f"{sha}  {size}  {path}" for path, (sha, size) in sorted(digests.items())]
    atomic_write_text(directory / SUMS_FILE, "\n".join(lines) + "\n")


def read_sums(directory: Path) -> dict[str, Any]:
    """{'revision': str, 'files': {path: (sha256, size)}} from `SHA256SUMS` ({} when absent)."""
    path = Path(directory) / SUMS_FILE
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read ({exc})", where=str(path)) from None
    lines = text.splitlines()
    header = re.fullmatch(rf"# {re.escape(REPO_ID)}@([0-9a-f]{{40}})", lines[0].strip()) if lines else None
    if header is None:
        raise InputError(f"first line must be '# {REPO_ID}@<commit>'", where=str(path))
    files = {}
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split()
        if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]) or not parts[1].isdigit() \
                or not FILE_PATTERN.fullmatch(Path(parts[2]).name) or ".." in parts[2]:
            raise InputError("expected '<sha256>  <size>  data/test-NNNNN-of-NNNNN.parquet'", where=f"{path}:{number}")
        files[parts[2]] = (parts[0], int(parts[1]))
    return {"revision": header.group(1), "files": files}


def check_sums(directory: Path) -> dict[str, str]:
    """Check every file `SHA256SUMS` lists (size, then sha256); returns {path: sha256}."""
    sums = read_sums(directory)
    for path, (digest, size) in sums["files"].items():
        _check_file(Path(directory) / path, digest, size, where=f"{Path(directory) / SUMS_FILE}: {path}")
    return {path: digest for path, (digest, _) in sums["files"].items()}


def _check_file(path: Path, digest: str, size: int, *, where: str) -> None:
    if not path.is_file():
        raise InputError("file missing", where=where)
    if path.stat().st_size != size:
        raise InputError(f"is {path.stat().st_size} bytes, expected {size}", where=where)
    got = file_sha256(path)
    if got != digest:
        raise InputError(f"sha256 {got} differs from the expected {digest}", where=where)


# ---------------------------------------------------------------- reading the split


def parquet_files(directory: Path) -> list[Path]:
    """The split's files under `directory` (or its `data/`), in the order `load_dataset` reads them."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("no such folder", where=str(directory))
    found = sorted(p for p in directory.glob("*.parquet") if FILE_PATTERN.fullmatch(p.name))
    if not found and (directory / "data").is_dir():
        found = sorted(p for p in (directory / "data").glob("*.parquet") if FILE_PATTERN.fullmatch(p.name))
    if not found:
        raise InputError("holds no test-NNNNN-of-NNNNN.parquet files (nor does its data/ folder)", where=str(directory))
    totals = {FILE_PATTERN.fullmatch(p.name).group(2) for p in found}
    shards = [int(FILE_PATTERN.fullmatch(p.name).group(1)) for p in found]
    if len(totals) != 1 or shards != list(range(int(totals.pop()))):
        raise InputError(f"the parquet shards are incomplete or mixed: {[p.name for p in found]}", where=str(directory))
    return found


def read_records(files: Sequence[Path]) -> list[dict[str, Any]]:
    """The text columns of every record, in split order (the `image` column is never read)."""
    import pyarrow.parquet as pq

    records: list[dict[str, Any]] = []
    for path in files:
        try:
            table = pq.read_table(path, columns=list(COLUMNS))
        except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors subclass these
            raise InputError(f"cannot read the parquet columns {list(COLUMNS)} ({exc})", where=str(path)) from None
        records += [dict(r, _file=path.name) for r in table.to_pylist()]
    return records


def _literal_list(text: Any, *, where: str, what: str) -> list:
    """A Python list literal, parsed as the reference does (`ast.literal_eval`), never executed."""
    if not isinstance(text, str) or len(text) > MAX_LITERAL:
        raise InputError(f"must be a list literal of at most {MAX_LITERAL} characters", where=where, field=what)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise InputError(f"is not a Python list literal ({type(exc).__name__})", where=where, field=what) from None
    if not isinstance(value, list):
        raise InputError(f"is a {type(value).__name__}, not a list", where=where, field=what)
    return value


def normalise_box(box: Any, width: int, height: int, *, where: str) -> tuple[float, float, float, float]:
    """Pixel xyxy -> `round(x / width, 3)` per coordinate (the reference's
    `adjust_and_normalize_bboxes`); rounding noise outside [0, 1] is clamped, anything else refused.

    A box that the rounding leaves empty (x1 >= x2) is refused: its crop would be empty, which
    the reference scorer cannot judge either.
    """
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box):
        raise InputError(f"box must be 4 finite numbers, got {box!r}", where=where)
    x1, y1, x2, y2 = box
    values = [round(x1 / width, 3), round(y1 / height, 3), round(x2 / width, 3), round(y2 / height, 3)]
    if any(not -BOX_TOLERANCE <= v <= 1 + BOX_TOLERANCE for v in values):
        raise InputError(f"box {box!r} lies outside the {width}x{height} image", where=where)
    nx1, ny1, nx2, ny2 = (min(max(v, 0.0), 1.0) for v in values)
    if not (nx1 < nx2 and ny1 < ny2):
        raise InputError(f"box {box!r} is empty after the reference's rounding to {values}", where=where)
    return (nx1, ny1, nx2, ny2)


def one_line(text: Any, *, where: str, what: str, changed: list[str]) -> str:
    """A caption as one line: line breaks and control characters become one space (recorded)."""
    if not isinstance(text, str):
        raise InputError(f"must be a string, got {type(text).__name__}", where=where, field=what)
    clean = _BREAKS.sub(" ", text)
    if clean != text:
        changed.append(f"{where} {what}")
    check_text(clean, where=where, what=what)
    return clean


def record_layout(index: int, record: dict[str, Any], changed: list[str]) -> Layout:
    """The layout of record `index` of the split."""
    where = f"{REPO_ID} test[{index}] ({record.get('_file', '?')})"
    width, height = record.get("width"), record.get("height")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        raise InputError(f"width/height must be positive integers, got {width!r}x{height!r}", where=where)
    boxes = _literal_list(record.get("bbox_list"), where=where, what="bbox_list")
    regions = _literal_list(record.get("region_captions"), where=where, what="region_captions")
    details = _literal_list(record.get("detail_region_captions"), where=where, what="detail_region_captions")
    if not len(boxes) == len(regions) == len(details):
        raise InputError(f"{len(boxes)} boxes, {len(regions)} region captions, {len(details)} detail captions",
                         where=where)
    entities = tuple(
        Entity(prompt=one_line(region, where=where, what=f"region_captions[{k}]", changed=changed),
               bbox=normalise_box(box, width, height, where=f"{where}: bbox_list[{k}]"),
               description=one_line(detail, where=where, what=f"detail_region_captions[{k}]", changed=changed))
        for k, (box, region, detail) in enumerate(zip(boxes, regions, details, strict=True))
    )
    file_name = str(record.get("file_name") or "")
    return Layout(
        id=f"layoutsam-{index:04d}",
        prompt=one_line(record.get("global_caption"), where=where, what="global_caption", changed=changed),
        entities=entities,
        width=width,
        height=height,
        source=f"layoutsam-eval:test[{index}]" + (f":{_BREAKS.sub('', file_name)}" if file_name else ""),
    )


# ---------------------------------------------------------------- the suite


def load_layoutsam_eval(directory: Path, *, subset: Sequence[int] | None = None,
                        subset_note: str | None = None, name: str = "layoutsam-eval") -> Suite:
    """The suite of the parquet files in `directory`: every record, or the rows in `subset`.

    Digests: checked against `SHA256SUMS` when the folder has one (and `KNOWN_SHA256` always);
    the split's record and box counts are checked when the folder is the pinned revision's.
    """
    directory = Path(directory)
    files = parquet_files(directory)
    sums = read_sums(directory)
    relative = {p: str(p.relative_to(directory)) if p.is_relative_to(directory) else p.name for p in files}
    if sums:
        digests = check_sums(directory)
        unlisted = [relative[p] for p in files if relative[p] not in digests]
        if unlisted:
            raise InputError(f"files not listed in {SUMS_FILE}: {unlisted}", where=str(directory))
        checked = f"checked against {SUMS_FILE} ({REPO_ID}@{sums['revision']})"
    else:
        digests = {relative[p]: file_sha256(p) for p in files}
        checked = "not checked: the folder has no SHA256SUMS from a verified download"
    known = {Path(path).name: digest for path, digest in KNOWN_SHA256.items()}
    for path, digest in digests.items():
        if Path(path).name in known and known[Path(path).name] != digest:
            raise InputError(f"sha256 {digest} differs from the published {known[Path(path).name]}",
                             where=str(directory / path))
    records = read_records(files)
    pinned = sums.get("revision") == REVISION
    changed: list[str] = []
    layouts = [record_layout(i, r, changed) for i, r in enumerate(records)]
    if pinned:
        boxes = sum(len(layout.entities) for layout in layouts)
        if (len(layouts), boxes) != (EXPECTED_RECORDS, EXPECTED_BOXES):
            raise InputError(f"{len(layouts)} records and {boxes} boxes; the pinned split holds "
                             f"{EXPECTED_RECORDS} and {EXPECTED_BOXES}", where=str(directory))
    if subset is not None:
        layouts = pick(layouts, subset, where=subset_note or "subset")
    notes = [
        f"source: {REPO_ID} split test, parquet sha256 {checked}: "
        + ", ".join(f"{Path(p).name}={d[:12]}" for p, d in sorted(digests.items())),
        "entity prompt = region caption, description = detail region caption; box = round(pixel / size, 3) "
        "as the reference's BboxDataset; canvas = the source image's size",
        "every box of a record is scored (the reference scorer reads the whole record)",
    ]
    if changed:
        notes.append(f"{len(changed)} caption(s) held line breaks or control characters, replaced by one space "
                     f"(first: {changed[0]})")
    if subset_note:
        notes.append(subset_note)
    return Suite(name=name, version="1", layouts=tuple(layouts),
                 description=f"LayoutSAM-Eval ({REPO_ID}, test split{'' if subset is None else ', subset'}): "
                             "open-set layouts with region and detail captions",
                 notes=tuple(notes))


def pick(layouts: Sequence[Layout], rows: Sequence[int], *, where: str) -> list[Layout]:
    """The layouts of the given split rows, in row order; every row must exist."""
    out_of_range = [r for r in rows if not 0 <= r < len(layouts)]
    if out_of_range:
        raise InputError(f"row(s) {out_of_range[:5]} outside the split's {len(layouts)} records", where=where)
    return [layouts[r] for r in sorted(set(rows))]


PRESETS = ("full", "contextgen-1k")


def build_layoutsam_suite(directory: Path, preset: str = "full", contextgen_pack: Path | None = None) -> Suite:
    """The `full` suite or ContextGen's `contextgen-1k` subset of the files in `directory`."""
    if preset == "full":
        return load_layoutsam_eval(directory)
    if preset != "contextgen-1k":
        raise InputError(f"unknown preset {preset!r}; choose one of {PRESETS}", field="preset")
    from eligen_bench.suites import contextgen_subset as cg

    rows, note = cg.subset_rows(contextgen_pack)
    return load_layoutsam_eval(directory, subset=rows, subset_note=note, name="layoutsam-eval-contextgen1k")


def _data_dir() -> Path:
    directory = os.environ.get(DIR_ENV)
    return Path(directory) if directory else download_layoutsam_eval()


def load_default() -> Suite:
    """Entry point `layoutsam-eval`: the folder in $ELIGEN_BENCH_LAYOUTSAM_DIR, else the cache
    (downloading and verifying the files there on first use; 5.6 GB)."""
    return build_layoutsam_suite(_data_dir())


def load_contextgen_1k() -> Suite:
    """Entry point `layoutsam-eval-1k`: ContextGen's 1K subset of `layoutsam-eval`."""
    from eligen_bench.suites import contextgen_subset as cg

    pack = os.environ.get(cg.PACK_ENV)
    return build_layoutsam_suite(_data_dir(), "contextgen-1k", Path(pack) if pack else None)
