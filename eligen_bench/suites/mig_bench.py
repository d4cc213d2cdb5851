"""MIG-Bench (COCO-MIG): 800 multi-instance prompts with coloured COCO objects and their boxes.

Read from the two published files of the MIGC repository: `mig_bench.txt` (one prompt a line,
"a photo of a <colour> <object> and a ...") and `mig_bench_anno.yaml` (prompt -> phrase -> list
of normalised xyxy boxes, plus `coco_id`). Although MIG-Bench layouts were sampled from COCO
2014 val, the published `coco_id` is not a COCO image id: it equals the prompt's line index
(0-799), so the layout's source is recorded as `mig-bench:<coco_id>`, not as a COCO image. The
files are not shipped (their licence is non-commercial research only): `download_mig_bench`
fetches them from the official repository at a pinned commit and checks their sha256.

A layout's entities follow the reference inference script, limuloo/MIGC@effd6cc:
inference_mig_benchmark.py:47-54: the annotation entry's phrases in the file's key order, each
phrase's boxes in list order (not the order the prompt mentions them; 678 of the 800 layouts
differ, and MIGC's output depends on the order). The same script seeds every prompt with 42
and makes one image each (inference_mig_benchmark.py:34-35, 57): the suite lists that seed,
so a run without `--seeds` / `--seed-list` follows it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from eligen_bench.coco_classes import COCO_THING_CLASSES
from eligen_bench.errors import InputError
from eligen_bench.layout import Entity, Layout
from eligen_bench.suite import Suite

MIGC_REPO = "limuloo/MIGC"
MIGC_COMMIT = "effd6cc"
PROMPTS_FILE = "mig_bench.txt"
ANNOTATIONS_FILE = "mig_bench_anno.yaml"
FILE_SHA256 = {
    PROMPTS_FILE: "868788f754abb94bc5a403ef7cbdcffb7f2b0c3bfc7a6120760669c62ac751ed",
    ANNOTATIONS_FILE: "25165519b657f7d0a8dedea5b05b6aaf8afdb043d9e9b30e3d4f57c60b467b76",
}
COLOURS = ("red", "green", "blue", "yellow", "black", "white", "brown")
"""The seven colours MIG-Bench assigns to instances."""
PREFIX = "a photo of "
DIR_ENV = "ELIGEN_BENCH_MIG_BENCH_DIR"
REFERENCE_SEEDS = (42,)
"""limuloo/MIGC@effd6cc: inference_mig_benchmark.py:34 (seed = 42), :35 (num_iter = 1), :57."""
BOX_TOLERANCE = 1e-3
"""Coordinates this far outside [0, 1] are rounding and get clamped; further out is an error."""


def file_url(name: str, commit: str = MIGC_COMMIT) -> str:
    return f"https://raw.githubusercontent.com/{MIGC_REPO}/{commit}/bench_file/{name}"


def offline_help(cache: Path | None = None) -> str:
    """What to do without the download: the files, where to get them, the option and variable."""
    cache = cache if cache is not None else default_cache()
    return (f"MIG-Bench needs {PROMPTS_FILE} and {ANNOTATIONS_FILE} from "
            f"https://github.com/{MIGC_REPO}/tree/{MIGC_COMMIT}/bench_file; put both in a folder and pass "
            f"it as `suite build mig-bench --dir DIR`, or set {DIR_ENV}=DIR for `--suite mig-bench` "
            f"(or copy them to the cache, {cache})")


def default_cache() -> Path:
    from eligen_bench.suites.fetch import default_cache_dir

    return default_cache_dir("mig_bench", MIGC_COMMIT)


def download_mig_bench(dest: Path | None = None) -> Path:
    """Fetch both files into `dest` (default: the cache) unless good copies are there."""
    from eligen_bench.suites.fetch import fetch

    dest = Path(dest) if dest is not None else default_cache()
    for name, digest in FILE_SHA256.items():
        # The pinned commit first; the default branch is a fallback that the sha256 pin guards.
        for ref in (MIGC_COMMIT, "main"):
            try:
                fetch(file_url(name, ref), dest / name, sha256=digest, offline_help=offline_help(dest))
                break
            except InputError:
                if ref == "main":
                    raise
    return dest


def load_default(download: bool = True) -> Suite:
    """Entry point `mig-bench`: the folder in $ELIGEN_BENCH_MIG_BENCH_DIR, else the cache
    (downloading the files there on first use; with `download=False`, as `--dry-run` asks, a
    cache without both files is an error that says where to get them)."""
    directory = os.environ.get(DIR_ENV)
    if directory:
        return load_mig_bench(Path(directory))
    cache = default_cache()
    if not download and not all((cache / name).is_file() for name in FILE_SHA256):
        raise InputError(f"the files are not here and a dry run downloads nothing; {offline_help(cache)}",
                         where="suite mig-bench")
    return load_mig_bench(cache if not download else download_mig_bench())


def load_mig_bench(directory: Path, *, width: int = 512, height: int = 512) -> Suite:
    """One layout per line of `mig_bench.txt`, in file order; id `mig-<line index>`.

    Layouts are 512x512 by default, the resolution MIG-Bench is evaluated at (boxes are
    normalised, so any size works).
    """
    directory = Path(directory)
    prompts = _read_prompts(directory / PROMPTS_FILE)
    annotations = _read_annotations(directory / ANNOTATIONS_FILE)
    layouts = []
    for index, prompt in enumerate(prompts):
        where = f"{PROMPTS_FILE}:{index + 1} ({prompt!r})"
        if prompt not in annotations:
            raise InputError(f"prompt has no entry in {ANNOTATIONS_FILE}", where=where)
        layouts.append(_layout(index, prompt, annotations[prompt], width, height, where))
    return Suite(
        name="mig-bench",
        version="2",
        layouts=tuple(layouts),
        description=f"MIG-Bench (COCO-MIG) from {MIGC_REPO}@{MIGC_COMMIT}: 800 prompts, 2-6 coloured instances",
        notes=(
            "licence of the source files: non-commercial research use only",
            "entity prompt = the coloured phrase ('a red carrot'); category = the COCO class",
            "source mig-bench:<coco_id>: the published coco_id is the prompt index, not a COCO image id",
            "entity order: the annotation file's phrases in key order, each phrase's boxes in order "
            f"({MIGC_REPO}@{MIGC_COMMIT}: inference_mig_benchmark.py:47-54)",
        ),
        seed_list=REFERENCE_SEEDS,
    )


def _read_prompts(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"MIG-Bench prompt file not found; {offline_help()}", where=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read ({exc})", where=str(path)) from None
    # The published file has no final newline; blank lines carry nothing.
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise InputError("no prompts", where=str(path))
    return prompts


def _read_annotations(path: Path) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError:
        raise InputError(f"MIG-Bench annotation file not found; {offline_help()}", where=str(path)) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read ({exc})", where=str(path)) from None
    if not isinstance(data, dict):
        raise InputError("expected a mapping from prompt to phrases", where=str(path))
    return {str(k).strip(): v for k, v in data.items()}


def phrase_category(phrase: str, *, where: str) -> str:
    """'a black cell phone' -> 'cell phone': drop the article and the colour; must be a COCO class."""
    words = phrase.split()
    if words and words[0] in ("a", "an"):
        words = words[1:]
    if len(words) < 2 or words[0] not in COLOURS:
        raise InputError(f"phrase {phrase!r} is not '<a|an> <colour> <object>'", where=where)
    noun = " ".join(words[1:])
    if noun not in COCO_THING_CLASSES:
        raise InputError(f"object {noun!r} of phrase {phrase!r} is not a COCO class name", where=where)
    return noun


def _layout(index: int, prompt: str, entry: Any, width: int, height: int, where: str) -> Layout:
    if not isinstance(entry, dict) or "coco_id" not in entry:
        raise InputError("annotation entry must map phrases to boxes and hold coco_id", where=where)
    phrases = _phrases(prompt, where)
    boxes = {str(k): v for k, v in entry.items() if k != "coco_id"}
    expected = {p: phrases.count(p) for p in phrases}
    got = {p: len(v) if isinstance(v, list) else -1 for p, v in boxes.items()}
    if expected != got:
        raise InputError(f"phrase counts in the prompt {expected} differ from the boxes {got}", where=where)
    # The reference script's order: phrases as the annotation file lists them, then each
    # phrase's boxes (limuloo/MIGC@effd6cc: inference_mig_benchmark.py:48-54).
    entities = []
    for phrase, raw_boxes in boxes.items():
        category = phrase_category(phrase, where=where)
        for k, raw in enumerate(raw_boxes):
            box = _box(raw, where=f"{where}, phrase {phrase!r} box {k + 1}")
            entities.append(Entity(prompt=phrase, bbox=box, category=category))
    return Layout(
        id=f"mig-{index}",
        prompt=prompt,
        entities=tuple(entities),
        width=width,
        height=height,
        source=f"mig-bench:{str(entry['coco_id']).strip()}",
    )


def _phrases(prompt: str, where: str) -> list[str]:
    if not prompt.startswith(PREFIX):
        raise InputError(f"prompt does not start with {PREFIX!r}", where=where)
    return [p.strip() for p in prompt[len(PREFIX):].split(" and ")]


def _box(raw: Any, *, where: str) -> tuple[float, float, float, float]:
    """Validate a normalised xyxy box; clamp rounding noise, reject anything else."""
    if not isinstance(raw, list) or len(raw) != 4:
        raise InputError(f"box must be 4 numbers, got {raw!r}", where=where)
    values = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"box must be finite numbers, got {raw!r}", where=where)
        if not -BOX_TOLERANCE <= v <= 1 + BOX_TOLERANCE:
            raise InputError(f"box {raw!r} is outside [0, 1]", where=where)
        values.append(min(max(float(v), 0.0), 1.0))
    x1, y1, x2, y2 = values
    if not (x1 < x2 and y1 < y2):
        raise InputError(f"box {raw!r} is empty or not xyxy", where=where)
    return (x1, y1, x2, y2)
