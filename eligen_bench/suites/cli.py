"""`eligen-bench suite build coco|mig-bench|layoutsam|instdiff-bench`: build a suite file from its published sources."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from eligen_bench.arguments import int_range, number_range
from eligen_bench.layout import MAX_SIDE, MIN_SIDE

PRESETS = ("things", "layoutdiffusion", "eligen")
MAX_OBJECTS = 10_000
"""Bound of the object and entity counts (a COCO image holds at most a few hundred objects)."""


def add_build_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the `coco` and `mig-bench` builders; each sets `func(args) -> exit code`."""
    coco = subparsers.add_parser(
        "coco",
        help="filtered COCO 2017 val (LostGAN/LayoutDiffusion rules)",
        description="Build the filtered COCO 2017 val suite from the official annotation files.",
    )
    coco.add_argument("--annotations", type=Path, help="folder with instances_val2017.json and "
                      "captions_val2017.json (default: download the official zip to the cache)")
    coco.add_argument("--out", type=Path, required=True, help="suite file to write (.jsonl)")
    coco.add_argument("--preset", choices=PRESETS, default="things",
                      help="things: no stuff file; layoutdiffusion: things+stuff (3097 reported); "
                      "eligen: stuff counts, things are entities (2830 reported); both paper "
                      "presets give boxes only")
    coco.add_argument("--stuff", type=Path, help="stuff_val2017.json; implies stuff is counted")
    coco.add_argument("--min-area", type=number_range(0, 1), help="box area fraction an object must exceed (0.02)")
    coco.add_argument("--min-objects", type=int_range(0, MAX_OBJECTS), help="fewest objects an image may keep (3)")
    coco.add_argument("--max-objects", type=int_range(0, MAX_OBJECTS), help="most objects an image may keep (8)")
    coco.add_argument("--min-entities", type=int_range(0, MAX_OBJECTS), help="drop layouts with fewer entities")
    coco.add_argument("--keep-crowd", action="store_true", help="keep iscrowd objects")
    coco.add_argument("--drop-crowd-images", action="store_true", help="drop images with any crowd object")
    coco.add_argument("--include-other", action="store_true", help="keep the stuff class 'other'")
    coco.add_argument("--count-before-area", action="store_true",
                      help="apply the object-count rule before the area filter")
    coco.add_argument("--caption", choices=("first", "shortest", "longest"), default="first",
                      help="which COCO caption is the global prompt (first = lowest annotation id)")
    masks = coco.add_mutually_exclusive_group()
    masks.add_argument("--masks", action="store_true", help="keep COCO segmentations as entity masks "
                       "(the arbitrary-mask track; the eligen and layoutdiffusion presets give boxes only)")
    masks.add_argument("--no-masks", action="store_true", help="do not keep COCO segmentations as masks")
    coco.add_argument("--name", default="coco2017val", help="suite name")
    coco.set_defaults(func=build_coco_command)

    mig = subparsers.add_parser(
        "mig-bench",
        help="MIG-Bench (COCO-MIG) prompts and layouts",
        description="Build the MIG-Bench suite from mig_bench.txt and mig_bench_anno.yaml.",
    )
    mig.add_argument("--dir", type=Path, help="folder with the two files (default: download "
                     "them from the official repository to the cache)")
    mig.add_argument("--out", type=Path, required=True, help="suite file to write (.jsonl)")
    mig.add_argument("--size", type=int_range(MIN_SIDE, MAX_SIDE), default=512,
                     help=f"layout width and height in pixels, {MIN_SIDE} to {MAX_SIDE} (512)")
    mig.set_defaults(func=build_mig_bench_command)

    lsam = subparsers.add_parser(
        "layoutsam",
        help="LayoutSAM-Eval (CreatiLayout): 5,000 open-set layouts with region and detail captions",
        description="Build the LayoutSAM-Eval suite from the hub dataset HuiZhang0812/LayoutSAM-eval "
                    "(split test, pinned commit), or ContextGen's 1K subset of it.",
    )
    lsam.add_argument("--dir", type=Path, help="folder with the test-NNNNN-of-00012.parquet files (or a "
                      "data/ folder of them; a SHA256SUMS from a verified download is checked) (default: "
                      "download them from the hub to the cache, 5.6 GB)")
    lsam.add_argument("--preset", choices=("full", "contextgen-1k"), default="full",
                      help="full: all 5,000 records; contextgen-1k: the rows of ContextGen's layoutsam_sampled.json")
    lsam.add_argument("--contextgen-pack", type=Path, help="ContextGen's layoutsam_reference_pack.tar.gz "
                      "(checked against its pinned sha256) or the layoutsam_sampled.json from it "
                      "(default: download the pack to the cache, 278 MB)")
    lsam.add_argument("--out", type=Path, required=True, help="suite file to write (.jsonl)")
    lsam.set_defaults(func=build_layoutsam_command)

    inst = subparsers.add_parser(
        "instdiff-bench",
        help="InstDiff-Bench: COCO 2017 val with a colour or texture per instance (DEIG Table 3)",
        description="Build InstDiff-Bench as InstanceDiffusion's eval_local.py builds its inputs.",
    )
    inst.add_argument("--annotations", type=Path, help="folder with instances_val2017.json and "
                      "captions_val2017.json (default: download the official zip to the cache)")
    inst.add_argument("--out", type=Path, required=True, help="suite file to write (.jsonl)")
    inst.add_argument("--attribute", choices=("color", "texture", "none"), default="color",
                      help="color / texture: the attribute-binding suites; none: the class names alone "
                      "(the suite the AP column is scored on)")
    inst.add_argument("--no-captions", action="store_true",
                      help="global prompt without the COCO caption (the reference passes --use_captions)")
    inst.add_argument("--max-objects", type=int, default=30, help="instances placed per image (30)")
    inst.add_argument("--size", type=int, default=512, help="layout width and height in pixels (512)")
    inst.add_argument("--masks", action="store_true", help="keep COCO segmentations as instance masks")
    inst.add_argument("--name", help="suite name (default instdiff-bench[-color|-texture])")
    inst.set_defaults(func=build_instdiff_command)


def coco_options(args: argparse.Namespace):
    """The `CocoFilter` the command-line arguments ask for."""
    from eligen_bench.suites.coco import CocoFilter

    preset = {"things": CocoFilter.things_only, "layoutdiffusion": CocoFilter.layoutdiffusion,
              "eligen": CocoFilter.eligen}[args.preset]()
    changes: dict = {"caption": args.caption}
    if args.stuff is not None:
        changes["include_stuff"] = True
    for flag, field in (("min_area", "min_object_area"), ("min_objects", "min_objects"),
                        ("max_objects", "max_objects"), ("min_entities", "min_entities")):
        if getattr(args, flag) is not None:
            changes[field] = getattr(args, flag)
    if args.keep_crowd:
        changes["drop_crowd"] = False
    if args.drop_crowd_images:
        changes["drop_crowd_images"] = True
    if args.include_other:
        changes["drop_other"] = False
    if args.count_before_area:
        changes["count_before_area_filter"] = True
    if args.no_masks:
        changes["masks"] = False
    if args.masks:
        changes["masks"] = True
    return replace(preset, **changes)


def build_coco_command(args: argparse.Namespace) -> int:
    from eligen_bench.suites.coco import build_coco_suite, crowd_free_count
    from eligen_bench.suites.coco_download import download_annotations, source_notes
    from eligen_bench.suites.fetch import default_cache_dir

    options = coco_options(args)
    annotations = args.annotations
    if annotations is None:
        annotations = download_annotations(default_cache_dir("coco"), stuff=options.include_stuff and args.stuff is None)
    suite = build_coco_suite(annotations, options, stuff_file=args.stuff, name=args.name,
                             source_notes=tuple(source_notes(annotations)))
    suite.write(args.out)
    _report(suite, args.out)
    other = crowd_free_count(suite)
    if other is not None:
        # The published counts (2830, 3097) do not say which crowd rule made them: show both.
        print(f"  with every image holding a crowd object dropped (--drop-crowd-images): {other} layouts")
    return 0


def build_mig_bench_command(args: argparse.Namespace) -> int:
    from eligen_bench.suites.mig_bench import download_mig_bench, load_mig_bench

    directory = args.dir if args.dir is not None else download_mig_bench()
    suite = load_mig_bench(directory, width=args.size, height=args.size)
    suite.write(args.out)
    _report(suite, args.out)
    return 0


def build_layoutsam_command(args: argparse.Namespace) -> int:
    from eligen_bench.suites.layoutsam import build_layoutsam_suite, download_layoutsam_eval

    directory = args.dir if args.dir is not None else download_layoutsam_eval()
    suite = build_layoutsam_suite(directory, args.preset, args.contextgen_pack)
    suite.write(args.out)
    _report(suite, args.out)
    return 0


def build_instdiff_command(args: argparse.Namespace) -> int:
    from eligen_bench.suites.coco_download import download_annotations, source_notes
    from eligen_bench.suites.fetch import default_cache_dir
    from eligen_bench.suites.instdiff_bench import InstDiffOptions, build_instdiff_suite

    options = InstDiffOptions(attribute=args.attribute, captions=not args.no_captions,
                              max_objects=args.max_objects, size=args.size, masks=args.masks)
    annotations = args.annotations
    if annotations is None:
        annotations = download_annotations(default_cache_dir("coco"))
    suite = build_instdiff_suite(annotations, options, name=args.name,
                                 source_notes=tuple(source_notes(annotations)))
    suite.write(args.out)
    _report(suite, args.out)
    return 0


def _report(suite, out: Path) -> None:
    print(f"{suite.name}: {len(suite.layouts)} layouts, "
          f"{sum(len(layout.entities) for layout in suite.layouts)} entities, hash {suite.hash} -> {out}")
