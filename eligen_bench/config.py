"""One frozen, typed configuration per command, built from the parsed arguments at the top.

The subcommands read `argparse.Namespace` once, in `RunConfig.from_args`; everything below
them (executors, stages, the report) takes these values, never the namespace.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from eligen_bench.runtime import DEFAULT_THREADS


@dataclass(frozen=True)
class ExecutorConfig:
    """Who makes the items: this process or Ray actors, and which part of them."""

    name: str = "local"
    """'local' (this process) or 'ray'."""
    address: str | None = None
    """Ray cluster address; None starts or joins a local one."""
    workers: int | None = None
    """Ray actors per stage (model replicas); None: not given (1 with Ray; any value is refused with the local executor)."""
    gpus_per_worker: float | None = None
    """GPUs each Ray actor holds; None: not given (0 with Ray; any value is refused with the local executor)."""
    threads: int = DEFAULT_THREADS
    """torch CPU threads of every worker, whatever the executor (`runtime.threads`)."""
    device: str | None = None
    """Torch device of the local executor's models (None: CUDA when present, else CPU)."""
    shard: str | None = None
    """'i/n': make only this process's part of the items."""


@dataclass(frozen=True)
class RunConfig:
    """What `run`, `generate`, `score` and `report` were asked to do."""

    out: Path | None = None
    """The run folder (None for `run`/`generate`: results/runs/<suite>-<profile>)."""
    suite: str = "mini"
    """Suite name or path to a .jsonl."""
    generators: str | None = None
    """Generator specs as typed (None: every registered generator of the default run)."""
    metrics: str | None = None
    """Metric specs as typed (None: every registered metric of the default run)."""
    profile: str | None = "full"
    """'full' or 'tiny' (None for `score`: the run's own profile)."""
    device: str | None = None
    """Torch device of the models (None: CUDA when present, else CPU)."""
    seeds: int | None = None
    """Images per layout (seed indices 0..seeds-1); None: 1, or as many as the suite lists."""
    base_seed: int | None = None
    """The run seed the per-image seeds derive from; None: 0 (or the suite's listed seeds)."""
    seed_list: tuple[int, ...] | None = None
    """The same seeds for every layout (--seed-list); see `eligen_bench.seeds.resolve_seeds`."""
    limit: int | None = None
    """Only the first N layouts of the suite."""
    sample: int | None = None
    """N layouts drawn across entity counts (`Suite.sample`)."""
    sample_seed: int = 0
    """Seed of `sample`."""
    generator_names: str | None = None
    """Display names recorded for the run's tables: 'label=Name,...'."""
    metric_names: str | None = None
    """Display names recorded for the run's metric columns: 'label=Name,...'."""
    batch_size: int = 1
    """Images per generator call."""
    metric_batch_size: int = 8
    """Images per metric call."""
    shard_size: int = 16
    """Images per resumable score shard."""
    dry_run: bool = False
    """Show the plan and write nothing."""
    allow_mixed: bool = False
    """Add to a run folder made by a different configuration."""
    progress: bool = True
    """Show progress bars."""
    reference: tuple[Path, ...] = ()
    """Files of published numbers to print beside this run's."""
    reference_map: str | None = None
    """'LABEL=ROW,...': the reference row a generator label compares with."""
    compare: tuple[Path, ...] = ()
    """Other run folders to compare with."""
    fail_on_regression: bool = False
    """Exit 1 when a compared metric regressed."""
    wait_timeout: float | None = None
    """With a shard: seconds to wait for the other shards' images (None: until they are made)."""
    margin: str | None = None
    """Per metric label or name: a drop smaller than this never fails ('miou=1.0,...')."""
    gate_metrics: str | None = None
    """Metric labels or names the gate judges (None: all)."""
    gate_changed: str | None = None
    """Generator labels gated even where they name another configuration in a compared run."""
    intervals: str = "brackets"
    """How tables show intervals: 'brackets', 'pm' or 'none'."""
    latex_layout: str = "column"
    """table.tex as a one-column 'table' or a page-wide 'table*' ('wide')."""
    plot_formats: str = "png,pdf,svg"
    """Figure formats."""
    report_generators: str | None = None
    """`report --generators`: rows in this order (None: the run's order)."""
    report_metrics: str | None = None
    """`report --metrics`: columns in this order (None: the run's order)."""
    report_generator_names: str | None = None
    """`report --generator-names`: display names for this report only."""
    report_metric_names: str | None = None
    """`report --metric-names`: display names for this report only."""
    executor: ExecutorConfig = ExecutorConfig()
    """Who makes the items."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunConfig:
        """The values a subcommand parsed; options it does not take keep their defaults."""
        given = vars(args)
        executor = ExecutorConfig(**_pick(ExecutorConfig, given, name=given.get("executor", "local")))
        values = _pick(cls, given, progress=not given.get("no_progress", False),
                       compare=tuple(given.get("compare") or ()), reference=tuple(given.get("reference") or ()),
                       executor=executor)
        return cls(**values)


def _pick(cls: type, given: dict[str, Any], **computed: Any) -> dict[str, Any]:
    """The fields of `cls` found in `given` (computed ones win), skipping what is absent."""
    names = {f.name for f in fields(cls)}
    picked = {name: given[name] for name in names if name in given}
    picked.update({name: value for name, value in computed.items() if name in names})
    return picked
