"""Which rows and columns a report shows, in which order, under which names.

Rows follow `--generators` and columns `--metrics` as the run was given them (the manifest's
`order`), or the order a report asks for; display names ("EliGen (ours)", "mIoU") are those
given at run time (`--generator-names`, `--metric-names`, else each plugin's own), or those a
report asks for. Files meant for machines (CSV, JSON) keep the labels; tables for people show
the display names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eligen_bench.configurations import parse_names
from eligen_bench.errors import InputError

if TYPE_CHECKING:
    from eligen_bench.report.data import MetricInfo, Run


@dataclass(frozen=True)
class Presentation:
    """Rows (generator labels) and columns (metric labels) in order, with display names."""

    generators: list[str]
    metrics: list[str]
    generator_names: dict[str, str] = field(default_factory=dict)
    metric_names: dict[str, str] = field(default_factory=dict)

    def generator(self, label: str) -> str:
        return self.generator_names.get(label) or label

    def metric(self, label: str) -> str:
        return self.metric_names.get(label) or label

    def metric_infos(self, run: Run) -> dict[str, MetricInfo]:
        """The run's metric descriptions in this order (only the columns shown)."""
        return {label: run.metrics[label] for label in self.metrics}


@dataclass(frozen=True)
class PresentationOptions:
    """What a report asks for; None keeps what the run recorded."""

    generators: str | None = None
    """Comma list of generator labels: the rows, in this order."""
    metrics: str | None = None
    """Comma list of metric labels: the columns, in this order."""
    generator_names: str | None = None
    """`label=Display name,...` for generators."""
    metric_names: str | None = None
    """`label=Display name,...` for metrics."""


def presentation(run: Run, options: PresentationOptions | None = None) -> Presentation:
    """The run's recorded order and names, with what `options` asks for on top."""
    options = options or PresentationOptions()
    recorded = run.manifest.get("order") if isinstance(run.manifest.get("order"), Mapping) else {}
    generators = _order(run.generators, recorded.get("generators"), options.generators, "--generators")
    metrics = _order(list(run.metrics), recorded.get("metrics"), options.metrics, "--metrics")
    display = run.manifest.get("display_names") if isinstance(run.manifest.get("display_names"), Mapping) else {}
    generator_names = {**_names(display.get("generators"), run.generators),
                       **parse_names(options.generator_names, run.generators, option="--generator-names")}
    asked = parse_names(options.metric_names, run.metrics, option="--metric-names")
    metric_names = {**_unique(_names(display.get("metrics"), run.metrics), metrics), **asked}
    return Presentation(generators, metrics, generator_names, metric_names)


def _unique(names: dict[str, str], shown: Sequence[str]) -> dict[str, str]:
    """Recorded names that two shown columns share ('mIoU' for `miou` and `miou[matching=greedy]`)
    give way to the labels, so no two columns look alike."""
    taken = [names[label] for label in shown if label in names]
    return {label: name for label, name in names.items() if taken.count(name) < 2}


def _order(labels: Sequence[str], recorded: Any, asked: str | None, option: str) -> list[str]:
    """`asked` (a subset, in its order) or the recorded order, then labels it does not name."""
    from eligen_bench.specs import split_list

    if asked:
        chosen = split_list(asked)
        unknown = [label for label in chosen if label not in labels]
        if unknown:
            raise InputError(f"no label(s) {unknown} in this run; labels: {', '.join(labels)}", field=option)
        return list(dict.fromkeys(chosen))
    order = [str(label) for label in recorded if label in labels] if isinstance(recorded, list) else []
    return list(dict.fromkeys(order + list(labels)))


def _names(recorded: Any, labels: Sequence[str] | Mapping[str, Any]) -> dict[str, str]:
    if not isinstance(recorded, Mapping):
        return {}
    return {str(k): str(v) for k, v in recorded.items() if k in labels and isinstance(v, str) and v.strip()}


def header(info: MetricInfo, name: str, suffix: str = "") -> str:
    """A column header: display name, the strict/parsed suffix, the unit, the direction."""
    unit = " (%)" if info.scale == 100 and "%" not in name else ""
    return f"{name}{suffix}{unit} {info.arrow}"
