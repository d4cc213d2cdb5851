"""Plugin discovery through entry points: lazy, and a broken plugin is reported, not fatal."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eligen_bench import registry
from eligen_bench.cli import main

from fixtures import add_generator_entry

BUILT_IN_GENERATORS = {"flux", "eligen", "regional-flux", "gligen", "multidiffusion", "migc", "instancediffusion", "roictrl"}
BUILT_IN_METRICS = {"miou", "clip_entity", "clip_global", "aesthetic", "vlm_success", "pickscore", "mps",
                    "mig_bench", "instdiff_attribute_acc", "instdiff_regional_clip", "instdiff_ap"}


def test_built_ins_register_through_entry_points() -> None:
    assert set(registry.entries("generator")) >= BUILT_IN_GENERATORS
    assert set(registry.entries("metric")) >= BUILT_IN_METRICS
    assert "mini" in registry.entries("suite")
    entry = registry.entries("generator")["flux"]
    assert entry.target.startswith("eligen_bench.generators.") and entry.origin == "eligen-bench"


def test_listing_imports_no_heavy_library() -> None:
    code = ("import sys; from eligen_bench.cli import main; main(['ls']); "
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'open_clip', 'ultralytics', 'vllm') "
            "if m in sys.modules]; print('HEAVY', heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    for name in BUILT_IN_GENERATORS | BUILT_IN_METRICS:
        assert f"  {name} " in result.stdout
    assert "BROKEN" not in result.stdout


def test_every_built_in_names_its_reference_in_ls(capsys) -> None:
    assert main(["ls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for kind, names in (("generator", BUILT_IN_GENERATORS), ("metric", BUILT_IN_METRICS)):
        for name in names:
            reference = registry.get(kind, name).reference
            assert reference, name
            row = next(i for i, line in enumerate(lines) if line.startswith(f"  {name} "))
            assert lines[row + 1].strip() == f"follows {reference}"


def test_broken_plugin_is_reported_not_fatal(monkeypatch, capsys) -> None:
    add_generator_entry(monkeypatch, "broken", "no_such_module:Thing")
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "broken" in out and "BROKEN" in out and "no_such_module" in out
    assert "  flux " in out
    with pytest.raises(registry.PluginError, match="no_such_module"):
        registry.get("generator", "broken")
    assert main(["generate", "--generators", "broken", "--profile", "tiny", "--dry-run"]) == 2
    assert "failed to load" in capsys.readouterr().err
