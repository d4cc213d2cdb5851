"""A checkpoint never runs code: crafted pickles are refused with one line, configs stay inert.

Each attack writes a marker file if any code it names runs. The pickles are hand-assembled from
opcodes (pickletools names), so they hold exactly the attack and nothing a pickler would add.
"""

from __future__ import annotations

import io
import pickle
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch

from eligen_bench.errors import InputError
from eligen_bench.generators.checkpoints import InertRecord, TypeName, load_checkpoint
from eligen_bench.generators.instancediffusion.checkpoint import read_checkpoint
from eligen_bench.generators.migc.checkpoint import read_state_dict


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def _write_marker_call(module: str, name: str, marker: Path) -> bytes:
    """GLOBAL module.name, then call it with a string that writes the marker if it is `eval`/`exec`."""
    code = f"open({str(marker)!r}, 'w').write('ran')"
    return _global(module, name) + b"(" + _unicode(code) + b"tR"


def _eval_via(module: str, dotted: str, marker: Path) -> bytes:
    """`module.dotted` resolves to a builtins dict; `.get('eval')` on it then runs the code."""
    code = f"open({str(marker)!r}, 'w').write('ran')"
    return (_global(module, dotted) + b"(" + _unicode("eval") + b"tR"
            + b"(" + _unicode(code) + b"tR")


def _stack_global(module: str, name: str, marker: Path) -> bytes:
    code = f"open({str(marker)!r}, 'w').write('ran')"
    return (b"\x80\x04" + b"\x8c" + bytes([len(module)]) + module.encode()
            + b"\x8c" + bytes([len(name)]) + name.encode() + b"\x93"
            + b"(" + _unicode(code) + b"tR")


def _in_containers(payload: bytes) -> bytes:
    """{'state_dict': {'model': [payload]}}: the attack nested inside ordinary containers."""
    return (b"}(" + _unicode("state_dict") + b"}(" + _unicode("model") + b"](" + payload
            + b"eu" + b"u")


def _zip_checkpoint(path: Path, body: bytes) -> Path:
    """A torch zip checkpoint whose data.pkl is `body` (+ STOP)."""
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.ones(2)}}, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    with zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = b"\x80\x02" + body + b"."
            target.writestr(item, data)
    return path


def _legacy_checkpoint(path: Path, header_body: bytes) -> Path:
    """A legacy (non-zip) checkpoint whose first pickle, the magic number, is the attack."""
    path.write_bytes(b"\x80\x02" + header_body + b".")
    return path


ATTACKS = {
    "dotted __globals__ via torch._utils": lambda m: _eval_via(
        "torch._utils", "_rebuild_tensor.__globals__.get", m),
    "dotted __builtins__ via torch._utils": lambda m: _eval_via(
        "torch._utils", "_rebuild_tensor_v2.__builtins__.get", m),
    "dotted name via torch._tensor": lambda m: _eval_via(
        "torch._tensor", "_rebuild_from_type_v2.__globals__.get", m),
    "dotted name via torch": lambda m: _eval_via("torch", "Size.__init__.__globals__.get", m),
    "GLOBAL builtins.eval": lambda m: _write_marker_call("builtins", "eval", m),
    "GLOBAL __builtin__.exec": lambda m: _write_marker_call("__builtin__", "exec", m),
    "STACK_GLOBAL builtins.eval": lambda m: _stack_global("builtins", "eval", m),
    "STACK_GLOBAL through an allowed module": lambda m: _stack_global(
        "torch._utils", "_rebuild_tensor.__globals__", m),
    "nested in containers": lambda m: _in_containers(_write_marker_call("builtins", "eval", m)),
    "a name like an allowed one": lambda m: _write_marker_call("torch._utils", "_rebuild_evil", m),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_crafted_checkpoints_are_refused_and_run_nothing(tmp_path: Path, attack: str, container: str) -> None:
    marker = tmp_path / "marker"
    body = ATTACKS[attack](marker)
    path = tmp_path / "MIGC_SD14.ckpt"
    if container == "zip":
        _zip_checkpoint(path, body)
    else:
        _legacy_checkpoint(path, body)
    with pytest.raises(InputError) as info:
        load_checkpoint(path, allow_pickle=False)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert not marker.exists()


def _save_with_trap(path: Path, marker: Path, payload: dict) -> None:
    """Save `payload` beside an object whose unpickling would write `marker` (a `__reduce__` trap)."""
    module = types.ModuleType("trainer_only_conf")

    class Trap:
        def __reduce__(self):
            return (Path.write_text, (marker, "ran"))

    Trap.__module__, Trap.__qualname__ = module.__name__, "Trap"
    module.Trap = Trap
    sys.modules[module.__name__] = module
    try:
        torch.save({**payload, "trap": Trap()}, path)
    finally:
        del sys.modules[module.__name__]


def test_reduce_trap_is_refused_through_both_readers(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    _save_with_trap(tmp_path / "MIGC_SD14.ckpt", marker, {"state_dict": {"k": torch.zeros(1)}})
    _save_with_trap(tmp_path / "instancediffusion_sd15.pth", marker, {"model": {"position_net.x": torch.ones(1)}})
    with pytest.raises(InputError, match="refused: it names .getattr."):
        read_state_dict(tmp_path / "MIGC_SD14.ckpt")
    with pytest.raises(InputError, match="instancediffusion_sd15.pth"):
        read_checkpoint(tmp_path / "instancediffusion_sd15.pth", allow_pickle=False)
    assert not marker.exists()


def test_pickle_protocol_4_dotted_lookup_would_reach_eval_with_a_plain_unpickler(tmp_path: Path) -> None:
    """The attack is real: Python's own unpickler resolves the dotted name and runs the code."""
    marker = tmp_path / "marker"
    data = b"\x80\x04" + _eval_via("torch._utils", "_rebuild_tensor.__builtins__.get", marker) + b"."
    pickle.loads(data)  # protocol 4: GLOBAL's dotted name is resolved attribute by attribute
    assert marker.exists()
    marker.unlink()
    (tmp_path / "x.pkl").write_bytes(data)
    with pytest.raises(InputError):
        load_checkpoint(tmp_path / "x.pkl", allow_pickle=False)
    assert not marker.exists()


def test_omegaconf_config_loads_inert_and_tensors_exactly(tmp_path: Path) -> None:
    """InstanceDiffusion stores `vars(config)` of an OmegaConf config beside the weights."""
    omegaconf = pytest.importorskip("omegaconf")
    config = omegaconf.OmegaConf.create({"model": {"params": {"channels": 320, "mult": [1, 2.5, "x"]},
                                                    "enabled": True, "note": None}})
    weights = {"position_net.w": torch.randn(3, 4, generator=torch.Generator().manual_seed(0))}
    path = tmp_path / "instancediffusion_sd15.pth"
    torch.save({"model": weights, "config_dict": vars(config)}, path)
    with pytest.raises(pickle.UnpicklingError):  # torch's plain safe load refuses the file
        torch.load(path, weights_only=True)
    data = load_checkpoint(path, allow_pickle=False)
    assert torch.equal(data["model"]["position_net.w"], weights["position_net.w"])
    content = data["config_dict"]["_content"]
    assert isinstance(content["model"], InertRecord)
    assert content["model"].qualname == "omegaconf.dictconfig.DictConfig"
    metadata = data["config_dict"]["_metadata"]
    assert isinstance(metadata, InertRecord) and isinstance(metadata.state["ref_type"], TypeName)
    assert torch.equal(read_checkpoint(path, allow_pickle=False)["position_net.w"], weights["position_net.w"])


def test_plain_state_dicts_and_missing_files(tmp_path: Path) -> None:
    torch.save({"state_dict": {"k": torch.arange(3)}}, tmp_path / "ok.ckpt")
    torch.save({"state_dict": {"k": torch.arange(3)}}, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    for name in ("ok.ckpt", "legacy.ckpt"):
        assert torch.equal(read_state_dict(tmp_path / name)["k"], torch.arange(3))
    with pytest.raises(InputError, match="file not found"):
        load_checkpoint(tmp_path / "missing.ckpt", allow_pickle=False)
    (tmp_path / "dir.ckpt").mkdir()
    with pytest.raises(InputError, match="not a regular file"):
        load_checkpoint(tmp_path / "dir.ckpt", allow_pickle=False)
