"""User-supplied text cannot change the structure of any output: HTML, Markdown, LaTeX, CSV,
in the per-run report and in the leaderboard site."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from eligen_bench import escape
from eligen_bench.cli import main
from eligen_bench.layout import Entity, Layout
from eligen_bench.report import ReportOptions, write_report
from eligen_bench.suite import Suite

TEXT = '<script>alert(1)</script> "><img src=x onerror=alert(2)> a|b & 50% x_y $z$ back\\slash'
LINES = TEXT + "\nINJECTED | row | here |\n\n% INJECTED\n"
"""With newlines: a Markdown row, a blank line (ends a LaTeX paragraph), a new % line."""
GENERATORS = ("gen-b.x_1", "g2")
"""Generator labels are folder names: a received run may hold only safe names there."""
METRIC = "=1+2 fill| INJECTED |<marquee>"
"""A metric label is free text on one line (a received run's text may not hold line breaks)."""


def hostile_run(root: Path) -> Path:
    run = root / "hostile-run"
    run.mkdir(parents=True)
    layouts = (Layout("L0", TEXT, (Entity(TEXT, (0.1, 0.1, 0.5, 0.5), category="cat"),), 64, 64),
               Layout("L1", "plain", (Entity("a dog", (0.5, 0.5, 0.9, 0.9)), Entity("b", (0.1, 0.1, 0.3, 0.3))), 64, 64))
    suite = Suite("hostile", "1", layouts, notes=(TEXT,))
    suite.write(run / "suite.jsonl")
    metric = {"name": "region_fill", "options": {"template": LINES}, "identity": {"template": LINES},
              "key": "k_fill", "higher_is_better": True, "level": "entity", "scale": 1}
    manifest = {
        "format": 1, "eligen_bench_version": TEXT, "created": TEXT, "code_version": TEXT, "profile": "full",
        "warnings": [f"suite note: {TEXT}"],
        "config": {"suite": {"name": "hostile", "version": "1", "hash": suite.hash, "count": 2, "notes": [TEXT]},
                   "generators": {g: {"name": "box-painter", "settings": {"note": LINES}} for g in GENERATORS},
                   "metrics": {METRIC: metric}, "seeds": 1, "base_seed": 0},
        "adapt_notes": {GENERATORS[0]: [TEXT]},
    }
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    rows = []
    for g_index, generator in enumerate(GENERATORS):
        (run / "images" / generator).mkdir(parents=True)
        for layout in layouts:
            Image.new("RGB", (8, 8), (200, 10, 10)).save(run / "images" / generator / f"{layout.id}_0.png")
            for e_index in range(len(layout.entities)):
                rows.append({"metric": METRIC, "generator": generator, "layout_id": layout.id, "seed_index": 0,
                             "seed": 1, "entity_index": e_index, "value": 0.25 + 0.5 * g_index, "status": "ok",
                             "detail": "{}", "image_sha256": "x", "metric_key": "k_fill"})
    pd.DataFrame(rows).to_parquet(run / "scores.parquet")
    return run


def check_html(page: str) -> None:
    assert "<script>alert" not in page and "<img src=x" not in page and "<marquee>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def check_markdown(text: str) -> None:
    assert "<script>" not in text and "<img" not in text and "<marquee>" not in text
    assert not any(line.lstrip("> ").startswith(("INJECTED", "% INJECTED")) for line in text.splitlines())
    # Every row of a table has the header's number of (unescaped) cell separators.
    width = None
    for line in text.splitlines():
        if not line.startswith("|"):
            width = None
            continue
        pipes = len(re.findall(r"(?<!\\)\|", line))
        width = pipes if width is None else width
        assert pipes == width, line


def check_latex(text: str) -> None:
    lines = text.splitlines()
    assert "" not in lines[:-1], "a blank line ends the caption's paragraph"
    for line in lines:
        assert not line.startswith("INJECTED")
        if line.startswith("%"):
            continue
        assert not re.search(r"(?<!\\)%", line), line
        assert "x_y" not in line and "$z$" not in line and "back\\slash" not in line and "<script>" not in line
    assert r"x\_y" in text and r"\$z\$" in text and r"back\textbackslash{}slash" in text


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = hostile_run(tmp_path_factory.mktemp("escaping"))
    write_report(run, options=ReportOptions(bootstrap_resamples=50))
    return run


def test_per_run_report_escapes_every_user_text(hostile: Path) -> None:
    report = hostile / "report"
    check_html((report / "index.html").read_text(encoding="utf-8"))
    for path in report.glob("*.md"):
        check_markdown(path.read_text(encoding="utf-8"))
    table = (report / "table.md").read_text(encoding="utf-8")
    assert escape.markdown_text(METRIC) in table and "\\| INJECTED \\|&lt;marquee&gt;" in table  # kept, as text
    check_latex((report / "table.tex").read_text(encoding="utf-8"))
    summary = pd.read_csv(report / "summary.csv")
    assert "'" + METRIC in set(summary["metric"]) and summary["mean"].dtype.kind == "f"
    assert sorted(summary["mean"]) == pytest.approx([0.25, 0.75])


def test_leaderboard_escapes_every_user_text(hostile: Path, tmp_path: Path) -> None:
    assert main(["leaderboard", str(hostile), "--out", str(tmp_path / "site"), "--bootstrap-resamples", "20"]) == 0
    check_html((tmp_path / "site" / "index.html").read_text(encoding="utf-8"))
    provenance = (tmp_path / "site" / "provenance" / "hostile-run.html").read_text(encoding="utf-8")
    assert "<script>" not in provenance and "<img src=x" not in provenance
    data = json.loads((tmp_path / "site" / "leaderboard.json").read_text(encoding="utf-8"))
    assert data["groups"][0]["runs"][0]["code_version"] == TEXT


def test_escape_functions() -> None:
    assert escape.markdown_text("a\nb|c") == "a b\\|c"
    assert escape.markdown_text("k_miou_v2 _x_") == "k_miou_v2 \\_x\\_"
    assert escape.latex_text("50%\n\nnext") == r"50\% next"
    assert escape.latex_comment("a\n\\end{table}") == r"% a \textbackslash{}end\{table\}"
    assert escape.csv_cell("=SUM(A1)") == "'=SUM(A1)" and escape.csv_cell(-1.5) == -1.5
    assert escape.csv_cell("@x") == "'@x" and escape.csv_cell("+1") == "'+1" and escape.csv_cell("ok") == "ok"
    assert escape.url_path("..", "images", "a#b?c", "x.png") == "../images/a%23b%3Fc/x.png"
