"""Build a report from a run folder and write its files under `<run>/report/`.

`build_report` computes every table (no files touched); `write_report` renders and writes them
atomically, logs each warning, and returns the paths written. Warnings (the tiny-profile one,
incomplete runs, runs that are not comparable) head every human-readable output.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from eligen_bench import escape
from eligen_bench.arguments import MAX_RESAMPLES
from eligen_bench.atomic import atomic_write_bytes, atomic_write_text, folder_replaced
from eligen_bench.errors import InputError
from eligen_bench.report import compare, leaderboard, levels, plots, reference, stats, tables
from eligen_bench.report.data import Run, load_run

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportOptions:
    """Knobs of a report; the defaults give the paper-style report."""

    bootstrap_resamples: int = 1000
    """Resamples of layouts for the confidence intervals."""
    confidence: float = 0.95
    bootstrap_seed: int = 0
    """Fixed, so the same scores always give the same intervals."""
    decimals: int = 2
    show_ci: bool = True
    """Print the interval next to each value in table.md / table.tex."""
    grid_layouts: int = 12
    """Layouts shown in the image grid of index.html."""
    grid_seed_index: int = 0
    all_image_win_rates: bool = False
    """Win rates for every image-level metric, not only pickscore and mps."""
    plots: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.bootstrap_resamples <= MAX_RESAMPLES:
            raise InputError(f"must be in [1, {MAX_RESAMPLES}]", where="report options", field="bootstrap_resamples")
        if not 0.0 < self.confidence < 1.0:
            raise InputError("must be in (0, 1)", where="report options", field="confidence")
        if self.decimals < 0 or self.grid_layouts < 0 or self.grid_seed_index < 0:
            raise InputError("decimals, grid_layouts and grid_seed_index must be >= 0", where="report options")

    @property
    def bootstrap(self) -> stats.BootstrapOptions:
        return stats.BootstrapOptions(self.bootstrap_resamples, self.confidence, self.bootstrap_seed)


@dataclass
class Report:
    """Every table of a report, computed; `warnings` in the order they are shown."""

    run: Run
    options: ReportOptions
    summary: pd.DataFrame
    by_entities: pd.DataFrame
    by_category: pd.DataFrame
    win_rate_labels: list[str]
    wins: pd.DataFrame
    reference: pd.DataFrame | None = None
    deltas: pd.DataFrame | None = None
    warnings: list[str] = field(default_factory=list)
    levels: pd.DataFrame | None = None
    """MIG-Bench I-SR / SR / mIoU per level (`levels.level_frame`); None without a mig_bench metric."""
    reference_sources: list[str] = field(default_factory=list)
    """One line per reference file: its name and where its numbers come from."""


def build_report(run_dir: str | Path, *, reference_csv: str | Path | Sequence[str | Path] | None = None,
                 others: Sequence[str | Path] = (), options: ReportOptions | None = None,
                 reference_map: dict[str, str] | None = None) -> Report:
    """Load the run (and the runs to compare with) and compute every table.

    `reference_csv`: one or more files of published numbers; `reference_map`: generator label ->
    the row of those files it compares with (default: the row named like its generator)."""
    options = options or ReportOptions()
    run = load_run(run_dir)
    summary = stats.summarize(run, options.bootstrap)
    labels = stats.win_rate_metrics(run, all_image_metrics=options.all_image_win_rates)
    report = Report(run, options, summary, stats.breakdown_by_entities(run), stats.breakdown_by_category(run),
                    labels, stats.all_win_rates(run, labels), warnings=list(run.warnings))
    report.warnings += coverage_warnings(summary)
    report.levels = levels.level_frame(run)
    if reference_csv is not None:
        paths = [reference_csv] if isinstance(reference_csv, (str, Path)) else list(reference_csv)
        report.reference, found, report.reference_sources = reference.compare_files(
            run, summary, paths, mapping=reference_map, levels=report.levels)
        report.warnings += found
    if others:
        report.deltas = _compare_runs(report, others)
    return report


def coverage_warnings(summary: pd.DataFrame) -> list[str]:
    """Cells with fewer (run still going?) or more (duplicates?) rows than the suite implies."""
    short = summary[summary["n_rows"] < summary["n_expected"]]
    extra = summary[summary["n_rows"] > summary["n_expected"]]
    found = []
    if len(short):
        cells = ", ".join(f"{r.generator}/{r.metric} {r.n_rows} of {r.n_expected}" for r in short.itertuples())
        found.append(f"incomplete run: score rows missing for {cells}")
    if len(extra):
        cells = ", ".join(f"{r.generator}/{r.metric} {r.n_rows} for {r.n_expected}" for r in extra.itertuples())
        found.append(f"more score rows than the suite implies (duplicates?) for {cells}")
    return found


def _compare_runs(report: Report, others: Sequence[str | Path]) -> pd.DataFrame:
    import pandas as pd

    parts = []
    for other_dir in others:
        other = load_run(other_dir)
        report.warnings += [f"compared run {other.name}: {w}" for w in other.warnings
                            if w not in report.run.warnings]
        report.warnings += compare.comparability_warnings(report.run, other)
        other_summary = stats.summarize(other, report.options.bootstrap)
        report.warnings += compare.unmeasured_warnings(report.summary, other_summary, other.name)
        comparable = compare.comparable_metrics(report.run, other)
        paired = {(generator, label): stats.paired_difference_interval(report.run, other, label, generator,
                                                                      report.options.bootstrap)
                  for label in comparable for generator in report.run.generators if generator in other.generators}
        parts.append(compare.delta_table(report.summary, other_summary, other.name, comparable, paired))
    return pd.concat(parts, ignore_index=True)


def write_report(run_dir: str | Path, *, reference: str | Path | None = None,
                 others: Sequence[str | Path] = (), options: ReportOptions | None = None) -> list[Path]:
    """Write the report of `run_dir` under `run_dir/report/`; returns the paths written.

    `reference`: a CSV of published numbers (results/reference/eligen_table1.csv) to compare with;
    `others`: earlier run folders to compare with (regression test).
    """
    return save_report(build_report(run_dir, reference_csv=reference, others=others, options=options))


def save_report(report: Report) -> list[Path]:
    """Write a computed report under its run's `report/` folder; returns the paths written.

    Every file is written into a temporary folder that then replaces `report/` whole, so a
    failure part-way leaves the earlier report as it was, never half of a new one."""
    for warning in report.warnings:
        log.warning("%s", warning)
    out = Path(report.run.path) / "report"
    files = render_files(report)
    with folder_replaced(out) as folder:
        for name, content in files.items():
            if isinstance(content, bytes):
                atomic_write_bytes(folder / name, content)
            else:
                atomic_write_text(folder / name, content)
    return [out / name for name in files]


def render_files(report: Report) -> dict[str, str | bytes]:
    """Every report file by relative name; index.html last, as it links to the others."""
    files: dict[str, str | bytes] = {}
    files["warnings.txt"] = "".join(f"{w}\n" for w in report.warnings)
    files["table.md"] = table_markdown(report)
    files["table.tex"] = table_latex(report)
    files["summary.csv"] = summary_csv(report)
    files["breakdown_entities.csv"] = _csv(report.by_entities)
    files["breakdown_entities.md"] = breakdown_markdown(report)
    files["breakdown_category.csv"] = _csv(report.by_category)
    if report.win_rate_labels:
        files["win_rates.csv"] = _csv(report.wins)
        files["win_rates.md"] = win_rates_markdown(report)
    if report.reference is not None:
        files["reference.csv"] = _csv(report.reference)
        files["reference.md"] = _banner(report) + "# Published vs this run\n\n" + \
            tables.to_markdown(_reference_table(report))
    if report.deltas is not None:
        files["deltas.csv"] = _csv(report.deltas)
        files["deltas.md"] = _banner(report) + "# This run minus other runs\n\n" + \
            tables.to_markdown(_delta_table(report))
    levels.add_files(report.levels, files, banner=_banner(report), csv_text=_csv, decimals=report.options.decimals)
    if report.options.plots:
        files.update(render_plots(report))
    files["index.html"] = index_html(report, sorted(files))
    return files


def _banner(report: Report) -> str:
    """Warnings as a Markdown block quote, one paragraph each, then a blank line."""
    if not report.warnings:
        return ""
    return "\n>\n".join(f"> **WARNING:** {escape.markdown_text(w)}" for w in report.warnings) + "\n\n"


def _main(report: Report) -> tables.Table:
    return tables.main_table(report.summary, report.run.metrics, report.run.generators,
                             decimals=report.options.decimals, show_ci=report.options.show_ci)


def _ci_note(report: Report) -> str:
    options = report.options
    return (f"Values: mean of valid values x scale; entity-level metrics over all entities, image-level "
            f"over all images. Brackets: {options.confidence:.0%} percentile bootstrap interval over "
            f"layouts ({options.bootstrap_resamples} resamples, seed {options.bootstrap_seed}). "
            "Bold: best, underlined: second best.")


def _notes(report: Report) -> list[str]:
    run = report.run
    notes = [f"suite note: {n}" for n in run.suite.notes]
    for generator, lines in (run.manifest.get("adapt_notes") or {}).items():
        notes += [f"{generator}: {line}" for line in lines]
    return notes + truncation_notes(run)


def truncation_notes(run: Run) -> list[str]:
    """One note per generator and text encoder that cut prompts at its token limit."""
    notes = []
    for generator, encoders in (run.manifest.get("prompt_truncation") or {}).items():
        for encoder, record in encoders.items():
            if record.get("truncated"):
                notes.append(f"{generator}: {record['truncated']} distinct prompt(s) truncated by the "
                             f"{encoder} encoder at {record.get('max_tokens')} tokens")
    return notes


def _run_facts(report: Report) -> list[tuple[str, str]]:
    run = report.run
    suite = run.config.get("suite", {})
    return [("run", run.name), ("profile", run.profile),
            ("suite", f"{suite.get('name', run.suite.name)} v{suite.get('version', run.suite.version)} "
                      f"({len(run.suite.layouts)} layouts, hash {run.suite_hash})"),
            ("seeds", f"{run.seeds} (base seed {run.base_seed})"),
            ("created", str(run.manifest.get("created", "?"))),
            ("eligen-bench", f"{run.manifest.get('eligen_bench_version', '?')} "
                             f"(code {run.manifest.get('code_version', '?')})")]


def table_markdown(report: Report) -> str:
    md = escape.markdown_text
    lines = [_banner(report) + f"# Results: {md(report.run.name)}\n"]
    lines += [", ".join(f"{k}: {md(v)}" for k, v in _run_facts(report)) + "\n"]
    lines += [tables.to_markdown(_main(report)), _ci_note(report) + "\n", "## Counts\n",
              tables.to_markdown(tables.counts_table(report.summary, report.run.metrics, report.run.generators))]
    notes = _notes(report)
    if notes:
        lines += ["## Notes\n", "".join(f"- {md(n)}\n" for n in notes)]
    return "\n".join(lines)


def table_latex(report: Report) -> str:
    caption = "Evaluation on " + report.run.suite.name + ". " + _ci_note(report)
    if report.warnings:
        caption = "WARNING: " + "; ".join(report.warnings) + ". " + caption
    return tables.to_latex(_main(report), caption=caption, comments=[f"WARNING: {w}" for w in report.warnings])


def summary_csv(report: Report) -> str:
    summary = report.summary.copy()
    metrics = report.run.metrics
    summary.insert(2, "metric_name", summary["metric"].map(lambda m: metrics[m].name))
    summary["level"] = summary["metric"].map(lambda m: metrics[m].level)
    summary["scale"] = summary["metric"].map(lambda m: metrics[m].scale)
    summary["higher_is_better"] = summary["metric"].map(lambda m: metrics[m].higher_is_better)
    summary["metric_key"] = summary["metric"].map(lambda m: metrics[m].key)
    summary["profile"] = report.run.profile
    return _csv(summary)


def _csv(frame: pd.DataFrame) -> str:
    """CSV text whose text cells cannot run as spreadsheet formulas (numbers stay numbers)."""
    return escape.csv_frame(frame).to_csv(index=False)


def breakdown_markdown(report: Report) -> str:
    """Per metric: generators x number of entities, cells 'mean (n)'."""
    lines = [_banner(report) + "# Breakdown by number of entities per layout\n"]
    table = report.by_entities
    for label in report.run.metrics:
        rows = table[table["metric"] == label]
        if not len(rows):
            continue
        counts = sorted(set(rows["n_entities"]))
        cells = {(r.generator, r.n_entities): r for r in rows.itertuples()}
        body = [(g, [tables.Cell(f"{tables.fmt(cells[(g, c)].mean, report.options.decimals)} "
                                 f"({cells[(g, c)].n})") if (g, c) in cells else tables.Cell("–")
                     for c in counts]) for g in report.run.generators]
        lines += [f"## {escape.markdown_text(label)}\n", tables.to_markdown(tables.Table("Model", [_entities(c) for c in counts],
                                                                     body, ["Cells: mean (n valid values)."]))]
    return "\n".join(lines)


def _entities(count: int) -> str:
    return f"{count} entity" if count == 1 else f"{count} entities"


def _win_table(report: Report, label: str) -> tables.Table:
    return tables.win_rate_table(report.wins, label, report.run.generators, decimals=report.options.decimals)


def win_rates_markdown(report: Report) -> str:
    lines = [_banner(report) + "# Pairwise win rates\n"]
    for label in report.win_rate_labels:
        lines += [f"## {escape.markdown_text(label)}\n", tables.to_markdown(_win_table(report, label))]
    return "\n".join(lines)


def _reference_table(report: Report) -> tables.Table:
    frame = report.reference[["generator", "reference_model", "reference_column", "published", "ours", "delta",
                              "ci_low", "ci_high", "published_in_ci", "reference"]]
    table = tables.frame_table(frame, decimals=report.options.decimals)
    table.notes.append("delta = ours - published, in the paper's units; ci: this run's 95% interval where it has "
                       "one. Sources: " + "; ".join(report.reference_sources) + ".")
    return table


def _delta_table(report: Report) -> tables.Table:
    table = tables.frame_table(report.deltas, decimals=report.options.decimals)
    table.notes.append("delta = this run - other run; delta_ci: 95% paired bootstrap interval of the "
                       "difference (both runs resampled with the same layouts); exceeds_ci: that interval "
                       "excludes 0 (without one: the other run's mean lies outside this run's interval); "
                       "comparable: same suite, seeds and metric key (see the warnings).")
    return table


def render_plots(report: Report) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    run = report.run
    for label, info in run.metrics.items():
        if not (report.summary["metric"] == label).any() or not report.summary.loc[
                report.summary["metric"] == label, "n"].sum():
            continue
        files["plots/" + plots.plot_name("bar", label)] = plots.bar_chart(
            report.summary, info, run.generators, report.warnings)
        files["plots/" + plots.plot_name("entities", label)] = plots.entity_count_chart(
            report.by_entities, info, run.generators, report.warnings)
    return files


def index_html(report: Report, names: Sequence[str]) -> str:
    page = leaderboard.Page(f"eligen-bench leaderboard: {report.run.name}", report.warnings, _run_facts(report))
    add = page.sections.append
    add(leaderboard.Section("Main table", tables.to_html(_main(report)) +
                            f'<p class="note">{escape.html_text(_ci_note(report))}</p>'))
    add(leaderboard.Section("Counts", tables.to_html(
        tables.counts_table(report.summary, report.run.metrics, report.run.generators))))
    if report.reference is not None and len(report.reference):
        add(leaderboard.Section("Published vs this run", tables.to_html(_reference_table(report))))
    if report.deltas is not None and len(report.deltas):
        add(leaderboard.Section("This run minus other runs", tables.to_html(_delta_table(report))))
    for label in report.win_rate_labels:
        add(leaderboard.Section(f"Win rates: {label}", tables.to_html(_win_table(report, label))))
    if report.levels is not None and len(report.levels):
        add(leaderboard.Section("MIG-Bench per level", levels.to_html(report.levels, report.options.decimals)))
    notes = _notes(report)
    if notes:
        add(leaderboard.Section("Notes", leaderboard.bullet_list(notes)))
    pictures = [n for n in names if n.startswith("plots/")]
    if pictures:
        add(leaderboard.Section("Plots", leaderboard.images(pictures)))
    add(leaderboard.Section(f"Images (seed index {report.options.grid_seed_index})", leaderboard.image_grid(
        report.run, layouts=report.options.grid_layouts, seed_index=report.options.grid_seed_index)))
    add(leaderboard.Section("Files", leaderboard.links([n for n in names if not n.startswith("plots/")])))
    return leaderboard.render(page)
