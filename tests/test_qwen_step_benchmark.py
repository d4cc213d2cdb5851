"""The Qwen-Image benchmark's cases run through the real processors and agree with `dense`.

Only the case-building of `benchmarks/qwen_step.py` is checked, at a tiny setting, not the timing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "qwen_step.py"


def test_cases_run_and_methods_agree() -> None:
    if str(SCRIPT.parent) not in sys.path:  # as when run as a script: its folder's helpers import
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("qwen_step_benchmark", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up by name
    spec.loader.exec_module(bench)
    config = dict(bench.REDUCED, num_layers=1, attention_head_dim=16, num_attention_heads=2,
                  joint_attention_dim=32, axes_dims_rope=(4, 6, 6))
    setting = bench.Setting(64, 8, 4, config, torch.float32)
    model = bench.build_transformer(setting, "cpu")
    fns = bench.cases(model, setting, 2, "cpu")
    assert set(fns) == {"plain", "unmasked", "eligen dense", "eligen groups", "eligen merge"}
    dense = fns["eligen dense"]()
    assert dense.shape == (1, 16, 64)
    for name in ("eligen groups", "eligen merge"):
        assert torch.allclose(fns[name](), dense, atol=1e-5), name
    assert (fns["unmasked"]() - dense).abs().max() > 1e-4  # the mask matters
