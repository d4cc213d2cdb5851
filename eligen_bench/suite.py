"""Suites: a named, versioned, content-hashed list of layouts, stored as JSONL.

The first line of a suite file is a header object with the key "suite"; every other line is
one layout. A file without a header is read as a suite named after the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from eligen_bench.arguments import MAX_SEED, MAX_SEEDS
from eligen_bench.errors import InputError
from eligen_bench.hashing import content_hash
from eligen_bench.layout import Layout, check_id, check_text, layout_problems, short_repr

FORMAT_VERSION = 1
MAX_SUITE_BYTES = 1 << 30
"""Largest suite file read (1 GiB; the filtered COCO suite with masks is far smaller)."""
HEADER_FIELDS = ("suite", "version", "description", "notes", "format", "hash", "count", "seed_list")


@dataclass(frozen=True)
class Suite:
    """A benchmark suite."""

    name: str
    """Short name, safe as a file name."""
    version: str
    """The suite's own version, bumped when its layouts change on purpose."""
    layouts: tuple[Layout, ...]
    """The layouts, in a fixed order; ids are unique."""
    description: str = ""
    """One line on what the suite holds and where it came from."""
    notes: tuple[str, ...] = field(default=())
    """Facts a reader of the results must know (e.g. 'things only, no stuff classes')."""
    folder: str | None = field(default=None, compare=False)
    """The folder relative `init_image` paths resolve against (the suite file's); not content."""
    seed_list: tuple[int, ...] = ()
    """The seeds the benchmark's own protocol uses for every layout (MIG-Bench: 42); a run that
    names neither `--seeds` nor `--seed-list` uses them. Not content: the hash ignores it."""

    def __post_init__(self) -> None:
        check_id(self.name, where="suite", what="name")
        check_text(self.version, where=f"suite {self.name!r}", what="version")
        if self.description:
            check_text(self.description, where=f"suite {self.name!r}", what="description")
        object.__setattr__(self, "layouts", tuple(self.layouts))
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "seed_list", check_seed_list(self.seed_list, where=f"suite {self.name!r}"))
        for i, note in enumerate(self.notes):
            check_text(note, where=f"suite {self.name!r}", what=f"notes[{i}]")
        seen: set[str] = set()
        for layout in self.layouts:
            if layout.id in seen:
                raise InputError("duplicate layout id", where=layout.where, field="id")
            seen.add(layout.id)

    @property
    def hash(self) -> str:
        """Content hash of the layouts (not of the name), so a renamed copy hashes the same."""
        return content_hash([layout.to_dict() for layout in self.layouts])

    def header(self) -> dict:
        header = {
            "suite": self.name,
            "version": self.version,
            "description": self.description,
            "notes": list(self.notes),
            "format": FORMAT_VERSION,
            "hash": self.hash,
            "count": len(self.layouts),
        }
        if self.seed_list:  # only suites that list seeds carry the field (older headers stay as they were)
            header["seed_list"] = list(self.seed_list)
        return header

    def subset(self, limit: int | None) -> Suite:
        """The first `limit` layouts (all when None), for quick runs."""
        if limit is None or limit >= len(self.layouts):
            return self
        return replace(self, layouts=self.layouts[:limit])

    def sample(self, count: int, seed: int = 0) -> Suite:
        """`count` layouts drawn across entity counts (a stratified sample), in suite order.

        Each entity count keeps its share of the suite: count x share, rounded down, and the
        layouts left over go to the counts with the largest remainders (ties: fewer entities
        first). Inside a count the layouts with the smallest sha256("<seed>/<layout id>") are
        taken, so a layout's draw does not depend on the other layouts or on their order. The
        sample says what it is in its notes; the layouts keep their ids.
        """
        if count >= len(self.layouts):
            return self
        strata: dict[int, list[Layout]] = {}
        for layout in self.layouts:
            strata.setdefault(len(layout.entities), []).append(layout)
        quotas = _largest_remainders({k: len(v) for k, v in strata.items()}, count)
        taken = {layout.id for k, group in strata.items()
                 for layout in sorted(group, key=lambda layout: _draw_key(seed, layout.id))[:quotas[k]]}
        note = (f"stratified sample: {count} of {len(self.layouts)} layouts (suite hash {self.hash}), "
                f"drawn per entity count in proportion, seed {seed}")
        return Suite(self.name, self.version, tuple(la for la in self.layouts if la.id in taken), self.description,
                     self.notes + (note,), self.folder)

    def input_path(self, layout: Layout) -> Path | None:
        """The absolute path of a layout's `init_image` (None when it has none)."""
        if layout.init_image is None:
            return None
        path = Path(layout.init_image).expanduser()
        if not path.is_absolute():
            path = Path(self.folder or ".") / path
        return path.resolve()

    def write(self, path: str | Path) -> None:
        """Write atomically: a reader never sees half a suite."""
        from eligen_bench.atomic import atomic_write_text

        lines = [json.dumps(self.header(), ensure_ascii=False)]
        lines += [json.dumps(layout.to_dict(), ensure_ascii=False) for layout in self.layouts]
        atomic_write_text(Path(path), "\n".join(lines) + "\n")


def _largest_remainders(sizes: dict[int, int], count: int) -> dict[int, int]:
    """`count` split over the strata in proportion to their sizes (Hamilton's method)."""
    total = sum(sizes.values())
    exact = {k: count * n / total for k, n in sizes.items()}
    quotas = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (-(exact[k] - quotas[k]), k))[:count - sum(quotas.values())]:
        quotas[k] += 1
    return quotas


def _draw_key(seed: int, layout_id: str) -> str:
    import hashlib

    return hashlib.sha256(f"{seed}/{layout_id}".encode()).hexdigest()


def read_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; the first problem raises an InputError naming file:line."""
    suite, problems = _parse(Path(path), stop_at_first=True)
    if problems:
        raise problems[0]
    assert suite is not None
    return suite


def validate_suite_file(path: str | Path) -> tuple[Suite | None, list[InputError]]:
    """Every problem in a suite file (for `eligen-bench validate`), and the suite if there were none."""
    suite, problems, _ = check_suite_file(path)
    return suite, problems


def check_suite_file(path: str | Path) -> tuple[Suite | None, list[InputError], list[str]]:
    """Every problem in a suite file (all of each line), the suite if there were none, and
    warnings: entity categories that are none of COCO's classes (the detector metrics exclude
    those entities)."""
    warnings: list[str] = []
    suite, problems = _parse(Path(path), stop_at_first=False, warnings=warnings)
    return suite, problems, warnings


def category_warning(layout: Layout) -> list[str]:
    """One warning per entity whose category is not one of COCO's 80 thing classes."""
    from eligen_bench.coco_classes import COCO_THING_CLASSES, normalize_category

    return [f"{layout.where}: entities[{i}].category: {short_repr(e.category)} is not one of COCO's 80 "
            "thing classes (nor a known other spelling); the detector metrics (miou, coco_ap) exclude "
            "this entity"
            for i, e in enumerate(layout.entities)
            if e.category is not None and normalize_category(e.category) not in COCO_THING_CLASSES]


def _parse(path: Path, *, stop_at_first: bool,
           warnings: list[str] | None = None) -> tuple[Suite | None, list[InputError]]:
    try:
        text = _read_text(path)
    except InputError as exc:
        return None, [exc]
    header: dict = {}
    layouts: list[Layout] = []
    problems: list[InputError] = []
    seen: dict[str, int] = {}
    header_line = 0
    for number, line in _numbered_lines(text):
        where = f"{path.name}:{number}"
        try:
            data = json.loads(line, parse_constant=_reject_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            problems.append(InputError(f"malformed JSON ({exc})", where=where))
        except RecursionError:
            problems.append(InputError("malformed JSON (nested too deeply)", where=where))
        else:
            if isinstance(data, dict) and "suite" in data and not layouts and not header and not problems:
                header, header_line = data, number
                try:
                    _check_header(header, where=where)
                except InputError as exc:
                    problems.append(exc)
                    header = {}
                if problems and stop_at_first:
                    return None, problems
                continue
            if not stop_at_first:
                found = layout_problems(data, where=where)
                if found:
                    problems += found
                    continue
            try:
                layout = Layout.from_dict(data, where=where)
                if layout.id in seen:
                    raise InputError(f"duplicate layout id (first on line {seen[layout.id]})", where=where, field="id")
                seen[layout.id] = number
                layouts.append(layout)
                if warnings is not None:
                    warnings += category_warning(layout)
            except InputError as exc:
                problems.append(exc)
        if problems and stop_at_first:
            return None, problems
    if not layouts and not problems:
        problems.append(InputError("suite holds no layouts", where=str(path)))
    if problems:
        return None, problems
    try:
        suite = Suite(
            name=header.get("suite", _name_from_path(path)),
            version=str(header.get("version", "0")),
            layouts=tuple(layouts),
            description=header.get("description", ""),
            notes=tuple(header.get("notes", ())),
            folder=str(path.resolve().parent),
            seed_list=tuple(header.get("seed_list", ())),
        )
    except InputError as exc:
        place = f"{path.name}:{header_line}" if header_line else str(path)
        return None, [InputError(exc.message, where=place, field=exc.field)]
    recorded = header.get("hash")
    if recorded and recorded != suite.hash:
        # Edited by hand after it was written: still usable, but say so in the suite's notes.
        suite = replace(suite, notes=suite.notes + (f"content hash {suite.hash} differs from the header's {recorded}",))
    return suite, []


def _read_text(path: Path) -> str:
    """The file's text; only a regular file of at most MAX_SUITE_BYTES (a FIFO would block)."""
    try:
        if not path.exists():
            raise InputError("no such suite file", where=str(path))
        if not path.is_file():
            raise InputError("is not a regular file", where=str(path))
        size = path.stat().st_size
        if size > MAX_SUITE_BYTES:
            raise InputError(f"is {size} bytes; a suite file may hold at most {MAX_SUITE_BYTES}", where=str(path))
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read suite file ({exc})", where=str(path)) from None


def _check_header(header: dict, *, where: str) -> None:
    """Every header field has its documented type; unknown fields are refused."""
    unknown = sorted(set(header) - set(HEADER_FIELDS))
    if unknown:
        raise InputError(f"unknown header field(s) {short_repr(unknown)}; known: {list(HEADER_FIELDS)}", where=where)
    check_id(header["suite"], where=where, what="suite")
    version = header.get("version", "0")
    if isinstance(version, bool) or not isinstance(version, (str, int)):
        raise InputError(f"must be a string or an integer, got {short_repr(version)}", where=where, field="version")
    check_text(str(version), where=where, what="version")
    if header.get("description"):
        check_text(header["description"], where=where, what="description")
    notes = header.get("notes", [])
    if not isinstance(notes, list):
        raise InputError(f"must be a list of strings, got {short_repr(notes)}", where=where, field="notes")
    for i, note in enumerate(notes):
        check_text(note, where=where, what=f"notes[{i}]")
    check_seed_list(header.get("seed_list", ()), where=where)
    for name, kind in (("format", int), ("count", int), ("hash", str)):
        value = header.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise InputError(f"must be {'an integer' if kind is int else 'a string'}, got {short_repr(value)}",
                             where=where, field=name)
    if header.get("format", FORMAT_VERSION) != FORMAT_VERSION:
        raise InputError(f"format {header['format']} is not {FORMAT_VERSION}, the one this version reads",
                         where=where, field="format")


def check_seed_list(seeds: object, *, where: str) -> tuple[int, ...]:
    """A suite's listed seeds: distinct integers in [0, 2^63 - 1], at most MAX_SEEDS of them."""
    if not isinstance(seeds, (list, tuple)):
        raise InputError(f"must be a list of integers, got {short_repr(seeds)}", where=where, field="seed_list")
    if len(seeds) > MAX_SEEDS:
        raise InputError(f"holds {len(seeds)} seeds; at most {MAX_SEEDS}", where=where, field="seed_list")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise InputError(f"seeds must be integers in [0, {MAX_SEED}], got {short_repr(seed)}", where=where,
                             field="seed_list")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"seeds must be distinct, got {short_repr(list(seeds))}", where=where, field="seed_list")
    return tuple(seeds)


def _numbered_lines(text: str) -> Iterable[tuple[int, str]]:
    # JSONL lines end at "\n" only: splitlines() would also split inside a string at U+2028 etc.
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield number, line


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _name_from_path(path: Path) -> str:
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in path.stem).strip(".-") or "suite"
    return stem


def resolve_suite(name_or_path: str, *, download: bool = True) -> Suite:
    """A registered suite name (`eligen-bench ls`) or the path of a suite JSONL file.

    `download=False` (a dry run) is passed to a loader that takes it: such a loader reads
    local files only, and says what to fetch when they are missing.
    """
    path = Path(name_or_path)
    if path.suffix == ".jsonl" or path.exists():
        return read_suite(path)
    import inspect

    from eligen_bench import registry

    loader = registry.get("suite", name_or_path)
    takes_download = "download" in inspect.signature(loader).parameters
    suite = loader(download=download) if takes_download and not download else loader()
    if not isinstance(suite, Suite):
        raise registry.PluginError(f"suite {name_or_path!r} gave a {type(suite).__name__}, not a Suite")
    return suite
