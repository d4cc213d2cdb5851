"""`index.html`: a run's static report page (no scripts) next to the other report files.

The page lives in `<run>/report/`, so images are linked as `../images/<generator>/<file>`;
entity boxes are inline SVG rectangles in normalised coordinates laid over each image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from eligen_bench.escape import html_text, url_path
from eligen_bench.layout import Layout
from eligen_bench.report.data import Run
from eligen_bench.run_files import is_run_file

PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324")

STYLE = """
body{font-family:sans-serif;margin:1.5em;max-width:1400px}
.warn{background:#fde2e1;border:2px solid #c0392b;color:#7b241c;padding:.6em 1em;margin-bottom:1em}
.warn ul{margin:.3em 0 0 0}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:center;font-size:.9em}
.ci{color:#777;font-size:.8em}
.note{color:#555;font-size:.85em}
table.grid{width:100%;table-layout:fixed}
.grid td,.grid th{vertical-align:top;padding:2px;overflow-wrap:anywhere}
.grid td.prompts{width:14em}
.frame{position:relative;display:inline-block;width:100%;max-width:200px;line-height:0}
.frame img{width:100%;height:auto;display:block}
.frame svg{position:absolute;left:0;top:0;width:100%;height:100%}
.missing{width:100%;max-width:200px;aspect-ratio:1;background:#eee;color:#999;display:flex;align-items:center;justify-content:center}
.prompts{text-align:left;font-size:.8em}
.tag{position:absolute;font-size:9px;line-height:1.1;color:#fff;padding:0 2px;max-width:45%;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em}
"""


@dataclass
class Section:
    """A titled piece of HTML (already escaped/rendered)."""

    title: str
    body: str


@dataclass
class Page:
    """Everything index.html shows, in order."""

    title: str
    warnings: list[str]
    facts: list[tuple[str, str]]
    sections: list[Section] = field(default_factory=list)


def render(page: Page) -> str:
    banner = warning_box(page.warnings)
    facts = "".join(f"<tr><th>{html_text(k)}</th><td>{html_text(v)}</td></tr>" for k, v in page.facts)
    sections = "".join(f"<h2>{html_text(s.title)}</h2>\n{s.body}\n" for s in page.sections)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html_text(page.title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{banner}\n<h1>{html_text(page.title)}</h1>\n"
            f"<table>{facts}</table>\n{sections}</body></html>\n")


def warning_box(warnings: Sequence[str]) -> str:
    """Every warning of a page in one box (one line when there is one)."""
    if not warnings:
        return ""
    if len(warnings) == 1:
        return f'<div class="warn"><b>WARNING:</b> {html_text(warnings[0])}</div>'
    items = "".join(f"<li>{html_text(w)}</li>" for w in warnings)
    return f'<div class="warn"><b>WARNINGS ({len(warnings)}):</b><ul>{items}</ul></div>'


def box_overlay(layout: Layout) -> str:
    """An SVG laid over an image: one outlined rectangle per entity, in the layout's palette."""
    rects = []
    for i, entity in enumerate(layout.entities):
        x1, y1, x2, y2 = entity.bbox
        colour = PALETTE[i % len(PALETTE)]
        rects.append(f'<rect x="{x1:.4f}" y="{y1:.4f}" width="{x2 - x1:.4f}" height="{y2 - y1:.4f}" '
                     f'fill="none" stroke="{colour}" stroke-width="2" vector-effect="non-scaling-stroke">'
                     f"<title>{html_text(entity.prompt)}</title></rect>")
    return f'<svg viewBox="0 0 1 1" preserveAspectRatio="none">{"".join(rects)}</svg>' + prompt_tags(layout)


def prompt_tags(layout: Layout) -> str:
    """Each entity's prompt at the top left corner of its box, on the box's colour."""
    return "".join(
        f'<span class="tag" style="left:{100 * e.bbox[0]:.2f}%;top:{100 * e.bbox[1]:.2f}%;'
        f'background:{PALETTE[i % len(PALETTE)]}">{html_text(e.prompt)}</span>'
        for i, e in enumerate(layout.entities))


def prompts_cell(layout: Layout) -> str:
    items = "".join(
        f'<li><span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></span>'
        f"{html_text(e.prompt)}{f' <i>({html_text(e.category)})</i>' if e.category else ''}</li>"
        for i, e in enumerate(layout.entities))
    return (f'<td class="prompts"><b>{html_text(layout.id)}</b><br>{html_text(layout.prompt)}'
            f"<ul>{items}</ul></td>")


def image_grid(run: Run, *, layouts: int = 12, seed_index: int = 0, generators: Sequence[str] | None = None,
               names: Mapping[str, str] | None = None) -> str:
    """The first `layouts` layouts, one row each, one column per generator, boxes overlaid;
    the table takes the page's width and the images shrink to fit it."""
    generators = list(run.generators if generators is None else generators)
    names = names or {}
    head = '<th class="prompts">layout</th>' + "".join(f"<th>{html_text(names.get(g, g))}</th>" for g in generators)
    rows = []
    for layout in run.suite.layouts[:layouts]:
        cells = [prompts_cell(layout)]
        overlay = box_overlay(layout)
        for generator in generators:
            path = run.image_path(generator, layout.id, seed_index)
            if is_run_file(run.path, path):  # never a link out of the run, nor a FIFO
                link = html_text(url_path("..", "images", generator, path.name))
                cells.append(f'<td><a href="{link}"><div class="frame"><img src="{link}" '
                             f'alt="{html_text(generator)} {html_text(layout.id)}" loading="lazy">'
                             f"{overlay}</div></a></td>")
            else:
                cells.append('<td><div class="missing">missing</div></td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def links(names: Sequence[str]) -> str:
    return "<ul>" + "".join(f'<li><a href="{html_text(n)}">{html_text(n)}</a></li>'
                            for n in names) + "</ul>"


def images(names: Sequence[str]) -> str:
    return "".join(f'<img src="{html_text(n)}" alt="{html_text(n)}" style="max-width:45%">'
                   for n in names)


def bullet_list(lines: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{html_text(line)}</li>" for line in lines) + "</ul>"
