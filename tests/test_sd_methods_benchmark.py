"""The SD methods benchmark builds every method from random files in the released formats.

Only the model-building helper of `benchmarks/sd_methods.py` is checked (at its tiny scale,
through each generator's real loading path and `generate()`), not the timing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sd_methods.py"


def _load_script() -> ModuleType:
    if str(SCRIPT.parent) not in sys.path:  # as when run as a script: its folder's helpers import
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("sd_methods_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", ["gligen", "migc", "instancediffusion", "roictrl", "multidiffusion"])
def test_builds_each_method_and_makes_an_image(method: str, tmp_path: Path) -> None:
    bench = _load_script()
    generator = bench.build_generator(method, bench.TINY, tmp_path, "cpu", steps=2)
    layout = bench.box_layout(2, bench.TINY.size)
    sample = bench.time_image(generator, layout, 0, "cpu")
    assert generator.settings["width"] == bench.TINY.size
    # Every step ran the UNet, at least once (MIS, PLMS's first step: more).
    assert len(sample.forwards) >= 2
    assert sample.image_s > 0
    generator.close()


def test_full_scale_uses_the_generators_defaults(tmp_path: Path) -> None:
    bench = _load_script()
    assert bench.unet_config("sd1", bench.FULL)["block_out_channels"] == (320, 640, 1280, 1280)
    assert bench.unet_config("sd2", bench.FULL)["cross_attention_dim"] == bench.OPENCLIP_H["hidden_size"]
    assert bench.FULL.size is None  # each generator's own resolution
