"""Build a report from a run folder and write its files under `<run>/report/`.

`build_report` computes every table (no files touched); `write_report` renders and writes them
atomically, logs each warning, and returns the paths written. Warnings (the tiny-profile one,
incomplete runs, runs that are not comparable) head every human-readable output, once; notes
(the suite's own notes, adaptations, prompt truncation) follow the tables. A report's files
that an earlier report wrote and this one does not (the deltas of an earlier `--compare`) are
removed, so `report/` always holds one report.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from eligen_bench import escape
from eligen_bench.arguments import MAX_RESAMPLES
from eligen_bench.atomic import atomic_write_bytes, atomic_write_text, folder_replaced
from eligen_bench.errors import InputError
from eligen_bench.report import compare, gate, leaderboard, levels, plots, reference, stats, tables
from eligen_bench.report.data import Run, load_run
from eligen_bench.report.names import Presentation, PresentationOptions, presentation
from eligen_bench.report.plots import FORMATS as PLOT_FORMATS
from eligen_bench.tiny import TINY_WARNING

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SUITE_NOTE = "suite note: "
"""Runs made before suite notes were kept apart recorded them as warnings with this prefix."""
OPTIONAL_FILES = ("win_rates.csv", "win_rates.md", "reference.csv", "reference.md", "deltas.csv", "deltas.md",
                  "verdict.json")
"""Report files written only when asked for or when there is something to show: removed when a
later report does not write them."""
_PLOT_FILE = re.compile(r"(bar|entities)_[A-Za-z0-9._-]+\.(png|pdf|svg)")


@dataclass(frozen=True)
class ReportOptions:
    """Knobs of a report; the defaults give the paper-style report."""

    bootstrap_resamples: int = 1000
    """Resamples of layouts for the confidence intervals."""
    confidence: float = 0.95
    bootstrap_seed: int = 0
    """Fixed, so the same scores always give the same intervals."""
    decimals: int = 2
    intervals: str = "brackets"
    """How table.md / table.tex / the page show each interval: 'brackets', 'pm' (±) or 'none'."""
    latex_layout: str = "column"
    """'column' (a `table` one paper column wide) or 'wide' (a `table*` across the page)."""
    grid_layouts: int = 12
    """Layouts shown in the image grid of index.html."""
    grid_seed_index: int = 0
    all_image_win_rates: bool = False
    """Win rates for every image-level metric, not only pickscore and mps."""
    plots: bool = True
    plot_formats: tuple[str, ...] = PLOT_FORMATS
    """File formats of each figure (PNG is always written: the page shows it)."""
    presentation: PresentationOptions = field(default_factory=PresentationOptions)
    """Row and column order and display names asked for this report."""

    def __post_init__(self) -> None:
        if not 1 <= self.bootstrap_resamples <= MAX_RESAMPLES:
            raise InputError(f"must be in [1, {MAX_RESAMPLES}]", where="report options", field="bootstrap_resamples")
        if not 0.0 < self.confidence < 1.0:
            raise InputError("must be in (0, 1)", where="report options", field="confidence")
        if self.decimals < 0 or self.grid_layouts < 0 or self.grid_seed_index < 0:
            raise InputError("decimals, grid_layouts and grid_seed_index must be >= 0", where="report options")
        if self.intervals not in tables.INTERVAL_STYLES:
            raise InputError(f"choose one of {tables.INTERVAL_STYLES}", field="--intervals")
        if self.latex_layout not in tables.LATEX_LAYOUTS:
            raise InputError(f"choose one of {tables.LATEX_LAYOUTS}", field="--latex-layout")
        unknown = [f for f in self.plot_formats if f not in PLOT_FORMATS]
        if unknown:
            raise InputError(f"unknown format(s) {unknown}; choose from {PLOT_FORMATS}", field="--plot-formats")

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
    view: Presentation
    reference: pd.DataFrame | None = None
    deltas: pd.DataFrame | None = None
    verdict: gate.Verdict | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    levels: pd.DataFrame | None = None
    """MIG-Bench I-SR / SR / mIoU per level (`levels.level_frame`); None without a mig_bench metric."""
    reference_sources: list[str] = field(default_factory=list)
    """One line per reference file: its name and where its numbers come from."""


def build_report(run_dir: str | Path, *, reference_csv: str | Path | Sequence[str | Path] | None = None,
                 others: Sequence[str | Path] = (), options: ReportOptions | None = None,
                 reference_map: dict[str, str] | None = None,
                 gate_options: gate.GateOptions | None = None) -> Report:
    """Load the run (and the runs to compare with) and compute every table.

    `reference_csv`: one or more files of published numbers; `reference_map`: generator label ->
    the row of those files it compares with (default: the row named like its generator)."""
    options = options or ReportOptions()
    run = load_run(run_dir)
    view = presentation(run, options.presentation)
    summary = stats.summarize(run, options.bootstrap)
    labels = [label for label in stats.win_rate_metrics(run, all_image_metrics=options.all_image_win_rates)
              if label in view.metrics]
    warnings, suite_notes = split_notes(run.warnings)
    report = Report(run, options, summary, stats.breakdown_by_entities(run), stats.breakdown_by_category(run),
                    labels, stats.all_win_rates(run, labels), view, warnings=warnings)
    report.notes = notes_of(run, suite_notes)
    report.warnings += coverage_warnings(summary)
    report.levels = levels.level_frame(run)
    if reference_csv is not None:
        paths = [reference_csv] if isinstance(reference_csv, (str, Path)) else list(reference_csv)
        report.reference, found, report.reference_sources = reference.compare_files(
            run, summary, paths, mapping=reference_map, levels=report.levels)
        report.warnings += found
    if others:
        gate_options = gate_options or gate.GateOptions()
        report.deltas, differences = _compare_runs(report, others, gate_options)
        report.verdict = gate.evaluate(report.deltas, run.metrics, gate_options,
                                       confidence=options.confidence, others=list(differences),
                                       configurations=differences, warnings=report.warnings)
    return report


def split_notes(warnings: Sequence[str]) -> tuple[list[str], list[str]]:
    """The run's warnings, and the suite notes older runs recorded among them."""
    kept = [w for w in warnings if not w.startswith(SUITE_NOTE)]
    return kept, [w[len(SUITE_NOTE):] for w in warnings if w.startswith(SUITE_NOTE)]


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


def _compare_runs(report: Report, others: Sequence[str | Path],
                  gate_options: gate.GateOptions) -> tuple[pd.DataFrame, dict[str, dict]]:
    """The delta table against every other run, and per other run the labels that name
    another configuration there (with what differs)."""
    import pandas as pd

    parts, differences = [], {}
    for other_dir in others:
        other = load_run(other_dir)
        report.warnings += [f"compared run {other.name}: {w}" for w in split_notes(other.warnings)[0]
                            if w not in report.run.warnings]
        report.warnings += compare.comparability_warnings(report.run, other)
        other_summary = stats.summarize(other, report.options.bootstrap)
        report.warnings += compare.unmeasured_warnings(report.summary, other_summary, other.name)
        changed = compare.configuration_differences(report.run, other)
        report.warnings += [f"run {other.name}: generator label {label!r} names another configuration there "
                            f"({'; '.join(what)}); " + ("gated, as --gate-changed asks"
                                                        if gate.ALL in gate_options.changed or label in gate_options.changed
                                                        else "its deltas are shown, not gated (--gate-changed gates them)")
                            for label, what in changed.items()]
        differences[other.name] = changed
        comparable = compare.comparable_metrics(report.run, other)
        paired = {(generator, label): stats.paired_difference_interval(report.run, other, label, generator,
                                                                      report.options.bootstrap)
                  for label in comparable for generator in report.run.generators if generator in other.generators}
        parts.append(compare.delta_table(report.summary, other_summary, other.name, comparable, paired, changed))
    return pd.concat(parts, ignore_index=True), differences


def write_report(run_dir: str | Path, *, reference: str | Path | None = None,
                 others: Sequence[str | Path] = (), options: ReportOptions | None = None,
                 gate_options: gate.GateOptions | None = None) -> list[Path]:
    """Write the report of `run_dir` under `run_dir/report/`; returns the paths written.

    `reference`: a CSV of published numbers (results/reference/eligen_table1.csv) to compare with;
    `others`: earlier run folders to compare with (regression test).
    """
    return save_report(build_report(run_dir, reference_csv=reference, others=others, options=options,
                                    gate_options=gate_options))


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
    from eligen_bench.report.results import results_document

    files: dict[str, str | bytes] = {}
    files["warnings.txt"] = "".join(f"{w}\n" for w in report.warnings)
    files["table.md"] = table_markdown(report)
    files["table.tex"] = table_latex(report)
    files["summary.csv"] = summary_csv(report)
    files["results.json"] = json.dumps(results_document(report), indent=1, allow_nan=False, default=str) + "\n"
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
            tables.to_markdown(_delta_table(report)) + _verdict_markdown(report)
    if report.verdict is not None:
        files["verdict.json"] = json.dumps(report.verdict.to_json(), indent=1, allow_nan=False) + "\n"
    levels.add_files(report.levels, files, banner=_banner(report), csv_text=_csv, decimals=report.options.decimals)
    if report.options.plots:
        files.update(render_plots(report))
    files["index.html"] = index_html(report, sorted(files))
    return files


def _banner(report: Report) -> str:
    """Warnings as one Markdown block quote, one paragraph each, then a blank line."""
    if not report.warnings:
        return ""
    return "\n>\n".join(f"> **WARNING:** {escape.markdown_text(w)}" for w in report.warnings) + "\n\n"


def main_table(report: Report, *, intervals: str | None = None) -> tables.Table:
    """The paper's Table 1 of this run: rows and columns in the report's order, display names."""
    view = report.view
    return tables.main_table(report.summary, view.metric_infos(report.run), view.generators,
                             decimals=report.options.decimals,
                             intervals=report.options.intervals if intervals is None else intervals, names=view)


def _ci_note(report: Report) -> str:
    options = report.options
    interval = (f"{options.confidence:.0%} percentile bootstrap interval over layouts "
                f"({options.bootstrap_resamples} resamples, seed {options.bootstrap_seed})")
    shown = {"brackets": f" Brackets: the {interval}.", "pm": f" ±: half the width of the {interval}.",
             "none": ""}[options.intervals]
    return ("Values: means over all entities (entity-level metrics) or all images (image-level metrics)."
            f"{shown} Bold: best, underlined: second best.")


def notes_of(run: Run, suite_notes: Sequence[str] = ()) -> list[str]:
    """What a reader must know that is not a warning: the suite's notes, adaptations,
    prompt truncation."""
    notes = [f"suite: {n}" for n in dict.fromkeys([*run.suite.notes, *suite_notes])]
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
    view = report.view
    lines = [_banner(report) + f"# Results: {md(report.run.name)}\n"]
    lines += [", ".join(f"{k}: {md(v)}" for k, v in _run_facts(report)) + "\n"]
    lines += [tables.to_markdown(main_table(report)), _ci_note(report) + "\n", "## Counts\n",
              tables.to_markdown(tables.counts_table(report.summary, view.metric_infos(report.run),
                                                     view.generators, view))]
    if report.notes:
        lines += ["## Notes\n", "".join(f"- {md(n)}\n" for n in report.notes)]
    return "\n".join(lines)


def protocol_caption(report: Report) -> str:
    """What a reader needs to reproduce the table: suite and hash, seeds, judges and their ids."""
    run = report.run
    caption = (f"Evaluation on {run.suite.name} v{run.suite.version} ({len(run.suite.layouts)} layouts, "
               f"suite hash {run.suite_hash[:12]}), {run.seeds} seed(s) per layout (base seed {run.base_seed}).")
    judges = []
    for label in report.view.metrics:
        models = (run.config.get("metrics", {}).get(label, {}).get("identity") or {}).get("models") or {}
        if isinstance(models, dict) and models.get("judge"):
            revision = models.get("judge_revision")
            judges.append(f"{report.view.metric(label)}: {models['judge']}"
                          + (f" (revision {revision})" if revision and revision != "default" else ""))
    if judges:
        caption += " Judges: " + "; ".join(judges) + "."
    return caption + " " + _ci_note(report)


def table_latex(report: Report) -> str:
    notes = [f"Note: {n}" for n in report.notes]
    notes = [f"WARNING: {w}" for w in report.warnings] + notes
    return tables.to_latex(main_table(report), caption=protocol_caption(report), notes=notes,
                           layout=report.options.latex_layout, label=f"tab:{_label_name(report.run.name)}",
                           comments=[f"WARNING: {w}" for w in report.warnings])


def _label_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9:.-]", "-", text) or "eligen-bench"


def summary_csv(report: Report) -> str:
    summary = report.summary.copy()
    metrics = report.run.metrics
    summary.insert(2, "metric_name", summary["metric"].map(lambda m: metrics[m].name))
    summary.insert(3, "display_name", summary["metric"].map(report.view.metric))
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
    view = report.view
    for label in view.metrics:
        rows = table[table["metric"] == label]
        if not len(rows):
            continue
        counts = sorted(set(rows["n_entities"]))
        cells = {(r.generator, r.n_entities): r for r in rows.itertuples()}
        body = [(view.generator(g), [tables.Cell(f"{tables.fmt(cells[(g, c)].mean, report.options.decimals)} "
                                                 f"({cells[(g, c)].n})") if (g, c) in cells else tables.Cell("–")
                                     for c in counts]) for g in view.generators]
        lines += [f"## {escape.markdown_text(view.metric(label))}\n",
                  tables.to_markdown(tables.Table("Model", [_entities(c) for c in counts], body,
                                                  ["Cells: mean (n valid values)."]))]
    return "\n".join(lines)


def _entities(count: int) -> str:
    return f"{count} entity" if count == 1 else f"{count} entities"


def _win_table(report: Report, label: str) -> tables.Table:
    return tables.win_rate_table(report.wins, label, report.view.generators, decimals=report.options.decimals,
                                 names=report.view)


def win_rates_markdown(report: Report) -> str:
    lines = [_banner(report) + "# Pairwise win rates\n"]
    for label in report.win_rate_labels:
        lines += [f"## {escape.markdown_text(report.view.metric(label))}\n",
                  tables.to_markdown(_win_table(report, label))]
    return "\n".join(lines)


def _reference_table(report: Report) -> tables.Table:
    frame = report.reference[["generator", "reference_model", "reference_column", "published", "ours", "delta",
                              "ci_low", "ci_high", "published_in_ci", "reference"]]
    table = tables.frame_table(frame, decimals=report.options.decimals)
    table.notes.append("delta = ours - published, in the paper's units; ci: this run's 95% interval where it has "
                       "one. Sources: " + "; ".join(report.reference_sources) + ".")
    return table


def _delta_table(report: Report) -> tables.Table:
    """The gate's comparisons: this run minus each other run, the difference's interval, the result."""
    assert report.verdict is not None
    decimals, level = report.options.decimals, f"{report.options.confidence:.0%}"
    rows = []
    for c in report.verdict.comparisons:
        low, high = c.interval
        interval = "–" if low is None or high is None else f"[{low:+.{decimals}f}, {high:+.{decimals}f}]"
        if c.interval_kind == "this run":
            interval += " (this run's)"
        result = c.result + (f" (margin {c.margin:g})" if c.margin and c.result != gate.NOT_GATED else "")
        rows.append((c.other, [tables.Cell(c.metric), tables.Cell(c.generator), tables.Cell(tables.fmt(c.this, decimals)),
                               tables.Cell(tables.fmt(c.other_mean, decimals)),
                               tables.Cell(f"{c.difference:+.{decimals}f}"), tables.Cell(interval),
                               tables.Cell(result + (f": {c.reason}" if c.reason else ""))]))
    return tables.Table("other run", ["metric", "label", "this run", "other run", "difference",
                                      f"{level} paired interval", "gate"], rows,
                        [f"difference = this run - other run; interval: {level} paired bootstrap interval of the "
                         "difference (both runs resampled with the same layouts); regressed: the interval lies "
                         "below -margin. deltas.csv holds every column; verdict.json the verdict."])


def _verdict_markdown(report: Report) -> str:
    assert report.verdict is not None
    return f"\n**{escape.markdown_text(report.verdict.line(report.options.decimals))}**\n"


def render_plots(report: Report) -> dict[str, bytes]:
    """Two figures per metric shown, each in every format asked for (PNG always)."""
    files: dict[str, bytes] = {}
    run, view = report.run, report.view
    mark = TINY_WARNING if run.profile == "tiny" else ""
    formats = list(dict.fromkeys(["png", *report.options.plot_formats]))
    names = [view.generator(g) for g in view.generators]
    for label in view.metrics:
        info = run.metrics[label]
        rows = report.summary[report.summary["metric"] == label]
        if not len(rows) or not rows["n"].sum():
            continue
        figures = {
            "bar": plots.bar_chart(report.summary, info, view.generators, mark=mark, names=names,
                                   title=view.metric(label), confidence=report.options.confidence),
            "entities": plots.entity_count_chart(report.by_entities, info, view.generators, mark=mark,
                                                 names=names, title=view.metric(label)),
        }
        for prefix, figure in figures.items():
            for extension in formats:
                files["plots/" + plots.plot_name(prefix, label, extension)] = plots.render(figure, extension)
    return files


def index_html(report: Report, names: Sequence[str]) -> str:
    view = report.view
    page = leaderboard.Page(f"eligen-bench report: {report.run.name}", report.warnings, _run_facts(report))
    add = page.sections.append
    add(leaderboard.Section("Main table", tables.to_html(main_table(report)) +
                            f'<p class="note">{escape.html_text(_ci_note(report))}</p>'))
    add(leaderboard.Section("Counts", tables.to_html(
        tables.counts_table(report.summary, view.metric_infos(report.run), view.generators, view))))
    if report.reference is not None and len(report.reference):
        add(leaderboard.Section("Published vs this run", tables.to_html(_reference_table(report))))
    if report.verdict is not None:
        body = tables.to_html(_delta_table(report))
        body += f"<p><b>{escape.html_text(report.verdict.line(report.options.decimals))}</b></p>"
        add(leaderboard.Section("This run minus other runs", body))
    for label in report.win_rate_labels:
        add(leaderboard.Section(f"Win rates: {view.metric(label)}", tables.to_html(_win_table(report, label))))
    if report.levels is not None and len(report.levels):
        add(leaderboard.Section("MIG-Bench per level", levels.to_html(report.levels, report.options.decimals)))
    if report.notes:
        add(leaderboard.Section("Notes", leaderboard.bullet_list(report.notes)))
    pictures = [n for n in names if n.startswith("plots/") and n.endswith(".png")]
    if pictures:
        add(leaderboard.Section("Plots", leaderboard.images(pictures)))
    add(leaderboard.Section(f"Images (seed index {report.options.grid_seed_index})", leaderboard.image_grid(
        report.run, layouts=report.options.grid_layouts, seed_index=report.options.grid_seed_index,
        generators=view.generators, names=view.generator_names)))
    add(leaderboard.Section("Files", leaderboard.links([n for n in names if not n.endswith(".png")])))
    return leaderboard.render(page)
