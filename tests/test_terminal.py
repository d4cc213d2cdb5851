"""What a tiny-profile run prints: a short, quiet terminal by default, the details with -v;
prompt truncation is counted per generator and encoder, not printed as noise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eligen_bench.suites.bundled import load_mini
from eligen_bench.tiny import t5_tokenizer

LIMIT = 4


def cli(*args: str) -> subprocess.CompletedProcess:
    """The command in a fresh process, its output captured as a pipe (the non-terminal case)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "YOLO_OFFLINE": "1"}
    # Bytes, not text: text mode would turn each carriage return of a progress bar into a line.
    result = subprocess.run([sys.executable, "-m", "eligen_bench.cli", *args], capture_output=True, env=env,
                            timeout=900)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(),
                                       result.stderr.decode())


def lines(result: subprocess.CompletedProcess) -> list[str]:
    # A terminal line ends with a newline; a progress bar redraws itself with carriage returns.
    return (result.stdout + result.stderr).rstrip("\n").split("\n")


@pytest.mark.slow
def test_tiny_run_prints_fewer_than_40_lines_and_records_truncation(tmp_path: Path) -> None:
    out = tmp_path / "run"
    quiet = cli("run", "--profile", "tiny", "--limit", str(LIMIT), "--out", str(out))
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    printed = lines(quiet)
    assert len(printed) < 40, "\n".join(printed)
    text = "\n".join(printed)
    assert "INFO" not in text and "truncated because" not in text and "Loading" not in text
    assert "Warning" not in text  # no Python warnings of the model libraries
    last = quiet.stdout.rstrip("\n").split("\n")[-1]
    assert last.startswith(f"report: {out / 'report' / 'index.html'}")  # where the report is, last
    assert any(line.startswith("EliGen ") and "[" in line for line in printed)  # the main table, with intervals
    # One bar per stage: every line with a bar is the generate or the score stage's.
    bars = [line for line in printed if "kept from before" in line]
    assert bars and all(line.lstrip("\r").startswith(("generate", "score")) for line in bars), bars

    # Truncation: the plain FLUX generator encodes the global prompts and the negative prompt
    # with the tiny profile's T5 limit; the manifest lists exactly those longer than it.
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    settings = manifest["config"]["generators"]["flux"]["settings"]
    limit = settings["max_sequence_length"]
    tokenizer = t5_tokenizer()
    prompts = {layout.prompt for layout in load_mini().layouts[:LIMIT]} | {settings["negative_prompt"]}
    expected = sorted(p for p in prompts if len(tokenizer(p)["input_ids"]) > limit)
    record = manifest["prompt_truncation"]["flux"]["t5"]
    assert expected and record["prompts"] == expected and record["truncated"] == len(expected)
    assert record["max_tokens"] == limit and manifest["prompt_truncation"]["flux"]["clip"]["max_tokens"] == 77
    notes = (out / "report" / "table.md").read_text(encoding="utf-8")
    assert f"flux: {len(expected)} distinct prompt(s) truncated by the t5 encoder at {limit} tokens" in notes

    # The same command with -v: nothing to make, and the details are shown.
    verbose = cli("-v", "run", "--profile", "tiny", "--limit", str(LIMIT), "--out", str(out))
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert "INFO eligen_bench" in verbose.stderr and "already done" in verbose.stderr
