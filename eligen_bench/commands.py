"""What each `eligen-bench` subcommand does (argument parsing lives in `cli`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from eligen_bench import registry
from eligen_bench.api.metric import Metric, ModelCache, ScoreItem
from eligen_bench.atomic import check_writable
from eligen_bench.config import RunConfig
from eligen_bench.configurations import generator_record, generator_title, ordered, parse_names
from eligen_bench.errors import InputError
from eligen_bench.executors.base import Executor
from eligen_bench.executors.dispatch import make_executor, record_execution, wait_for_images
from eligen_bench.executors.shard import Shard, parse_shard
from eligen_bench.plugins import make_generator, make_metric
from eligen_bench.registry import PluginError
from eligen_bench.run_records import seed_table
from eligen_bench.rundir import RunDir
from eligen_bench.seeds import SeedPlan, resolve_seeds
from eligen_bench.specs import parse_specs
from eligen_bench.stages.generate import (
    GenerationPlan,
    input_image,
    pending_requests,
    plan_generation,
    run_generation,
    seeds_for,
)
from eligen_bench.stages.score import collect_items, compile_run_scores, run_scoring
from eligen_bench.status import SHOWN, run_status
from eligen_bench.suite import (
    Suite,
    check_suite_file,
    resolve_suite,
)
from eligen_bench.truncation import record_truncation

log = logging.getLogger("eligen_bench")


# run / generate ----------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    config = RunConfig.from_args(args)
    _check_report_args(config)
    shard = parse_shard(config.executor.shard)
    if config.wait_timeout is not None and shard is None:
        raise InputError("only applies with --shard (the wait for the other shards' images)", field="--wait-timeout")
    plans, suite, run_dir, seeds = _prepare_generation(config)
    metrics = _make_metrics(config.metrics, profile=config.profile, device=config.device,
                            batch_size=config.metric_batch_size)
    metric_names = parse_names(config.metric_names, metrics, option="--metric-names")
    check_gate_args(config)
    gate_options(config, metrics, [p.label for p in plans])
    report_options(config)
    existing = run_dir.read_manifest()
    check_metric_keys(metrics, existing["config"].get("metrics", {}) if existing else {})
    if config.dry_run:
        _print_plan(run_dir, suite, plans, metrics, seeds)
        return 0
    executor = make_executor(config.executor)
    _generate(config, plans, suite, run_dir, executor, shard, seeds)
    if shard is not None:
        wait_for_images(run_dir, shard, config.wait_timeout)  # the other shards' images: every metric shard needs all
    _score(run_dir, metrics, shard_size=config.shard_size, progress=config.progress, executor=executor,
           shard=shard, names=metric_names)
    with run_dir.locked():
        if shard is not None and not run_status(run_dir).complete:
            log.info("shard %s done; the last shard to finish writes the report (`eligen-bench status %s`)",
                     shard, run_dir.root)
            return 0
        return _report(run_dir, config)


def generate(args: argparse.Namespace) -> int:
    config = RunConfig.from_args(args)
    shard = parse_shard(config.executor.shard)
    plans, suite, run_dir, seeds = _prepare_generation(config)
    if config.dry_run:
        _print_plan(run_dir, suite, plans, {}, seeds)
        return 0
    _generate(config, plans, suite, run_dir, make_executor(config.executor), shard, seeds)
    return 0


def _prepare_generation(config: RunConfig) -> tuple[list[GenerationPlan], Suite, RunDir, SeedPlan]:
    """Check the folder and every input; nothing is written here."""
    if config.seeds is not None and config.seeds < 1:
        raise InputError(f"must be at least 1, got {config.seeds}", field="--seeds")
    if config.out is not None:
        RunDir(config.out).check_owned()  # a user's folder is refused before anything is read
    suite = resolve_suite(config.suite, download=not config.dry_run).subset(config.limit)
    if config.sample is not None:
        suite = suite.sample(config.sample, config.sample_seed)
    seeds = resolve_seeds(suite, seeds=config.seeds, base_seed=config.base_seed, seed_list=config.seed_list)
    specs = parse_specs(config.generators or _defaults("generator"), kind="generator")
    if not specs:
        raise InputError("no generator given or registered", field="--generators")
    parse_names(config.generator_names, [s.label for s in specs], option="--generator-names")
    profile = config.profile or "full"
    generators = {s.label: make_generator(s, profile=profile, device=config.device) for s in specs}
    plans = plan_generation(suite, generators, seeds)
    out = config.out or Path("results") / "runs" / f"{suite.name}-{profile}"
    if config.out is None:
        RunDir(out).check_owned()
    if not config.dry_run:
        check_writable(out, field="--out")
    return plans, suite, RunDir(out), seeds


def _defaults(kind: str) -> str:
    """Every registered plugin that takes part in a default run (a broken one is reported)."""
    return ",".join(name for name, entry in registry.entries(kind).items()
                    if getattr(entry.load(), "in_default_run", True))


def _generation_config(config: RunConfig, suite: Suite, plans: list[GenerationPlan],
                       seeds: SeedPlan) -> dict[str, Any]:
    return {
        "suite": {k: v for k, v in suite.header().items() if k != "format"},
        "generators": {p.label: p.generator.identity() for p in plans},
        **seeds.config(),
        "profile": config.profile,
    }


def _generate(config: RunConfig, plans: list[GenerationPlan], suite: Suite, run_dir: RunDir,
              executor: Executor, shard: Shard | None, seeds: SeedPlan) -> None:
    """The manifest under the run's lock, then the images outside it (several processes may
    make a run's images at once), then where they were made, under the lock again."""
    with run_dir.locked():
        _open_generation(config, plans, suite, run_dir, seeds)
    try:
        summary = run_generation(run_dir, plans, batch_size=config.batch_size, progress=config.progress,
                                 executor=executor, shard=shard)
    finally:  # what the generators found so far (truncated prompts, load notes), even when the run stops
        with run_dir.locked():
            record_truncation(run_dir, plans)
            _record_load_notes(run_dir, plans)
    with run_dir.locked():
        record_execution(run_dir, "generate", executor, shard)
        run_dir.remove_stale_temporaries()  # and the items' claim files, when nobody else is working
    for label, counts in summary.items():
        log.info("%s: %d made, %d kept", label, counts["made"], counts["kept"])


def _open_generation(config: RunConfig, plans: list[GenerationPlan], suite: Suite, run_dir: RunDir,
                     seeds: SeedPlan) -> None:
    from eligen_bench.tiny import TINY_WARNING

    manifest = run_dir.open_for(_generation_config(config, suite, plans, seeds), allow_mixed=config.allow_mixed)
    if not run_dir.holds(run_dir.suite_path) or run_dir.read_suite().hash != suite.hash:
        suite.write(run_dir.suite_path)
    manifest["profile"] = config.profile
    manifest["seeds"] = seeds_for(suite, seeds)
    manifest["seed_source"] = seeds.describe()
    # Generators this command does not name stay in the run (see RunDir.open_for), with their notes.
    manifest["adapt_notes"] = {**manifest.get("adapt_notes", {}), **{p.label: p.notes for p in plans}}
    manifest["inputs"] = {r.layout.id: {"path": r.init_image, "sha256": r.init_image_sha256}
                          for plan in plans for r in plan.requests if r.init_image is not None}
    # A suite's notes are facts about its layouts, not warnings: the report reads them from suite.jsonl.
    manifest["warnings"] = [TINY_WARNING] if config.profile == "tiny" else []
    manifest["references"] = {**manifest.get("references", {}),
                              **{p.label: p.generator.reference for p in plans}}
    _record_configurations(manifest, plans, parse_names(config.generator_names, [p.label for p in plans],
                                                        option="--generator-names"))
    if config.sample is not None:
        manifest["sample"] = {"layouts": len(suite.layouts), "seed": config.sample_seed, "by": "entity count",
                              "rule": "proportional, largest remainders; smallest sha256(seed/layout id)"}
    else:
        manifest.pop("sample", None)
    # Which entity text (short prompt or detailed description) each generator was given.
    manifest["entity_text"] = {**manifest.get("entity_text", {}),
                               **{p.label: p.generator.text_choice for p in plans}}
    # Options added after runs were made, at the value that keeps those runs' keys (not in the identity).
    manifest["added_options"] = {**manifest.get("added_options", {}),
                                 **{p.label: p.generator.unkeyed_settings() for p in plans}}
    run_dir.write_manifest(manifest)


def _record_configurations(manifest: dict[str, Any], plans: list[GenerationPlan], names: dict[str, str]) -> None:
    """Order, display names and what each label is (`eligen_bench.configurations`)."""
    order = manifest.setdefault("order", {})
    order["generators"] = ordered(order.get("generators", []), [p.label for p in plans])
    display = manifest.setdefault("display_names", {}).setdefault("generators", {})
    records = manifest.setdefault("configurations", {})
    for plan in plans:
        display[plan.label] = generator_title(plan.label, plan.generator, names)
        records[plan.label] = generator_record(plan.generator, display[plan.label], records.get(plan.label))


def _record_load_notes(run_dir: RunDir, plans: list[GenerationPlan]) -> None:
    """What loading found (e.g. the LoRA's module count) goes into the manifest; kept when nothing loaded."""
    notes = {p.label: p.generator.load_notes for p in plans if p.generator.load_notes}
    if notes:
        manifest = run_dir.require_manifest()
        manifest["load_notes"] = {**manifest.get("load_notes", {}), **notes}
        run_dir.write_manifest(manifest)


# score ---------------------------------------------------------------------------
def score(args: argparse.Namespace) -> int:
    config = RunConfig.from_args(args)
    run_dir = RunDir(config.out)
    manifest = run_dir.require_manifest()
    check_writable(run_dir.root, field="--out")
    profile = config.profile or manifest.get("profile", "full")
    metrics = _make_metrics(config.metrics, profile=profile, device=config.device,
                            batch_size=config.metric_batch_size)
    names = parse_names(config.metric_names, metrics, option="--metric-names")
    check_metric_keys(metrics, manifest["config"].get("metrics", {}))
    shard = parse_shard(config.executor.shard)
    _score(run_dir, metrics, shard_size=config.shard_size, progress=config.progress,
           executor=make_executor(config.executor), shard=shard, names=names)
    return 0


def _make_metrics(text: str | None, *, profile: str, device: str | None, batch_size: int) -> dict[str, Metric]:
    specs = parse_specs(text or _defaults("metric"), kind="metric")
    cache = ModelCache()  # one per run: metrics on the same backbone share it
    return {s.label: make_metric(s, profile=profile, device=device, cache=cache, batch_size=batch_size)
            for s in specs}


def check_metric_keys(metrics: dict[str, Metric], recorded: dict[str, Any]) -> None:
    """One metric (key) has one label in a run: two labels of one key would share its shards and
    give one label every row and the other none."""
    owners = {record.get("key"): label for label, record in recorded.items() if isinstance(record, dict)}
    for label, metric in metrics.items():
        owner = owners.get(metric.key)
        if owner is not None and owner != label:
            where = "given twice" if owner in metrics else "already in this run"
            raise InputError(f"metric {label!r} is the same metric as {owner!r} ({where}, key {metric.key}); "
                             f"ask for it once, as {owner!r}", field="--metrics")
        owners[metric.key] = label


def _score(run_dir: RunDir, metrics: dict[str, Metric], *, shard_size: int, progress: bool,
           executor: Executor, shard: Shard | None, names: dict[str, str] | None = None) -> None:
    """Record the metrics (under the lock), score into shards (outside it: several processes
    may score a run at once), then compile the table (under the lock)."""
    with run_dir.locked():
        items = _open_scoring(run_dir, metrics, shard_size, names or {})
    run_scoring(run_dir, metrics, items, shard_size=shard_size, progress=progress, executor=executor, shard=shard)
    with run_dir.locked():
        record_execution(run_dir, "score", executor, shard)
        run_dir.remove_stale_temporaries()  # and the items' claim files, when nobody else is working
        # The table holds every metric scored into this folder, each with its current identity.
        table = compile_run_scores(run_dir, items)
    log.info("scores: %d rows in %s", len(table), run_dir.scores_path)


def _open_scoring(run_dir: RunDir, metrics: dict[str, Metric], shard_size: int,
                  names: dict[str, str]) -> dict[str, list[ScoreItem]]:
    manifest = run_dir.require_manifest()  # read again under the lock: another command may have scored
    suite = run_dir.read_suite()
    seeds = seed_table(manifest, [layout.id for layout in suite.layouts], str(run_dir.manifest_path))
    items = collect_items(run_dir, suite, list(manifest["config"]["generators"]), seeds, manifest.get("inputs"))
    recorded = manifest["config"].get("metrics", {})
    check_metric_keys(metrics, recorded)
    run_dir.remove_stale_temporaries()
    manifest["config"]["metrics"] = {
        **recorded, **{label: _metric_record(m, shard_size) for label, m in metrics.items()}}
    order = manifest.setdefault("order", {})
    order["metrics"] = ordered(order.get("metrics", []), metrics)
    display = manifest.setdefault("display_names", {}).setdefault("metrics", {})
    display.update({label: names.get(label) or metric.title() for label, metric in metrics.items()})
    run_dir.write_manifest(manifest)
    return items


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
        "reference": metric.reference,
    }


# report ----------------------------------------------------------------------------
def report(args: argparse.Namespace) -> int:
    config = RunConfig.from_args(args)
    _check_report_args(config)
    run_dir = RunDir(config.out)
    run_dir.require_manifest()
    check_writable(run_dir.root, field="--out")
    with run_dir.locked():
        return _report(run_dir, config)


def _check_report_args(config: RunConfig) -> None:
    """Bad --reference / --reference-map values stop the command before any work."""
    from eligen_bench.report.reference import parse_reference_map, read_reference

    parse_reference_map(config.reference_map)
    for path in config.reference:
        read_reference(path)


def _report(run_dir: RunDir, config: RunConfig) -> int:
    """Write the report and print its summary; with --compare, the regression gate's delta table
    and verdict too. Exit 1 when --fail-on-regression finds a regression, 2 when it has nothing
    it could gate (the gate fails closed)."""
    from eligen_bench.console import print_summary
    from eligen_bench.report import build_report, save_report
    from eligen_bench.report.gate import FAIL, UNCHECKED

    if not run_dir.scores_path.exists():
        raise InputError("no scores.parquet: run `eligen-bench score` first", where=str(run_dir.root))
    check_gate_args(config)
    for other in config.compare:
        RunDir(other).require_manifest()
    from eligen_bench.report.reference import parse_reference_map

    recorded = run_dir.require_manifest()["config"]
    report = build_report(run_dir.root, reference_csv=list(config.reference), others=list(config.compare),
                          reference_map=parse_reference_map(config.reference_map), options=report_options(config),
                          gate_options=gate_options(config, _recorded_metrics(recorded), list(recorded["generators"])))
    print_summary(report, save_report(report))
    if not config.fail_on_regression:
        return 0
    assert report.verdict is not None
    if report.verdict.verdict == UNCHECKED:
        reason = report.verdict.unchecked[0] if report.verdict.unchecked else \
            "no comparison could be gated (see the gate column above)"
        raise InputError(f"nothing comparable to check: {reason}", field="--fail-on-regression")
    return 1 if report.verdict.verdict == FAIL else 0


def check_gate_args(config: RunConfig) -> None:
    """The gate's options need a run to compare with."""
    if config.fail_on_regression and not config.compare:
        raise InputError("needs a run to compare with (--compare RUN)", field="--fail-on-regression")
    for option in ("margin", "gate_metrics", "gate_changed"):
        if getattr(config, option) and not config.compare:
            raise InputError("needs a run to compare with (--compare RUN)", field="--" + option.replace("_", "-"))


def _recorded_metrics(recorded: dict[str, Any]) -> dict[str, Any]:
    from eligen_bench.report.data import MetricInfo

    return {label: MetricInfo.from_config(label, record, where="manifest.json")
            for label, record in (recorded.get("metrics") or {}).items()}


def gate_options(config: RunConfig, metrics: dict[str, Any], generators: list[str]) -> Any:
    """`--margin`, `--gate-metrics` and `--gate-changed`, checked against the run's labels."""
    from eligen_bench.report.gate import (
        GateOptions,
        parse_changed,
        parse_gate_metrics,
        parse_margins,
    )

    return GateOptions(margins=parse_margins(config.margin, metrics),
                       metrics=parse_gate_metrics(config.gate_metrics, metrics),
                       changed=parse_changed(config.gate_changed, generators), enforced=config.fail_on_regression)


def report_options(config: RunConfig) -> Any:
    """How the tables look: intervals, LaTeX layout, figure formats, order and display names."""
    from eligen_bench.report import ReportOptions
    from eligen_bench.report.names import PresentationOptions
    from eligen_bench.specs import split_list

    shown = PresentationOptions(generators=config.report_generators, metrics=config.report_metrics,
                                generator_names=config.report_generator_names,
                                metric_names=config.report_metric_names)
    return ReportOptions(intervals=config.intervals, latex_layout=config.latex_layout,
                         plot_formats=tuple(split_list(config.plot_formats)), presentation=shown)


# status ------------------------------------------------------------------------------------
def status(args: argparse.Namespace) -> int:
    """Print what the run lacks; 0 when complete, 1 when something is missing."""
    run_dir = RunDir(args.run)
    result = run_status(run_dir, shown=None if args.all else SHOWN)
    print(f"run folder: {run_dir.root}")
    for line in result.lines:
        print(line)
    if result.complete:
        print("complete")
        return 0
    print(f"incomplete: {result.missing_images} image(s) and {result.missing_shards} score shard(s) missing")
    return 1


# ls / validate / suite -----------------------------------------------------------------
def ls(args: argparse.Namespace) -> int:
    for kind in ("suite", "generator", "metric"):
        print(f"{kind}s:")
        for name, entry in registry.entries(kind).items():
            try:
                plugin = entry.load()
                print(f"  {name:<18} {_describe(kind, plugin)}")
                if getattr(plugin, "reference", ""):
                    print(f"  {'':<18} follows {plugin.reference}")
            except PluginError as exc:
                print(f"  {name:<18} BROKEN: {exc}")
    return 0


def _describe(kind: str, obj: Any) -> str:
    if kind == "generator":
        caps = obj.capabilities.to_dict()
        flags = [k for k in ("boxes", "masks", "inpainting") if caps[k]]
        limit = caps["max_entities"] if caps["max_entities"] is not None else "any"
        return (f"{'+'.join(flags) or 'text only'}; entities {limit}; {caps['resolution'][0]}x{caps['resolution'][1]}; "
                f"entity text: {obj.entity_text}  {obj.description}")
    if kind == "metric":
        direction = "higher is better" if obj.higher_is_better else "lower is better"
        return f"per {obj.level}; {direction}  {obj.description}"
    return getattr(obj, "__doc__", "") and obj.__doc__.strip().splitlines()[0] or ""


def validate(args: argparse.Namespace) -> int:
    """Every problem of a suite file (all of each line), and a warning per entity whose category
    the detector metrics cannot score; exit 2 when there is a problem."""
    suite, problems, warnings = check_suite_file(args.suite_file)
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
    for warning in warnings:
        print(f"warning: {warning}")
    if problems:
        print(f"{len(problems)} problem(s) in {args.suite_file}")
        return 2
    assert suite is not None
    print(f"ok: suite {suite.name!r} version {suite.version}, {len(suite.layouts)} layouts, hash {suite.hash}"
          + (f" ({len(warnings)} warning(s))" if warnings else ""))
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
    if suite.seed_list:
        print(f"seeds: {', '.join(map(str, suite.seed_list))} for every layout (unless --seeds or --seed-list)")
    print("layouts by entity count: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return 0


def _print_plan(run_dir: RunDir, suite: Suite, plans: list[GenerationPlan], metrics: dict[str, Metric],
                seeds: SeedPlan) -> None:
    print(f"run folder: {run_dir.root}")
    print(f"suite: {suite.name} v{suite.version}, {len(suite.layouts)} layouts, hash {suite.hash}")
    print(f"seeds: {seeds.describe()}")
    counts: dict[int, int] = {}
    for layout in suite.layouts:
        counts[len(layout.entities)] = counts.get(len(layout.entities), 0) + 1
    print("layouts by entity count: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    for note in suite.notes:
        print(f"note: {note}")
    for plan in plans:
        todo = len(pending_requests(run_dir, plan))
        print(f"generator {plan.label}: {len(plan.requests)} images ({todo} to make); "
              f"settings {plan.generator.settings}")
        for note, count in plan.notes.items():
            print(f"  note: {note} ({count} layouts)")
    for label, metric in metrics.items():
        print(f"metric {label}: key {metric.key}; models {metric.model_ids()}")

