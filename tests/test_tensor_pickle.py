"""Checkpoints with pickled configs load their tensors and never run the code they name."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from eligen_bench.generators.checkpoints import Opaque, load_checkpoint
from eligen_bench.generators.instancediffusion.checkpoint import read_checkpoint
from eligen_bench.generators.migc.checkpoint import read_state_dict


def _save_with_foreign_objects(path: Path, payload: dict, marker: Path) -> None:
    """Save `payload` beside a config object of a module that exists only while saving (as
    OmegaConf on a machine without it) and an object whose unpickling would write `marker`."""
    module = types.ModuleType("trainer_only_conf")

    class Node:
        def __init__(self, value: int) -> None:
            self.value = value

    class Trap:
        def __reduce__(self):
            return (Path.write_text, (marker, "ran"))

    for cls in (Node, Trap):
        cls.__module__ = module.__name__
        cls.__qualname__ = cls.__name__
        setattr(module, cls.__name__, cls)
    sys.modules[module.__name__] = module
    try:
        torch.save({**payload, "config_dict": {"_content": Node(3)}, "trap": Trap()}, path)
    finally:
        del sys.modules[module.__name__]


def test_foreign_objects_stay_inert_and_tensors_load_exactly(tmp_path: Path) -> None:
    weights = {"w": torch.randn(3, 4, generator=torch.Generator().manual_seed(0))}
    marker = tmp_path / "marker"
    _save_with_foreign_objects(tmp_path / "c.pth", {"model": weights}, marker)
    with pytest.raises(Exception):  # noqa: B017 - torch's safe loader refuses the file
        torch.load(tmp_path / "c.pth", weights_only=True)
    data = load_checkpoint(tmp_path / "c.pth", allow_pickle=False)
    assert torch.equal(data["model"]["w"], weights["w"])
    assert isinstance(data["config_dict"]["_content"], Opaque)
    assert data["config_dict"]["_content"].qualname == "trainer_only_conf.Node"
    assert isinstance(data["trap"], Opaque) and not marker.exists()


def test_checkpoint_readers_accept_a_pickled_config(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    _save_with_foreign_objects(tmp_path / "id.pth", {"model": {"position_net.null": torch.ones(2)}}, marker)
    assert torch.equal(read_checkpoint(tmp_path / "id.pth", allow_pickle=False)["position_net.null"], torch.ones(2))
    _save_with_foreign_objects(tmp_path / "migc.ckpt", {"state_dict": {"k": torch.zeros(1)}}, marker)
    assert set(read_state_dict(tmp_path / "migc.ckpt")) == {"k"}
    assert not marker.exists()
