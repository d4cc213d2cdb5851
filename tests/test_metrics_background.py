"""Background preservation of inpainting: known PSNR values and an end-to-end run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eligen_bench.cli import main
from eligen_bench.layout import Layout
from eligen_bench.metrics.inpainting.background import MAX_PSNR, background_psnr
from eligen_bench.suite import Suite

from fixtures import small_suite


def test_psnr_known_values() -> None:
    original = np.zeros((4, 4, 3), dtype=np.uint8)
    generated = original.copy()
    generated[0, 0] = 255  # one wrong pixel, inside the excluded region
    background = np.ones((4, 4), dtype=bool)
    background[0, 0] = False
    assert background_psnr(generated, original, background) == MAX_PSNR
    generated[3, 3] = 255  # one wrong pixel of 15 background pixels: MSE = 255^2 * 3 / (15 * 3)
    assert background_psnr(generated, original, background) == pytest.approx(10 * math.log10(15))
    assert math.isnan(background_psnr(generated, original, np.zeros((4, 4), dtype=bool)))


def test_background_psnr_end_to_end(tmp_path) -> None:
    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp_path / "input.png")
    base = small_suite().layouts[2]
    layouts = (Layout("inpaint", "a garden", base.entities, 64, 64, init_image="input.png"),
               Layout("plain", "a garden", base.entities, 64, 64))
    Suite("bg", "1", layouts).write(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    assert main(["run", "--suite", str(tmp_path / "s.jsonl"), "--generators",
                 "painter=harness_plugins:BoxPainter", "--metrics", "background_psnr", "--out", str(out),
                 "--no-progress"]) == 0
    rows = pd.read_parquet(out / "scores.parquet").set_index("layout_id")
    # The painter keeps the input outside the entities exactly: the PSNR is at its ceiling.
    assert rows.loc["inpaint", "value"] == MAX_PSNR and rows.loc["inpaint", "status"] == "ok"
    assert rows.loc["plain", "status"] == "excluded" and math.isnan(rows.loc["plain", "value"])
