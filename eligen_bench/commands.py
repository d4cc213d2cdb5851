"""What each `eligen-bench` subcommand does (argument parsing lives in `cli`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from eligen_bench import registry
from eligen_bench.errors import InputError
from eligen_bench.metrics.base import Metric, ModelCache
from eligen_bench.plugins import make_generator, make_metric
from eligen_bench.registry import PluginError
from eligen_bench.rundir import RunDir
from eligen_bench.specs import parse_specs
from eligen_bench.stages.generate import (
    GenerationPlan,
    input_image,
    pending_requests,
    plan_generation,
    run_generation,
    seeds_for,
)
from eligen_bench.stages.score import collect_items, compile_scores, run_scoring, shard_plan
from eligen_bench.suite import Suite, read_suite, resolve_suite, validate_suite_file
from eligen_bench.truncation import record_truncation

log = logging.getLogger("eligen_bench")


# run / generate ----------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    plans, suite, run_dir = _prepare_generation(args)
    metrics = _make_metrics(args.metrics, profile=args.profile, device=args.device,
                            batch_size=args.metric_batch_size)
    if args.dry_run:
        _print_plan(run_dir, suite, plans, metrics)
        return 0
    _generate(args, plans, suite, run_dir)
    _score(run_dir, metrics, shard_size=args.shard_size, progress=not args.no_progress)
    return _report(run_dir, args)


def generate(args: argparse.Namespace) -> int:
    plans, suite, run_dir = _prepare_generation(args)
    if args.dry_run:
        _print_plan(run_dir, suite, plans, {})
        return 0
    _generate(args, plans, suite, run_dir)
    return 0


def _prepare_generation(args: argparse.Namespace) -> tuple[list[GenerationPlan], Suite, RunDir]:
    if args.seeds < 1:
        raise InputError(f"must be at least 1, got {args.seeds}", field="--seeds")
    suite = resolve_suite(args.suite).subset(args.limit)
    specs = parse_specs(args.generators or _defaults("generator"), kind="generator")
    if not specs:
        raise InputError("no generator given or registered", field="--generators")
    generators = {s.label: make_generator(s, profile=args.profile, device=args.device) for s in specs}
    plans = plan_generation(suite, generators, args.seeds, args.base_seed)
    out = args.out or Path("results") / "runs" / f"{suite.name}-{args.profile}"
    return plans, suite, RunDir(out)


def _defaults(kind: str) -> str:
    """Every registered plugin that takes part in a default run (a broken one is reported)."""
    return ",".join(name for name, entry in registry.entries(kind).items()
                    if getattr(entry.load(), "in_default_run", True))


def _generation_config(args: argparse.Namespace, suite: Suite, plans: list[GenerationPlan]) -> dict[str, Any]:
    return {
        "suite": {k: v for k, v in suite.header().items() if k != "format"},
        "generators": {p.label: p.generator.identity() for p in plans},
        "seeds": args.seeds,
        "base_seed": args.base_seed,
        "profile": args.profile,
    }


def _generate(args: argparse.Namespace, plans: list[GenerationPlan], suite: Suite, run_dir: RunDir) -> None:
    from eligen_bench.tiny import TINY_WARNING

    manifest = run_dir.open_for(_generation_config(args, suite, plans), allow_mixed=args.allow_mixed)
    if not run_dir.suite_path.exists() or read_suite(run_dir.suite_path).hash != suite.hash:
        suite.write(run_dir.suite_path)
    manifest["profile"] = args.profile
    manifest["seeds"] = seeds_for(suite, args.seeds, args.base_seed)
    manifest["adapt_notes"] = {p.label: p.notes for p in plans}
    manifest["inputs"] = {r.layout.id: {"path": r.init_image, "sha256": r.init_image_sha256}
                          for plan in plans for r in plan.requests if r.init_image is not None}
    manifest["warnings"] = [TINY_WARNING] if args.profile == "tiny" else []
    manifest["warnings"] += [f"suite note: {note}" for note in suite.notes]
    run_dir.write_manifest(manifest)
    try:
        summary = run_generation(run_dir, plans, batch_size=args.batch_size, progress=not args.no_progress)
    finally:  # what was encoded so far, even when the run stops
        record_truncation(run_dir, plans)
    for label, counts in summary.items():
        log.info("%s: %d made, %d kept", label, counts["made"], counts["kept"])


# score ---------------------------------------------------------------------------
def score(args: argparse.Namespace) -> int:
    run_dir = RunDir(args.out)
    manifest = run_dir.require_manifest()
    profile = args.profile or manifest.get("profile", "full")
    metrics = _make_metrics(args.metrics, profile=profile, device=args.device, batch_size=args.metric_batch_size)
    _score(run_dir, metrics, shard_size=args.shard_size, progress=not args.no_progress)
    return 0


def _make_metrics(text: str | None, *, profile: str, device: str | None, batch_size: int) -> dict[str, Metric]:
    specs = parse_specs(text or _defaults("metric"), kind="metric")
    cache = ModelCache()  # one per run: metrics on the same backbone share it
    return {s.label: make_metric(s, profile=profile, device=device, cache=cache, batch_size=batch_size)
            for s in specs}


def _score(run_dir: RunDir, metrics: dict[str, Metric], *, shard_size: int, progress: bool) -> None:
    manifest = run_dir.require_manifest()
    suite = read_suite(run_dir.suite_path)
    items = collect_items(run_dir, suite, list(manifest["config"]["generators"]), manifest["seeds"],
                          manifest.get("inputs"))
    records = {
        **manifest["config"].get("metrics", {}),
        **{label: _metric_record(m, shard_size) for label, m in metrics.items()},
    }
    manifest["config"]["metrics"] = records
    run_dir.write_manifest(manifest)
    run_scoring(run_dir, metrics, items, shard_size=shard_size, progress=progress)
    # The table holds every metric scored into this folder, each with its current identity.
    shards = [path for record in records.values()
              for path, _ in shard_plan(run_dir, record["key"], items, record["shard_size"]) if path.exists()]
    table = compile_scores(run_dir, shards)
    log.info("scores: %d rows in %s", len(table), run_dir.scores_path)


def _metric_record(metric: Metric, shard_size: int) -> dict[str, Any]:
    return {
        "shard_size": shard_size,
        "name": metric.name,
        "options": dict(metric.options),
        "identity": metric.identity(),
        "key": metric.key,
        "higher_is_better": metric.higher_is_better,
        "level": metric.level,
        "scale": metric.scale,
    }


# report ----------------------------------------------------------------------------
def report(args: argparse.Namespace) -> int:
    run_dir = RunDir(args.out)
    run_dir.require_manifest()
    return _report(run_dir, args)


def _report(run_dir: RunDir, args: argparse.Namespace) -> int:
    """Write the report; 1 when --fail-on-regression finds a regression against --compare runs."""
    from eligen_bench.report import build_report, save_report
    from eligen_bench.report.compare import regressions

    if not run_dir.scores_path.exists():
        raise InputError("no scores.parquet: run `eligen-bench score` first", where=str(run_dir.root))
    for other in args.compare:
        RunDir(other).require_manifest()
    from eligen_bench.console import print_summary

    report = build_report(run_dir.root, reference_csv=args.reference, others=args.compare)
    print_summary(report, save_report(report))
    if not args.fail_on_regression or report.deltas is None:
        return 0
    worse = regressions(report.deltas, report.run.metrics)
    for row in worse.itertuples(index=False):
        print(f"regression: {row.generator} {row.metric} {row.this:.4g} vs {row.other_mean:.4g} in {row.other} "
              f"(interval [{row.ci_low:.4g}, {row.ci_high:.4g}])")
    return 1 if len(worse) else 0


# ls / validate / suite -----------------------------------------------------------------
def ls(args: argparse.Namespace) -> int:
    for kind in ("suite", "generator", "metric"):
        print(f"{kind}s:")
        for name, entry in registry.entries(kind).items():
            try:
                print(f"  {name:<18} {_describe(kind, entry.load())}")
            except PluginError as exc:
                print(f"  {name:<18} BROKEN: {exc}")
    return 0


def _describe(kind: str, obj: Any) -> str:
    if kind == "generator":
        caps = obj.capabilities.to_dict()
        flags = [k for k in ("boxes", "masks", "inpainting") if caps[k]]
        limit = caps["max_entities"] if caps["max_entities"] is not None else "any"
        return f"{'+'.join(flags) or 'text only'}; entities {limit}; {caps['resolution'][0]}x{caps['resolution'][1]}  {obj.description}"
    if kind == "metric":
        direction = "higher is better" if obj.higher_is_better else "lower is better"
        return f"per {obj.level}; {direction}  {obj.description}"
    return getattr(obj, "__doc__", "") and obj.__doc__.strip().splitlines()[0] or ""


def validate(args: argparse.Namespace) -> int:
    suite, problems = validate_suite_file(args.suite_file)
    for layout in suite.layouts if suite is not None else ():
        if layout.init_image is not None:
            try:
                input_image(suite, layout)
            except InputError as exc:
                problems.append(exc)
    if suite is not None and args.generators:
        for spec in parse_specs(args.generators, kind="generator"):
            generator = make_generator(spec, profile="tiny", device="cpu")
            for layout in suite.layouts:
                try:
                    generator.adapt(layout)
                except InputError as exc:
                    problems.append(InputError(f"{exc} [{spec.label}]"))
    for problem in problems:
        print(f"error: {problem}")
    if problems:
        print(f"{len(problems)} problem(s) in {args.suite_file}")
        return 2
    assert suite is not None
    print(f"ok: suite {suite.name!r} version {suite.version}, {len(suite.layouts)} layouts, hash {suite.hash}")
    return 0


def suite_show(args: argparse.Namespace) -> int:
    suite = resolve_suite(args.suite)
    header = suite.header()
    counts: dict[int, int] = {}
    for layout in suite.layouts:
        counts[len(layout.entities)] = counts.get(len(layout.entities), 0) + 1
    for key in ("suite", "version", "count", "hash", "description"):
        print(f"{key}: {header[key]}")
    for note in suite.notes:
        print(f"note: {note}")
    print("layouts by entity count: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return 0


def _print_plan(run_dir: RunDir, suite: Suite, plans: list[GenerationPlan], metrics: dict[str, Metric]) -> None:
    print(f"run folder: {run_dir.root}")
    print(f"suite: {suite.name} v{suite.version}, {len(suite.layouts)} layouts, hash {suite.hash}")
    for plan in plans:
        todo = len(pending_requests(run_dir, plan))
        print(f"generator {plan.label}: {len(plan.requests)} images ({todo} to make); "
              f"settings {plan.generator.settings}")
        for note, count in plan.notes.items():
            print(f"  note: {note} ({count} layouts)")
    for label, metric in metrics.items():
        print(f"metric {label}: key {metric.key}; models {metric.model_ids()}")

