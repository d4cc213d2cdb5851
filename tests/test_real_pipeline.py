"""The whole benchmark on real weights (a GPU machine with the hub): skipped by default.

Run with ELIGEN_BENCH_WEIGHT_TESTS=1 ELIGEN_BENCH_GPU_TESTS=1. It checks that the real models
load through the same paths the tiny profile exercises and give numbers in their known ranges.
"""

from __future__ import annotations

import pandas as pd
import pytest

from eligen_bench.cli import main


@pytest.mark.weights
@pytest.mark.gpu
@pytest.mark.slow
def test_real_models_give_numbers_in_their_known_ranges(tmp_path) -> None:
    out = tmp_path / "run"
    metrics = "miou,clip_entity,clip_global,aesthetic,pickscore,vlm_success[judge=qwen2vl]"
    assert main(["run", "--suite", "mini", "--limit", "6", "--generators", "eligen,gligen", "--metrics",
                 metrics, "--out", str(out), "--no-progress"]) == 0
    summary = pd.read_csv(out / "report" / "summary.csv").set_index(["generator", "metric"])["mean"]
    for generator in ("eligen", "gligen"):
        assert 15.0 < summary[(generator, "clip_global")] < 40.0  # CLIP ViT-L/14 scores of matching images
        assert 10.0 < summary[(generator, "clip_entity")] < 40.0
        assert 3.0 < summary[(generator, "aesthetic")] < 8.0  # the LAION predictor's 1-10 scale
        assert 15.0 < summary[(generator, "pickscore")] < 30.0
        assert 0.0 <= summary[(generator, "miou")] <= 100.0
        assert 0.0 <= summary[(generator, "vlm_success[judge=qwen2vl]")] <= 100.0
