"""Throughput of every registered metric, batched vs one image at a time, side by side.

    python benchmarks/metrics_throughput.py [--images 16] [--size 512] [--batch-size 8]
        [--metrics miou,clip_entity] [--profile tiny] [--device cpu] [--repeats 3]

Each metric is built once from the registry (``eligen_bench.registry.entries('metric')``) with the
given profile (``tiny``: random-weight models, no download) and its load time is reported. Then
each timed run scores the same synthetic images (random RGB PNGs at ``--size`` px, on a few
layouts with 1-4 entities, COCO and non-COCO categories, one with a mask) through
``Metric.score`` with ``batch_size=--batch-size`` ("batched") or ``batch_size=1``
("one by one"). Every timed run gets a fresh ``ModelCache`` with the loaded model injected, so no
run reuses another's memoised embeddings, and starts after one warm-up call on a separate image
and layout. The two modes alternate in one process, ``--repeats`` rounds of one batched and one
one-by-one run, so load from other processes that comes and goes falls on both alike; the table
gives the median images/s and the median of the per-round speed-ups with their range, and the
load average is printed before and after.
Image decoding is part of the time, as it is in a real scoring run. ``mig_bench`` runs with
``iou_threshold=0`` (``TIMING_OPTIONS``) so that every detected instance also goes through SAM
and the colour test, the protocol's slowest path (random images rarely place a box).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import interleaved, load_average, ratio_summary, round_ratios

TIMING_OPTIONS: dict[str, dict[str, Any]] = {"mig_bench": {"iou_threshold": 0.0}}
"""Options that make a metric take its slowest path on random images (timing only)."""


def make_layouts() -> list[Any]:
    import numpy as np

    from eligen_bench.layout import Entity, Layout, Mask

    mask = np.zeros((64, 64), dtype=bool)
    mask[10:50, 8:40] = True
    return [
        Layout("one", "a dog on a sofa", (Entity("a brown dog", (0.2, 0.3, 0.7, 0.9), category="dog"),),
               width=64, height=64),
        Layout("two", "a person holding an umbrella in the rain", (
            Entity("a person in a coat", (0.1, 0.1, 0.5, 1.0), category="person", mask=Mask.from_array(mask)),
            Entity("a red umbrella", (0.3, 0.0, 0.9, 0.4), category="umbrella"),
        ), width=64, height=64),
        Layout("three", "breakfast on a wooden table", (
            Entity("a cup of coffee", (0.05, 0.5, 0.3, 0.8), category="cup"),
            Entity("a croissant", (0.4, 0.5, 0.7, 0.8)),
            Entity("a wooden table", (0.0, 0.4, 1.0, 1.0), category="dining table"),
        ), width=64, height=64),
        Layout("four", "a street with cars under a blue sky", (
            Entity("a blue sky", (0.0, 0.0, 1.0, 0.3), category="sky"),
            Entity("a red car", (0.05, 0.5, 0.45, 0.8), category="car"),
            Entity("a white van", (0.5, 0.45, 0.95, 0.85), category="truck"),
            Entity("a traffic light", (0.45, 0.1, 0.55, 0.45), category="traffic light"),
        ), width=64, height=64),
    ]


def make_items(folder: Path, count: int, size: int, seed: int) -> list[Any]:
    import numpy as np
    from PIL import Image

    from eligen_bench.api.metric import ScoreItem
    from eligen_bench.hashing import file_sha256

    rng = np.random.default_rng(seed)
    layouts = make_layouts()
    items = []
    for k in range(count):
        path = folder / f"img_{seed}_{k}.png"
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
        items.append(ScoreItem("synthetic", layouts[k % len(layouts)], k, seed + k, path, file_sha256(path)))
    return items


def warmup_item(folder: Path, size: int) -> Any:
    from dataclasses import replace

    from eligen_bench.layout import Entity, Layout

    item = make_items(folder, 1, size, seed=999)[0]
    layout = Layout("warmup", "a warm-up scene", (Entity("a black cat", (0.1, 0.1, 0.6, 0.6), category="cat"),),
                    width=64, height=64)
    return replace(item, layout=layout)


def time_run(cls: type, model: Any, items: list, warm: Any, batch_size: int, args: argparse.Namespace) -> float:
    """Images per second of one scoring pass on a fresh cache (after one warm-up call)."""
    from eligen_bench.api.metric import ModelCache

    metric = cls(profile=args.profile, device=args.device, cache=ModelCache(), batch_size=batch_size, model=model,
                 **TIMING_OPTIONS.get(cls.name, {}))
    metric.score([warm])
    start = time.perf_counter()
    metric.score(items)
    return len(items) / (time.perf_counter() - start)


def bench_metric(name: str, entry: Any, items: list, warm: Any, args: argparse.Namespace) -> dict[str, Any]:
    from eligen_bench.api.metric import ModelCache

    cls = entry.load()
    start = time.perf_counter()
    metric = cls(profile=args.profile, device=args.device, cache=ModelCache(), batch_size=args.batch_size,
                 **TIMING_OPTIONS.get(cls.name, {}))
    metric.ensure_loaded()
    load_s = time.perf_counter() - start
    speeds = interleaved({"batched": lambda: time_run(cls, metric.model, items, warm, args.batch_size, args),
                          "single": lambda: time_run(cls, metric.model, items, warm, 1, args)},
                         args.repeats, warmup=0)  # every timed run starts after its own warm-up call
    return {"name": name, "level": cls.level, "load_s": load_s,
            "speedup": ratio_summary(round_ratios(speeds["batched"], speeds["single"])),
            **{mode: statistics.median(values) for mode, values in speeds.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--metrics", default="", help="comma-separated names (default: all registered)")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    from eligen_bench.registry import entries

    registered = entries("metric")
    wanted = [m for m in args.metrics.split(",") if m] or list(registered)
    print(f"{args.images} images of {args.size}x{args.size}, batch size {args.batch_size}, profile "
          f"{args.profile}, device {args.device}, torch threads {torch.get_num_threads()}, "
          f"{args.repeats} alternating rounds; {load_average()}", flush=True)
    print("| metric | level | load (s) | batched (img/s) | one by one (img/s) "
          "| batched / one by one: median [range] of rounds |")
    print("|---|---|---|---|---|---|", flush=True)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        items = make_items(folder, args.images, args.size, seed=0)
        warm = warmup_item(folder, args.size)
        for name in wanted:
            if name not in registered:
                print(f"| {name} | - | not registered | | | |", flush=True)
                failed += 1
                continue
            try:
                r = bench_metric(name, registered[name], items, warm, args)
            except Exception as exc:  # one broken metric must not hide the others' numbers
                print(f"| {name} | - | failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]} | | | |", flush=True)
                failed += 1
                continue
            print(f"| {r['name']} | {r['level']} | {r['load_s']:.1f} | {r['batched']:.2f} | {r['single']:.2f} | "
                  f"{r['speedup']}x |", flush=True)
    print(f"after: {load_average()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
