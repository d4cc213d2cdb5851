"""The `eligen-bench` command: run, generate, score, report, status, ls, validate, suite."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from eligen_bench import __version__, console
from eligen_bench.arguments import (
    MAX_BATCH,
    MAX_GPUS_PER_WORKER,
    MAX_LIMIT,
    MAX_PER_BUCKET,
    MAX_RESAMPLES,
    MAX_SEED,
    MAX_SEEDS,
    MAX_SHARD,
    MAX_THREADS,
    MAX_WAIT,
    MAX_WORKERS,
    device,
    int_range,
    number_range,
)
from eligen_bench.errors import InputError, WorkerError
from eligen_bench.registry import PluginError
from eligen_bench.runtime import DEFAULT_THREADS
from eligen_bench.seeds import NAMED_SEED_LISTS, parse_seed_list

log = logging.getLogger("eligen_bench")
DEFAULT_SUITE = "mini"
WRITE_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)
"""Errors of writing where one may not (or there is no room): a line naming the file, exit 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # bad options (exit 2), --help or --version (exit 0)
        return exc.code if isinstance(exc.code, int) else 2
    console.configure(args.verbose)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        _one_run_folder(args)
        return int(args.func(args) or 0)
    except (InputError, PluginError, WorkerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS:
            raise
        # A folder that cannot be written (read-only mount, immutable, full): one line, not a traceback.
        print(f"error: {exc.filename or ''}: cannot write ({exc.strerror})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished files are kept; run the same command again to resume", file=sys.stderr)
        return 130


def _one_run_folder(args: argparse.Namespace) -> None:
    """`status RUN` and `status --out RUN` (and so for score and report) name the same folder."""
    if not hasattr(args, "run_folder"):
        return
    given, option = args.run_folder, args.out
    if given is not None and option is not None and Path(given) != Path(option):
        raise InputError(f"two run folders given: {given} and --out {option}; give one", field="--out")
    args.out = option if option is not None else given
    if args.out is None:
        raise InputError("name the run folder: RUN or --out RUN", field="RUN")
    args.run = args.out


def _add_run_folder(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_folder", nargs="?", type=Path, metavar="RUN", help="the run folder (or --out RUN)")
    parser.add_argument("--out", type=Path, default=None, help="the run folder (or give it as RUN)")


class OneLineParser(argparse.ArgumentParser):
    """Bad options give one line naming the option (not the whole usage), and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from eligen_bench import commands

    parser = OneLineParser(prog="eligen-bench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"eligen-bench {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="show the details: the project's INFO log and the model libraries' own output "
                        "(-vv: debug)")
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)

    run = sub.add_parser("run", help="generate, score and report in one go")
    _add_generation_args(run)
    _add_metric_args(run)
    _add_report_args(run)
    run.add_argument("--wait-timeout", type=number_range(0, MAX_WAIT, above_low=True), default=None,
                     help="with --shard: seconds to wait for the other shards' images before giving up "
                     "(exit 2); default: wait until they are made")
    run.set_defaults(func=commands.run)

    generate = sub.add_parser("generate", help="make the images only")
    _add_generation_args(generate)
    generate.set_defaults(func=commands.generate)

    score = sub.add_parser("score", help="score the images of a run folder")
    _add_run_folder(score)
    _add_metric_args(score)
    score.add_argument("--profile", choices=("full", "tiny"), default=None,
                       help="model profile of the metrics (default: the run's)")
    score.add_argument("--device", type=device, default=None, help="torch device of the metrics")
    score.add_argument("--no-progress", action="store_true")
    _add_executor_args(score)
    score.set_defaults(func=commands.score)

    status = sub.add_parser("status", help="say what a run folder still lacks, per generator and metric")
    _add_run_folder(status)
    status.add_argument("--all", action="store_true", help="name every missing item, not the first few")
    status.set_defaults(func=commands.status)

    report = sub.add_parser("report", help="write the report of a run folder")
    _add_run_folder(report)
    report.add_argument("--generators", dest="report_generators", default=None,
                        help="generator labels: the table's rows, in this order (default: the run's order)")
    report.add_argument("--metrics", dest="report_metrics", default=None,
                        help="metric labels: the table's columns, in this order (default: the run's order)")
    report.add_argument("--generator-names", dest="report_generator_names", default=None,
                        help="display names for this report: 'label=EliGen (ours),...' (default: the run's)")
    report.add_argument("--metric-names", dest="report_metric_names", default=None,
                        help="display names for this report: 'miou=mIoU,...' (default: the run's)")
    _add_report_args(report)
    report.set_defaults(func=commands.report)

    board = sub.add_parser("leaderboard", help="one static site comparing many run folders")
    board.add_argument("runs", nargs="+", metavar="RUN_OR_GLOB", help="run folders or glob patterns")
    board.add_argument("--out", required=True, type=Path, help="the site folder (new, empty or an earlier site)")
    board.add_argument("--layouts-per-bucket", type=int_range(0, MAX_PER_BUCKET), default=3,
                       help=f"layouts per entity-count bucket in the image comparisons, 0 to {MAX_PER_BUCKET}")
    board.add_argument("--bootstrap-resamples", type=int_range(1, MAX_RESAMPLES), default=1000,
                       help=f"layout resamples of the confidence intervals, 1 to {MAX_RESAMPLES}")
    board.set_defaults(func=_leaderboard)

    table3 = sub.add_parser("instdiff-table", help="the DEIG paper's Table 3 from InstDiff-Bench run folders")
    table3.add_argument("--color", type=Path, help="run on the instdiff-bench-color suite (Acc / CLIP colour)")
    table3.add_argument("--texture", type=Path, help="run on the instdiff-bench-texture suite (Acc / CLIP texture)")
    table3.add_argument("--ap", type=Path, help="run on the attribute-free instdiff-bench suite (AP, AP50)")
    table3.add_argument("--out", type=Path, help="CSV to write (the columns of results/reference/deig_table3.csv)")
    table3.add_argument("--reference", type=Path, help="published rows to print below ours "
                        "(e.g. results/reference/deig_table3.csv)")
    table3.set_defaults(func=_instdiff_table)

    ls = sub.add_parser("ls", help="list registered suites, generators and metrics")
    ls.set_defaults(func=commands.ls)

    validate = sub.add_parser("validate", help="check a suite file and report every problem")
    validate.add_argument("suite_file", type=Path)
    validate.add_argument("--generators", default=None, help="also check against these generators' limits")
    validate.set_defaults(func=commands.validate)

    suite = sub.add_parser("suite", help="build or inspect suites")
    suite_sub = suite.add_subparsers(dest="suite_command", parser_class=OneLineParser)
    show = suite_sub.add_parser("show", help="print a suite's header (name, version, hash, count)")
    show.add_argument("suite")
    show.set_defaults(func=commands.suite_show)
    build = suite_sub.add_parser("build", help="build a suite from official annotation files")
    from eligen_bench.suites.cli import add_build_parser

    add_build_parser(build.add_subparsers(dest="source", parser_class=OneLineParser))
    return parser


def _leaderboard(args: argparse.Namespace) -> int:
    from eligen_bench.report.site_page import command

    return command(args)


def _instdiff_table(args: argparse.Namespace) -> int:
    from eligen_bench.report.instdiff_table import instdiff_table, markdown
    from eligen_bench.report.reference import read_reference

    runs = {role: getattr(args, role) for role in ("color", "texture", "ap") if getattr(args, role) is not None}
    if not runs:
        raise InputError("give at least one of --color, --texture, --ap", field="instdiff-table")
    table, warnings = instdiff_table(runs)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    reference = read_reference(args.reference) if args.reference is not None else None
    print(markdown(table, reference), end="")
    if args.out is not None:
        from eligen_bench.atomic import atomic_write_text

        atomic_write_text(args.out, table.to_csv(index=False))
        print(f"wrote {args.out}")
    return 0


def _add_generation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default=DEFAULT_SUITE, help="suite name or path to a .jsonl (default: mini)")
    parser.add_argument("--generators", default=None,
                        help="comma list of name, name[opt=value,...] or label=name[...] (default: all registered)")
    parser.add_argument("--seeds", type=int_range(1, MAX_SEEDS), default=None,
                        help=f"images per layout (seed indices 0..N-1), 1 to {MAX_SEEDS}, each with its own "
                        "derived seed (default: 1, or the seeds the suite lists, e.g. 42 for mig-bench)")
    parser.add_argument("--base-seed", type=int_range(0, MAX_SEED), default=None,
                        help="run seed the per-image seeds derive from, 0 to 2^63-1 (default 0)")
    parser.add_argument("--seed-list", type=parse_seed_list, default=None,
                        help="the same seeds for every layout, image i with the i-th: comma list (42,37,...) "
                        f"or a named list ({', '.join(sorted(NAMED_SEED_LISTS))})")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: results/runs/<suite>-<profile>)")
    parser.add_argument("--profile", choices=("full", "tiny"), default="full",
                        help="'tiny' swaps every model for a tiny random one (offline, CPU, meaningless numbers)")
    subset = parser.add_mutually_exclusive_group()
    subset.add_argument("--limit", type=int_range(1, MAX_LIMIT), default=None, help="only the first N layouts (N >= 1)")
    subset.add_argument("--sample", type=int_range(1, MAX_LIMIT), default=None,
                        help="N layouts drawn across entity counts, each count in proportion (seeded, recorded)")
    parser.add_argument("--sample-seed", type=int_range(0, MAX_SEED), default=0, help="seed of --sample (default 0)")
    parser.add_argument("--generator-names", default=None,
                        help="display names in tables: 'label=EliGen (ours),...' (default: each method's own)")
    parser.add_argument("--batch-size", type=int_range(1, MAX_BATCH), default=1,
                        help=f"images per generator call, 1 to {MAX_BATCH}")
    parser.add_argument("--device", type=device, default=None,
                        help="torch device: cpu, cuda, cuda:N, mps (default: cuda if available, else cpu)")
    parser.add_argument("--dry-run", action="store_true", help="show the plan, write nothing")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="add to a run folder made by a different configuration")
    parser.add_argument("--no-progress", action="store_true")
    _add_executor_args(parser)


def _add_executor_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="where items are made: this process (default) or Ray actors")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: a running cluster or a new local one)")
    parser.add_argument("--workers", type=int_range(1, MAX_WORKERS), default=None,
                        help=f"Ray actors per stage (model replicas), 1 to {MAX_WORKERS} (default 1)")
    parser.add_argument("--gpus-per-worker", type=number_range(0, MAX_GPUS_PER_WORKER), default=None,
                        help=f"GPUs each Ray actor holds, 0 to {MAX_GPUS_PER_WORKER:g} (default 0)")
    parser.add_argument("--threads", type=int_range(1, MAX_THREADS), default=DEFAULT_THREADS,
                        help=f"torch CPU threads of every worker, whatever the executor, 1 to {MAX_THREADS} "
                        f"(default {DEFAULT_THREADS}: the same in every executor, so they make the same images)")
    parser.add_argument("--shard", default=None,
                        help="i/n: make only this process's part of the items (torchrun, Slurm arrays)")


def _add_metric_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", default=None,
                        help="comma list of name or name[opt=value,...] (default: all registered)")
    parser.add_argument("--metric-names", default=None,
                        help="display names in tables: 'miou=mIoU,...' (default: each metric's own)")
    parser.add_argument("--metric-batch-size", type=int_range(1, MAX_BATCH), default=8,
                        help=f"images per metric call, 1 to {MAX_BATCH}")
    parser.add_argument("--shard-size", type=int_range(1, MAX_SHARD), default=16,
                        help=f"images per resumable score shard, 1 to {MAX_SHARD}")


def _add_report_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", type=Path, action="append", default=None,
                        help="published numbers to compare with (e.g. results/reference/eligen_table1.csv); "
                        "repeatable")
    parser.add_argument("--reference-map", default=None, metavar="LABEL=ROW[,LABEL=ROW]",
                        help="which reference row a generator label compares with (default: the row named "
                        "like its generator, e.g. eligen -> EliGen)")
    parser.add_argument("--compare", type=Path, action="append", default=[],
                        help="another run folder to compare with (regression test); repeatable")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="exit 1 when a gated metric is worse than in a --compare run: the 95%% paired "
                        "bootstrap interval of the difference lies below -margin (exit 2: nothing to gate)")
    parser.add_argument("--margin", default=None,
                        help="per metric label or name, in the table's units: a drop smaller than this never "
                        "fails, e.g. 'miou=1.0,pickscore=0.05'")
    parser.add_argument("--gate-metrics", default=None, help="metric labels or names the gate judges (default: all)")
    parser.add_argument("--gate-changed", default=None,
                        help="generator labels gated even where they name another configuration in the "
                        "compared run ('all' for every label)")
    parser.add_argument("--intervals", choices=("brackets", "pm", "none"), default="brackets",
                        help="intervals in the tables: '[low, high]', '± half-width' or none")
    parser.add_argument("--latex-layout", choices=("column", "wide"), default="column",
                        help="table.tex as a one-column 'table' or a page-wide 'table*'")
    parser.add_argument("--plot-formats", default="png,pdf,svg", help="figure formats (PNG always)")


if __name__ == "__main__":
    sys.exit(main())
