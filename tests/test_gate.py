"""The regression gate: delta table, verdict line, verdict.json, margins, gated metrics, labels
compared by configuration, and no stale comparison files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_report import VLM, make_run

from eligen_bench.cli import main

GATE_ARGS = ["--plot-formats", "png"]


def shift(run: Path, metric: str, generator: str, by: float) -> None:
    """Move every valid value of one (metric, generator) cell of a run by `by` (in raw units)."""
    scores = pd.read_parquet(run / "scores.parquet")
    cell = (scores["metric"] == metric) & (scores["generator"] == generator) & (scores["status"] == "ok")
    scores.loc[cell, "value"] += by
    scores.to_parquet(run / "scores.parquet")


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """The last run and a new one where eligen's miou dropped 5 points on every entity (a clear
    regression), its PickScore rose by 1 on every image (a clear improvement) and its VLM
    success is unchanged."""
    previous = make_run(tmp_path, "previous", profile="full")
    current = make_run(tmp_path, "current", profile="full")
    shift(current, "miou", "eligen", -0.05)
    shift(current, "pickscore", "eligen", 1.0)
    return current, previous


def report(current: Path, previous: Path, *extra: str) -> int:
    return main(["report", str(current), "--compare", str(previous), *GATE_ARGS, *extra])


def verdict(current: Path) -> dict:
    return json.loads((current / "report" / "verdict.json").read_text(encoding="utf-8"))


def results(data: dict) -> dict[tuple[str, str], dict]:
    return {(c["generator"], c["metric"]): c for c in data["comparisons"]}


def test_verdict_names_the_regression_and_fails(pair: tuple[Path, Path], capsys) -> None:
    current, previous = pair
    assert report(current, previous, "--fail-on-regression") == 1
    printed = capsys.readouterr().out.splitlines()
    # The delta table: metric, label, this run, the other run, difference, paired interval, gate.
    header = next(line for line in printed if line.startswith("metric"))
    assert all(word in header for word in ("label", "this run", "previous", "difference", "95% paired interval"))
    miou = next(line for line in printed if line.startswith("miou") and " eligen " in line)
    assert "35.00" in miou and "40.00" in miou and "-5.00" in miou and "[-5.00, -5.00]" in miou
    assert miou.rstrip().endswith("regressed")
    line = next(line for line in printed if line.startswith("regression gate:"))
    assert line.startswith("regression gate: FAIL (9 comparisons, 1 regression: miou eligen -5.00 [-5.00, -5.00]")
    assert printed[-1].startswith("report: ")  # the last line says where the report is

    data = verdict(current)
    assert data["verdict"] == "FAIL" and data["enforced"] and data["regressions"] == 1
    assert data["comparisons_gated"] == 9 and "below -margin" in data["rule"]
    cells = results(data)
    assert cells[("eligen", "miou")]["result"] == "regressed"
    assert cells[("eligen", "miou")]["difference"] == pytest.approx(-5.0)
    assert cells[("eligen", "miou")]["interval"] == pytest.approx([-5.0, -5.0])
    assert cells[("eligen", "pickscore")]["result"] == "improved"
    assert cells[("eligen", "pickscore")]["difference"] == pytest.approx(1.0)
    assert cells[("eligen", VLM)]["result"] == "no significant change"
    assert cells[("eligen", VLM)]["difference"] == pytest.approx(0.0)
    assert {c["interval_kind"] for c in data["comparisons"]} == {"paired"}


def test_a_margin_larger_than_the_drop_turns_the_fail_into_a_pass(pair: tuple[Path, Path], capsys) -> None:
    current, previous = pair
    assert report(current, previous, "--fail-on-regression", "--margin", "miou=6") == 0
    printed = capsys.readouterr().out
    assert "regression gate: PASS (9 comparisons, 0 regressions)" in printed
    data = verdict(current)
    assert data["verdict"] == "PASS" and data["margins"] == {"miou": 6.0}
    assert results(data)[("eligen", "miou")]["result"] == "worse within margin"
    # A margin smaller than the drop leaves the regression standing.
    assert report(current, previous, "--fail-on-regression", "--margin", "miou=4.5") == 1
    assert verdict(current)["verdict"] == "FAIL"


def test_gate_metrics_choose_what_is_judged(pair: tuple[Path, Path]) -> None:
    current, previous = pair
    assert report(current, previous, "--fail-on-regression", "--gate-metrics", "pickscore,vlm_success") == 0
    data = verdict(current)
    assert data["gate_metrics"] == ["pickscore", "vlm_success"] and data["comparisons_gated"] == 6
    miou = results(data)[("eligen", "miou")]
    assert miou["result"] == "not gated" and "--gate-metrics" in miou["reason"]


def test_a_label_naming_another_configuration_is_shown_not_gated(pair: tuple[Path, Path], capsys) -> None:
    current, previous = pair
    manifest = json.loads((previous / "manifest.json").read_text(encoding="utf-8"))
    manifest["config"]["generators"]["eligen"] = {"name": "flux", "settings": {"lora_scale": 0.5}}
    (previous / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert report(current, previous, "--fail-on-regression") == 0
    warnings = (current / "report" / "warnings.txt").read_text(encoding="utf-8")
    assert "label 'eligen' names another configuration there (method flux there, eligen here; " \
           "lora_scale: 0.5 there, (not set) here)" in warnings
    assert "regression gate: PASS (6 comparisons" in capsys.readouterr().out
    miou = results(verdict(current))[("eligen", "miou")]
    assert miou["result"] == "not gated" and "another configuration" in miou["reason"]
    assert verdict(current)["configurations"]["previous"]["eligen"][0] == "method flux there, eligen here"
    deltas = pd.read_csv(current / "report" / "deltas.csv")
    assert not deltas.loc[deltas["generator"] == "eligen", "same_configuration"].any()
    assert deltas.loc[deltas["generator"] == "gligen", "same_configuration"].all()
    # Asked for, the pair is gated (and the drop fails the gate).
    assert report(current, previous, "--fail-on-regression", "--gate-changed", "eligen") == 1


def test_comparison_files_never_outlive_the_comparison(pair: tuple[Path, Path]) -> None:
    current, previous = pair
    assert report(current, previous) == 0  # without --fail-on-regression the verdict is shown, exit 0
    folder = current / "report"
    assert {"deltas.csv", "deltas.md", "verdict.json"} <= {p.name for p in folder.iterdir()}
    assert verdict(current)["enforced"] is False
    assert main(["report", str(current), *GATE_ARGS]) == 0  # report/ is replaced whole
    names = {p.name for p in folder.iterdir()}
    assert not names & {"deltas.csv", "deltas.md", "verdict.json"}
    assert "table.md" in names


def test_gate_options_are_checked_before_any_work(pair: tuple[Path, Path], capsys) -> None:
    current, previous = pair
    assert main(["report", str(current), "--margin", "miou=1"]) == 2
    assert "--margin: needs a run to compare with" in capsys.readouterr().err
    assert report(current, previous, "--margin", "nope=1") == 2
    assert "no metric label or name 'nope'" in capsys.readouterr().err
    assert report(current, previous, "--margin", "miou=-1") == 2
    assert "finite number >= 0" in capsys.readouterr().err
    assert report(current, previous, "--gate-changed", "nobody") == 2
    assert "no generator label(s) ['nobody']" in capsys.readouterr().err
    assert not (current / "report").exists()
