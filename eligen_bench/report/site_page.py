"""The files of the leaderboard site (index.html, leaderboard.json, provenance pages, images) and its command.

The page works from the file system and offline: no server, no CDN; one small script of our
own sorts a table by a click on its header and filters rows by entity-count bucket. Data
lives in the HTML itself (escaped text and `data-` attributes), never inside the script.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

from eligen_bench import __version__
from eligen_bench.atomic import atomic_write_bytes, atomic_write_text, folder_replaced
from eligen_bench.configurations import public_value
from eligen_bench.errors import InputError
from eligen_bench.escape import html_text, url_path
from eligen_bench.layout import MAX_SIDE
from eligen_bench.report import leaderboard as run_page
from eligen_bench.report import stats
from eligen_bench.report.configuration import configuration, configuration_text
from eligen_bench.report.data import Run
from eligen_bench.report.site import (
    ALL,
    BUCKETS,
    STRICT_FIELD,
    Column,
    Group,
    Leaderboard,
    bucket_of,
    build_leaderboard,
    value_fields,
)
from eligen_bench.run_files import MISSING, open_run_file, problem

log = logging.getLogger(__name__)
MAX_IMAGE_BYTES = 256 << 20
"""Largest image copied into a site (an 8192 x 8192 RGB PNG is at most about 200 MB)."""

STYLE = run_page.STYLE + """
table.board th{cursor:pointer;user-select:none}
table.board td.config{text-align:left;font-size:.8em;max-width:22em;overflow-wrap:anywhere}
details.notice{background:#fff8e1;border-left:4px solid #e0a800;padding:.3em .6em;margin:.3em 0;font-size:.9em}
table.board th[aria-sort=ascending]::after{content:" \\25B2"}
table.board th[aria-sort=descending]::after{content:" \\25BC"}
.key{color:#777;font-size:.75em;font-weight:normal}
.runs td,.runs th{text-align:left}
"""

SCRIPT = """
(function () {
  function value(cell) {
    var v = cell.getAttribute("data-v");
    if (v === null) { return cell.textContent.trim().toLowerCase(); }
    return v === "" ? null : parseFloat(v);
  }
  function sortBy(table, index, th) {
    var descending = th.getAttribute("aria-sort") === "ascending";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a.cells[index]), y = value(b.cells[index]);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var order = x < y ? -1 : (x > y ? 1 : 0);
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  document.querySelectorAll("table.board").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, index) {
      th.addEventListener("click", function () { sortBy(table, index, th); });
    });
  });
  var select = document.getElementById("bucket");
  function filter() {
    var bucket = select.value;
    document.querySelectorAll("tr[data-bucket]").forEach(function (row) {
      var mine = row.getAttribute("data-bucket");
      row.hidden = row.classList.contains("cmp") ? (bucket !== "all" && mine !== bucket) : mine !== bucket;
    });
  }
  select.addEventListener("change", filter);
  filter();
})();
"""


def write_site(board: Leaderboard, out: Path, *, per_bucket: int = 3) -> list[Path]:
    """Write the site under `out` (refusing a non-empty folder that is not one); paths written.

    The site is written into a temporary folder that then takes `out`'s place, so a failure
    part-way leaves no half site (and an earlier site as it was)."""
    check_out(out)
    data = json.dumps(site_data(board), indent=1, allow_nan=False) + "\n"
    page = index_html(board, per_bucket)
    with folder_replaced(out) as folder:
        written = [*copy_images(board, folder, per_bucket), *write_provenance(board, folder)]
        atomic_write_text(folder / "leaderboard.json", data)
        atomic_write_text(folder / "index.html", page)
    return [out / p.relative_to(folder) for p in written] + [out / "leaderboard.json", out / "index.html"]


def check_out(out: Path) -> None:
    """A folder that holds anything but an earlier leaderboard is the user's: never write there."""
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", where=str(out))
    if out.is_dir() and any(out.iterdir()) and not (out / "leaderboard.json").is_file():
        raise InputError("folder is not empty and holds no leaderboard.json; choose a new or empty folder",
                         where=str(out))


# leaderboard.json -------------------------------------------------------------------
def site_data(board: Leaderboard) -> dict[str, Any]:
    return {"format": 1, "eligen_bench_version": __version__, "buckets": [ALL, *(b[2] for b in BUCKETS)],
            "notes": board.notes, "groups": [_group_data(g) for g in board.groups]}


def _group_data(group: Group) -> dict[str, Any]:
    return {"title": group.title, "suite": group.suite, "seeds": group.seeds, "base_seed": group.base_seed,
            "notes": group.notes, "runs": [_run_data(run_id, run) for run_id, run in group.runs],
            "columns": [column.__dict__ for column in group.columns], "rows": group.rows}


def _run_data(run_id: str, run: Run) -> dict[str, Any]:
    return {"id": run_id, "name": run.name, "profile": run.profile, "created": run.manifest.get("created"),
            "code_version": run.manifest.get("code_version"), "warnings": run.warnings,
            "provenance": f"provenance/{run_id}.html", "manifest": f"provenance/{run_id}/manifest.json"}


# images -------------------------------------------------------------------------------
def shown_layouts(group: Group, per_bucket: int) -> list[Any]:
    """The first `per_bucket` layouts of each entity-count bucket, in suite order."""
    taken: dict[str, int] = {}
    shown = []
    for layout in group.runs[0][1].suite.layouts:
        bucket = bucket_of(len(layout.entities))
        if taken.get(bucket, 0) < per_bucket:
            taken[bucket] = taken.get(bucket, 0) + 1
            shown.append(layout)
    return shown


def image_name(run_id: str, generator: str, layout_id: str) -> tuple[str, ...]:
    return ("images", run_id, generator, f"{layout_id}_0.png")


def copy_images(board: Leaderboard, out: Path, per_bucket: int) -> list[Path]:
    """Seed-0 images of the shown layouts, copied so the site can be deployed as it is: only
    regular files inside their run that decode as PNG (`png_of`); the others are named and left out."""
    written = []
    for group in board.groups:
        for layout in shown_layouts(group, per_bucket):
            for run_id, run in group.runs:
                for generator in run.generators:
                    data = png_of(run, generator, layout.id, say=True)
                    if data is not None:
                        target = out.joinpath(*image_name(run_id, generator, layout.id))
                        atomic_write_bytes(target, data)
                        written.append(target)
    return written


def png_of(run: Run, generator: str, layout_id: str, *, say: bool = False) -> bytes | None:
    """The bytes of a seed-0 image of a run (checked: a regular file inside the run, a PNG that
    decodes), or None (said on the log with `say`, unless simply missing)."""
    from PIL import Image

    path = run.image_path(generator, layout_id, 0)
    why = problem(run.path, path)
    if why is None:
        try:
            with open_run_file(run.path, path, limit=MAX_IMAGE_BYTES) as handle:
                data = handle.read()
            with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
                if max(image.size) > MAX_SIDE:  # read from the header, before decoding a bomb
                    raise ValueError(f"{image.size[0]}x{image.size[1]} pixels")
                image.load()  # decodes every pixel: a truncated or forged file fails here
            return data
        except Exception as exc:  # PIL raises many types for damaged files
            why = f"is not a PNG that decodes ({type(exc).__name__})"
    if say and why != MISSING:
        log.warning("run %s: %s %s; not copied into the site", run.name, path, why)
    return None


# provenance ---------------------------------------------------------------------------
def write_provenance(board: Leaderboard, out: Path) -> list[Path]:
    written = []
    for group in board.groups:
        for run_id, run in group.runs:
            manifest = out / "provenance" / run_id / "manifest.json"
            # The published copy names local files by file name only (public_value).
            atomic_write_text(manifest, json.dumps(public_value(run.manifest), indent=1, default=str) + "\n")
            page = out / "provenance" / f"{run_id}.html"
            atomic_write_text(page, provenance_html(run_id, run))
            written += [manifest, page]
    return written


def _pre(data: Any) -> str:
    return f"<pre>{html_text(json.dumps(data, indent=1, default=str, ensure_ascii=False))}</pre>"


def provenance_html(run_id: str, run: Run) -> str:
    manifest = run.manifest
    facts = [("run folder", run.name), ("profile", run.profile), ("created", str(manifest.get("created", "?"))),
             ("code version", str(manifest.get("code_version", "?"))),
             ("eligen-bench", str(manifest.get("eligen_bench_version", "?"))),
             ("suite", f"{run.suite.name} v{run.suite.version}, hash {run.suite_hash}"),
             ("seeds", f"{run.seeds} (base seed {run.base_seed})")]
    page = run_page.Page(f"Provenance: {run.name}", run.warnings, facts)
    page.sections.append(run_page.Section("Local paths", '<p class="note">Local file paths are shown by file '
                                          "name only; the files are identified by their sha256.</p>"))
    notes = manifest.get("adapt_notes") or {}
    truncation = manifest.get("prompt_truncation") or {}
    for index, generator in enumerate(run.generators):
        body = (f'<div id="g-{index}"></div><h3>configuration</h3>'
                f"<p>{html_text(configuration_text(configuration(run, generator)))}</p>"
                f"<h3>settings and model ids</h3>"
                f"{_pre(public_value(run.config.get('generators', {}).get(generator, {})))}"
                f"<h3>adaptation notes</h3>{run_page.bullet_list(notes.get(generator) or ['none'])}")
        if generator in truncation:
            body += f"<h3>prompt truncation</h3>{_pre(truncation[generator])}"
        page.sections.append(run_page.Section(f"Generator {generator}", body))
    page.sections.append(run_page.Section("Metrics", _pre(public_value(run.config.get("metrics", {})))))
    page.sections.append(run_page.Section("Packages", _pre(manifest.get("packages", {}))))
    link = html_text(url_path(run_id, "manifest.json"))
    page.sections.append(run_page.Section("Manifest", f'<a href="{link}">manifest.json</a>'))
    return run_page.render(page)


# index.html ---------------------------------------------------------------------------
def index_html(board: Leaderboard, per_bucket: int) -> str:
    buckets = [ALL, *(b[2] for b in BUCKETS)]
    options = "".join(f'<option value="{b}">{"all layouts" if b == ALL else b + " entities"}</option>'
                      for b in buckets)
    notes = "".join(f'<p class="note">set apart: {html_text(n)}</p>' for n in board.notes)
    groups = "".join(group_html(g, per_bucket) for g in board.groups)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>eligen-bench leaderboard</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>eligen-bench leaderboard</h1>\n"
            f'<p><label>entities per layout: <select id="bucket">{options}</select></label> '
            '<a href="leaderboard.json">leaderboard.json</a></p>\n'
            f"{notes}{groups}<script>{SCRIPT}</script></body></html>\n")


def run_notice(run_id: str, run: Run) -> str:
    """One compact notice per run with warnings: their count and the first, the rest folded."""
    warnings = list(run.warnings)
    if not warnings:
        return ""
    items = "".join(f"<li>{html_text(w)}</li>" for w in warnings)
    return (f'<details class="notice"><summary>run {html_text(run_id)}: {len(warnings)} warning'
            f'{"s" if len(warnings) != 1 else ""}: {html_text(warnings[0])}</summary><ul>{items}</ul></details>')


def group_html(group: Group, per_bucket: int) -> str:
    notices = "".join(run_notice(run_id, run) for run_id, run in group.runs)
    notes = "".join(f'<p class="note">{html_text(n)}</p>' for n in group.notes)
    return (f"<h2>{html_text(group.title)}</h2>\n{notices}{notes}{board_table(group)}"
            '<p class="note">Rank: by the mean of the row\'s ranks over the metric columns (each column ranks '
            "by its direction). Cells: mean with its 95% percentile bootstrap interval over layouts; bold: best "
            "and underlined: second best in the column; strict: unparsed judge answers count as failures. "
            "Click a header to sort. Each column holds one metric key.</p>\n"
            f"<h3>Images (seed index 0, boxes and entity prompts drawn over them)</h3>\n"
            f"{comparison_table(group, per_bucket)}\n")


def _header(column: Column, value_field: str = "mean") -> str:
    arrow = "↑" if column.higher_is_better else "↓"
    unit = " (%)" if column.scale == 100 else ""
    labels = " / ".join(column.labels) + (" strict" if value_field == STRICT_FIELD else "")
    return (f'<th title="metric key {html_text(column.key)}">{html_text(labels)}{unit} {arrow}'
            f'<div class="key">key {html_text(column.key[:12])}</div></th>')


def board_table(group: Group) -> str:
    head = ("<th>rank</th><th>run</th><th>label</th><th>configuration</th><th>layouts</th><th>seeds</th>"
            + "".join(_header(c, f) for c in group.columns for f in value_fields(c)) + "<th>provenance</th>")
    index = {run_id: {g: i for i, g in enumerate(run.generators)} for run_id, run in group.runs}
    body = "".join(_board_row(row, group.columns, index[row["run"]][row["generator"]]) for row in group.rows)
    return f'<table class="board"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _board_row(row: dict[str, Any], columns: list[Column], generator_index: int) -> str:
    rank = row.get("rank")
    config = row["configuration"]
    cells = [f'<td data-v="{"" if rank is None else rank}" title="mean rank {_mean_rank(row)}">'
             f'{"–" if rank is None else rank}</td>',
             f"<td>{html_text(row['run'])}</td>", f"<td>{html_text(row['generator'])}</td>",
             f'<td class="config">{html_text(configuration_text(config))}</td>',
             f'<td data-v="{row["layouts"]}">{row["layouts"]}</td>', f'<td data-v="{row["seeds"]}">{row["seeds"]}</td>']
    for column in columns:
        cell = row["cells"].get(column.id)
        for value_field in value_fields(column):
            cells.append(_value_cell(cell, value_field))
    link = html_text(url_path("provenance", f"{row['run']}.html")) + f"#g-{generator_index}"
    cells.append(f'<td><a href="{link}">manifest</a></td>')
    return f'<tr class="row" data-bucket="{html_text(row["bucket"])}">{"".join(cells)}</tr>'


def _mean_rank(row: dict[str, Any]) -> str:
    return "–" if row.get("mean_rank") is None else f"{row['mean_rank']:.2f}"


def _value_cell(cell: dict[str, Any] | None, value_field: str) -> str:
    """A metric cell: mean (or strict rate), interval, best bold and second underlined."""
    prefix = "" if value_field == "mean" else "strict_"
    if cell is None or cell.get(value_field) is None:
        return '<td data-v="">–</td>'
    value = cell[value_field]
    text = f"{value:.2f}"
    mark = (cell.get("marks") or {}).get(value_field)
    text = {"best": f"<b>{text}</b>", "second": f"<u>{text}</u>"}.get(mark or "", text)
    interval = ""
    if cell.get(prefix + "ci_low") is not None:
        interval = f' <span class="ci">[{cell[prefix + "ci_low"]:.2f}, {cell[prefix + "ci_high"]:.2f}]</span>'
    title = f"n={cell['n']} over {cell['n_layouts']} layouts" + (
        f", {cell.get('n_unparsed', 0)} unparsed counted as failures" if prefix else "")
    return f'<td data-v="{value!r}" title="{html_text(title)}">{text}{interval}</td>'


def comparison_table(group: Group, per_bucket: int) -> str:
    pairs = [(run_id, run, generator) for run_id, run in group.runs for generator in run.generators]
    head = '<th class="prompts">layout</th>' + "".join(f"<th>{html_text(run_id)}<br>{html_text(g)}</th>"
                                                      for run_id, _, g in pairs)
    rows = []
    for layout in shown_layouts(group, per_bucket):
        overlay = run_page.box_overlay(layout)
        cells = [run_page.prompts_cell(layout)]
        for run_id, run, generator in pairs:
            if png_of(run, generator, layout.id) is not None:
                link = html_text(url_path(*image_name(run_id, generator, layout.id)))
                cells.append(f'<td><div class="frame"><img src="{link}" alt="{html_text(generator)} '
                             f'{html_text(layout.id)}">{overlay}</div></td>')
            else:
                cells.append('<td><div class="missing">missing</div></td>')
        bucket = html_text(bucket_of(len(layout.entities)))
        rows.append(f'<tr class="cmp" data-bucket="{bucket}">{"".join(cells)}</tr>')
    return f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def command(args: Any) -> int:
    """`eligen-bench leaderboard RUN_OR_GLOB... --out DIR`: build, say what was set apart, write."""
    from eligen_bench.atomic import check_writable

    check_out(args.out)  # numbers are ranged by the parser; the folder before any run is read
    check_writable(args.out.parent if args.out.exists() else args.out, field="--out")
    board = build_leaderboard(args.runs, bootstrap=stats.BootstrapOptions(resamples=args.bootstrap_resamples))
    for note in [*board.skipped, *board.notes]:  # what was no run folder: said here, never on the page
        print(f"set apart: {note}")
    write_site(board, args.out, per_bucket=args.layouts_per_bucket)
    rows = sum(1 for g in board.groups for r in g.rows if r["bucket"] == ALL)
    runs = sum(len(g.runs) for g in board.groups)
    print(f"leaderboard: {runs} run(s), {rows} row(s) in {len(board.groups)} group(s)")
    print(f"wrote {args.out / 'index.html'} and {args.out / 'leaderboard.json'}")
    return 0
