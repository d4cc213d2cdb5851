"""Paper-ready tables: row and column order, display names, intervals, table.tex (compiled with
pdflatex when it is installed), the protocol caption, notes below the table, results.json, and
figures in PNG, PDF and SVG."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report import FAST, VLM, make_run

from eligen_bench.cli import main
from eligen_bench.report import write_report
from eligen_bench.report.names import PresentationOptions
from eligen_bench.tiny import TINY_WARNING

ORDER = {"generators": ["migc", "eligen", "gligen"], "metrics": ["pickscore", VLM, "miou"]}
NAMES = {"generators": {"eligen": "EliGen (ours)", "gligen": "GLIGEN", "migc": "MIGC"},
         "metrics": {"miou": "mIoU", VLM: "Qwen2-VL", "pickscore": "PickScore"}}


def paper_run(root: Path, **kwargs) -> Path:
    """A hand-built run whose manifest records the order and names a `run` command was given."""
    run = make_run(root, **kwargs)
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    manifest["order"] = ORDER
    manifest["display_names"] = NAMES
    manifest["config"]["metrics"][VLM]["identity"]["models"] = {"judge": "Qwen/Qwen2-VL-7B-Instruct",
                                                                "judge_revision": "default"}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run


def table_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.split("## Counts")[0].splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_rows_and_columns_follow_the_run_and_show_display_names(tmp_path: Path) -> None:
    run = paper_run(tmp_path)
    write_report(run, options=FAST)
    rows = table_rows((run / "report" / "table.md").read_text(encoding="utf-8"))
    assert [r[0] for r in rows] == ["Model", "MIGC", "EliGen (ours)", "GLIGEN"]
    assert rows[0][1:] == ["PickScore ↑", "Qwen2-VL parsed (%) ↑", "Qwen2-VL strict (%) ↑", "mIoU (%) ↑"]
    assert rows[2][1].startswith("**21.00**") and rows[2][2].startswith("**83.33**")
    latex = (run / "report" / "table.tex").read_text(encoding="utf-8")
    assert latex.index("MIGC &") < latex.index("EliGen (ours) &") < latex.index("GLIGEN &")
    assert "Model & PickScore $\\uparrow$ & Qwen2-VL parsed (\\%) $\\uparrow$" in latex
    summary = (run / "report" / "summary.csv").read_text(encoding="utf-8")
    assert "display_name" in summary.splitlines()[0] and "mIoU" in summary


def test_a_report_can_reorder_subset_and_rename(tmp_path: Path) -> None:
    run = paper_run(tmp_path)
    shown = PresentationOptions(generators="gligen,eligen", metrics="miou", generator_names="eligen=Ours")
    write_report(run, options=dataclasses.replace(FAST, presentation=shown))
    rows = table_rows((run / "report" / "table.md").read_text(encoding="utf-8"))
    assert [r[0] for r in rows] == ["Model", "GLIGEN", "Ours"] and rows[0][1:] == ["mIoU (%) ↑"]
    assert main(["report", str(run), "--generators", "eligen,nobody"]) == 2


def test_interval_styles(tmp_path: Path) -> None:
    run = paper_run(tmp_path)
    styles = {}
    for style in ("brackets", "pm", "none"):
        write_report(run, options=dataclasses.replace(FAST, intervals=style, plots=False))
        styles[style] = (run / "report" / "table.md").read_text(encoding="utf-8")
    migc_miou = {style: next(r for r in table_rows(text) if r[0] == "MIGC")[-1] for style, text in styles.items()}
    # migc's miou is 0.2 on every entity: a zero-width interval around 20.
    assert migc_miou == {"brackets": r"20.00 \[20.00, 20.00\]", "pm": "20.00 ± 0.00", "none": "20.00"}
    assert "Brackets: the 95% percentile bootstrap interval" in styles["brackets"]
    assert "±: half the width of the 95%" in styles["pm"]


def _latex_value(latex: str, row: str, column: int) -> str:
    line = next(line for line in latex.splitlines() if line.startswith(f"{row} &"))
    return line.split(" & ")[column]


def test_latex_marks_best_and_second_by_direction_and_keeps_notes_out_of_the_caption(tmp_path: Path) -> None:
    run = paper_run(tmp_path)  # tiny profile: a warning the page and the notes carry
    write_report(run, options=dataclasses.replace(FAST, latex_layout="wide"))
    latex = (run / "report" / "table.tex").read_text(encoding="utf-8")
    assert r"\begin{table*}[t]" in latex and r"\end{table*}" in latex and r"\textwidth" in latex
    # mIoU (higher is better): gligen 70 best, eligen 40 second, migc 20 unmarked.
    assert _latex_value(latex, "GLIGEN", 4).startswith(r"\textbf{70.00}")
    assert _latex_value(latex, "EliGen (ours)", 4).startswith(r"\underline{40.00}")
    assert _latex_value(latex, "MIGC", 4).startswith("20.00")
    caption = re.search(r"\\caption\{(.*)\}", latex).group(1)
    assert "testsuite v1 (3 layouts, suite hash" in caption and "1 seed(s) per layout (base seed 0)" in caption
    assert "Judges: Qwen2-VL: Qwen/Qwen2-VL-7B-Instruct." in caption
    assert "tiny" not in caption and "hand-made test suite" not in caption
    below = latex.split(r"\end{tabular}}")[1]
    assert "tiny profile" in below and "Note: suite: hand-made test suite" in below
    lower = dataclasses.replace(FAST, plots=False)
    run_b = paper_run(tmp_path / "b")
    manifest = json.loads((run_b / "manifest.json").read_text(encoding="utf-8"))
    manifest["config"]["metrics"]["miou"]["higher_is_better"] = False
    (run_b / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    write_report(run_b, options=lower)
    flipped = (run_b / "report" / "table.tex").read_text(encoding="utf-8")
    assert _latex_value(flipped, "MIGC", 4).startswith(r"\textbf{20.00}")
    assert _latex_value(flipped, "EliGen (ours)", 4).startswith(r"\underline{40.00}")


@pytest.mark.parametrize("layout", ["column", "wide"])
def test_latex_compiles_with_pdflatex(tmp_path: Path, layout: str) -> None:
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("pdflatex is not installed (Debian: texlive-latex-base and texlive-latex-recommended)")
    run = paper_run(tmp_path)
    write_report(run, options=dataclasses.replace(FAST, latex_layout=layout, plots=False))
    document = tmp_path / "paper.tex"
    document.write_text("\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
                        "\\begin{document}\nSome text.\n\\input{" + (run / "report" / "table.tex").as_posix()
                        + "}\n\\end{document}\n", encoding="utf-8")
    result = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", document.name],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "paper.pdf").stat().st_size > 1000
    log = (tmp_path / "paper.log").read_text(encoding="utf-8", errors="replace")
    assert "Overfull \\hbox" not in log  # the table fits its column (or the page)
    latex = (run / "report" / "table.tex").read_text(encoding="utf-8")
    assert latex.count(r"\textbf{") >= 4 and latex.count(r"\underline{") >= 4


def test_results_json_holds_config_versions_results_and_references(tmp_path: Path) -> None:
    run = paper_run(tmp_path)
    write_report(run, options=FAST)
    data = json.loads((run / "report" / "results.json").read_text(encoding="utf-8"))
    assert data["format"] == 1 and data["profile"] == "tiny"
    assert data["config"]["suite"]["layouts"] == 3 and data["config"]["seeds"] == 1
    assert data["versions"]["code"] == "abc123" and "numpy" in data["versions"]["packages"]
    assert list(data["results"]) == ORDER["generators"] and list(data["results"]["eligen"]) == ORDER["metrics"]
    cell = data["results"]["gligen"]["miou"]
    assert cell["mean"] == pytest.approx(70.0) and cell["ci_low"] <= 70.0 <= cell["ci_high"]
    assert (cell["n"], cell["n_excluded"]) == (5, 1)
    assert data["results"]["migc"][VLM]["strict_mean"] == pytest.approx(100 * 4 / 6)
    assert data["config"]["generators"]["eligen"]["display_name"] == "EliGen (ours)"
    assert "references" in data and TINY_WARNING in data["warnings"]
    assert "suite: hand-made test suite" in data["notes"]


def test_figures_in_three_formats_with_the_tiny_mark_only(tmp_path: Path) -> None:
    run = paper_run(tmp_path)
    write_report(run, options=dataclasses.replace(FAST, plot_formats=("png", "pdf", "svg")))
    plots = run / "report" / "plots"
    for extension in ("png", "pdf", "svg"):
        assert (plots / f"bar_miou.{extension}").stat().st_size > 1000
    svg = (plots / "bar_miou.svg").read_text(encoding="utf-8")
    assert "tiny profile" in svg and "hand-made test suite" not in svg and "mIoU" in svg
    assert (plots / "bar_miou.pdf").read_bytes().startswith(b"%PDF")
    page = (run / "report" / "index.html").read_text(encoding="utf-8")
    assert page.count(TINY_WARNING) == 1  # once per page
    assert "<title>eligen-bench report: run_a</title>" in page
    assert 'href="plots/bar_miou.pdf"' in page and 'href="plots/bar_miou.svg"' in page


def test_suite_notes_are_notes_and_the_summary_ends_with_the_report(tmp_path: Path, capsys) -> None:
    run = paper_run(tmp_path, profile="full")
    assert main(["report", "--out", str(run), "--plot-formats", "png"]) == 0
    printed = capsys.readouterr().out.rstrip("\n").split("\n")
    assert printed[0].startswith("Model") and "PickScore ↑" in printed[0]
    assert any(line.startswith("GLIGEN") and "[" in line for line in printed)  # intervals shown
    assert "note: suite: hand-made test suite" in printed
    assert printed[-1].startswith(f"report: {run / 'report' / 'index.html'}")
    markdown = (run / "report" / "table.md").read_text(encoding="utf-8")
    assert "WARNING" not in markdown and "- suite: hand-made test suite" in markdown
