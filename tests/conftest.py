"""Test settings: offline, seeded, and skip what needs real weights or a GPU unless asked."""

from __future__ import annotations

import os

import pytest

# An accidental download must fail loudly, not hang or succeed on a developer's machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gates = {
        "gpu": ("ELIGEN_BENCH_GPU_TESTS", "needs a CUDA GPU; set ELIGEN_BENCH_GPU_TESTS=1"),
        "weights": ("ELIGEN_BENCH_WEIGHT_TESTS", "needs real weights; set ELIGEN_BENCH_WEIGHT_TESTS=1"),
    }
    for item in items:
        for marker, (variable, reason) in gates.items():
            if marker in item.keywords and os.environ.get(variable) != "1":
                item.add_marker(pytest.mark.skip(reason=reason))
