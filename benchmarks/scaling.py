"""Items per second of the local executor vs Ray with 1 and 2 workers, and the harness overhead.

    python benchmarks/scaling.py [--images 96] [--cost 0.1] [--metric-cost 0.1] [--shard-size 8]

A generator that sleeps `--cost` seconds per image and a metric that sleeps `--metric-cost`
per image stand in for the models: this measures the harness (planning, queueing, Ray round
trips, PNG and parquet writes, key checks), not the machine's cores. Every configuration makes
the same images into a fresh run folder through the stages' own code (`run_generation`,
`run_scoring`) in one process, the configurations interleaved: each of `--rounds` rounds runs
local, Ray with 1 worker and Ray with 2 workers in turn, so load from other processes that comes
and goes falls on a round's configurations alike. Figures are medians over rounds; "vs local"
and "vs 1 worker" are the medians of the per-round ratios of items/s, with their range; the
load average is printed before and after.

Each generator and metric call appends its start and end time to a file, in whatever process
it runs. Per stage and configuration:
- items/s: items / (last call end - first call start), the steady rate once workers have
  loaded (a Ray worker's start-up is reported apart, in `start s`);
- overhead: (workers x that span - time inside generator or metric calls) / items, the time
  per item spent outside the model calls, in ms and as a share of the item's time.
Targets: overhead under 5% of item time; 2 Ray workers >= 1.7x one Ray worker.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_common import load_average, ratio_summary, round_ratios

from eligen_bench.api.generator import Capabilities, Generator
from eligen_bench.api.metric import Metric, ScoreItem, ScoreRow, row
from eligen_bench.requests import GenerationRequest


def _log_call(path: str, start: float) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{start} {time.time()}\n")


class SleepingGenerator(Generator):
    """A flat grey image after `cost` seconds, recording each call's times in `calls`."""

    name = "sleeping"
    capabilities = Capabilities(boxes=True, max_entities=None, resolution=(64, 64))
    defaults = {"cost": 0.1, "calls": ""}

    def load(self) -> None:
        return None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Any]:
        from PIL import Image

        start = time.time()
        time.sleep(float(self.settings["cost"]) * len(requests))
        images = [Image.new("RGB", (64, 64), (r.seed % 256, 128, 128)) for r in requests]
        _log_call(self.settings["calls"], start)
        return images


class SleepingMetric(Metric):
    """One row per image after `cost` seconds each, recording each call's times in `calls`."""

    name = "sleeping"
    level = "image"
    defaults = {"cost": 0.05, "calls": ""}

    def load(self) -> Any:
        return "no model"

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreRow]:
        start = time.time()
        time.sleep(float(self.options["cost"]) * len(items))
        rows = [row(self, item, float(item.seed % 7)) for item in items]
        _log_call(self.options["calls"], start)
        return rows


def suite(images: int) -> Any:
    from eligen_bench.layout import Entity, Layout
    from eligen_bench.suite import Suite

    entity = Entity("a box", (0.1, 0.1, 0.5, 0.5))
    return Suite("scaling", "1", tuple(Layout(f"l{i}", f"scene {i}", (entity,), 64, 64) for i in range(images)), "")


def measure(executor: Any, workers: int, args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    from eligen_bench.rundir import RunDir
    from eligen_bench.stages.generate import plan_generation, run_generation
    from eligen_bench.stages.score import collect_items, run_scoring

    run = RunDir(folder / "run")
    gen_calls, metric_calls = folder / "generate.txt", folder / "score.txt"
    the_suite = suite(args.images)
    generator = SleepingGenerator(profile="tiny", device="cpu", cost=args.cost, calls=str(gen_calls))
    plans = plan_generation(the_suite, {"sleeping": generator}, 1, 0)
    began = time.time()
    run_generation(run, plans, progress=False, executor=executor)
    generated = time.time()
    seeds = {layout.id: [r.seed] for layout, r in zip(the_suite.layouts, plans[0].requests, strict=True)}
    items = collect_items(run, the_suite, ["sleeping"], seeds)
    metric = SleepingMetric(profile="tiny", device="cpu", cost=args.metric_cost, calls=str(metric_calls))
    run_scoring(run, {"sleeping": metric}, items, shard_size=args.shard_size, progress=False, executor=executor)
    scored = time.time()
    return [summarise("generate", gen_calls, args.images, workers, generated - began, began),
            summarise("score", metric_calls, args.images, workers, scored - generated, generated)]


def summarise(stage: str, calls: Path, items: int, workers: int, wall: float, began: float) -> dict[str, Any]:
    spans = [tuple(map(float, line.split())) for line in calls.read_text().splitlines()]
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    inside = sum(e - s for s, e in spans)
    overhead = (workers * (last - first) - inside) / items
    return {"stage": stage, "wall": wall, "start": first - began, "rate": items / (last - first),
            "overhead_ms": 1000 * overhead, "overhead_share": overhead / (inside / items + overhead)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--cost", type=float, default=0.1, help="generator seconds per image")
    parser.add_argument("--metric-cost", type=float, default=0.1, help="metric seconds per image")
    parser.add_argument("--shard-size", type=int, default=8, help="images per score shard")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each running every configuration once")
    args = parser.parse_args()
    print(f"before: {load_average()}", flush=True)

    import ray

    from eligen_bench.executors.local import LocalExecutor
    from eligen_bench.executors.ray import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
    configs = [("local", 1, lambda: LocalExecutor()),
               ("ray", 1, lambda: RayExecutor(workers=1)),
               ("ray", 2, lambda: RayExecutor(workers=2))]
    results = []
    for round_ in range(args.rounds):
        for name, workers, make in configs:
            with tempfile.TemporaryDirectory() as folder:
                for record in measure(make(), workers, args, Path(folder)):
                    results.append({"round": round_, "executor": name, "workers": workers, **record})
    ray.shutdown()
    print_table(results, args)
    print(f"after: {load_average()}")


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"{args.images} images; generator {1000 * args.cost:.0f} ms/image, metric "
          f"{1000 * args.metric_cost:.0f} ms/image, score shards of {args.shard_size}; median of "
          f"{args.rounds} interleaved rounds, ratios: median [min-max] of the per-round ratios")
    print("| stage | executor | workers | wall s | start s | items/s | vs local | vs 1 worker "
          "| overhead ms/item | overhead % |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    configs = list(dict.fromkeys((r["stage"], r["executor"], r["workers"]) for r in results))
    configs.sort(key=lambda c: c[0] != "generate")  # generate rows first, as the stages run

    def runs(stage: str, executor: str, workers: int) -> list[dict[str, Any]]:
        return [r for r in results if (r["stage"], r["executor"], r["workers"]) == (stage, executor, workers)]

    for stage, executor, workers in configs:
        mine = runs(stage, executor, workers)
        rates = [r["rate"] for r in mine]
        vs_local = round_ratios(rates, [r["rate"] for r in runs(stage, "local", 1)])
        vs_one = round_ratios(rates, [r["rate"] for r in runs(stage, executor, 1)])

        def med(key: str, rows: list[dict[str, Any]] = mine) -> float:
            return statistics.median(r[key] for r in rows)

        print(f"| {stage} | {executor} | {workers} | {med('wall'):.2f} | {med('start'):.2f} "
              f"| {med('rate'):.2f} | {ratio_summary(vs_local)}x | {ratio_summary(vs_one)}x "
              f"| {med('overhead_ms'):.2f} | {100 * med('overhead_share'):.1f} |")


if __name__ == "__main__":
    main()
