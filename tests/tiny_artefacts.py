"""Build every tiny-profile artefact and print a sha256 per file / per state dict as JSON.

Run as a script by `test_tiny_reproducible.py` in processes with different PYTHONHASHSEED: any
build that depends on set or dict-of-str order shows up as a differing digest.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path


def tree_digests(directory: Path, prefix: str) -> dict[str, str]:
    return {f"{prefix}/{p.relative_to(directory).as_posix()}": hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def state_digest(module) -> str:  # noqa: ANN001 - any torch module
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def build_all(root: Path) -> dict[str, str]:
    from eligen_bench.metrics.clip.scores import tiny_clip
    from eligen_bench.metrics.detection.detector import tiny_yolo
    from eligen_bench.metrics.preference.aesthetic import tiny_mlp
    from eligen_bench.metrics.preference.mps import save_tiny_mps
    from eligen_bench.metrics.preference.pickscore import save_tiny_clip
    from eligen_bench.metrics.vlm import judges as vlm_judges
    from eligen_bench.tiny import clip_tokenizer, t5_tokenizer

    builders = {
        "qwen2vl": vlm_judges.build_tiny_qwen2vl,
        "pickscore": save_tiny_clip,
        "mps": save_tiny_mps,
        "t5_tokenizer": lambda d: t5_tokenizer().save_pretrained(d),
        "clip_tokenizer": lambda d: clip_tokenizer().save_pretrained(d),
    }
    out: dict[str, str] = {}
    for name, build in builders.items():
        directory = root / name
        directory.mkdir()
        build(str(directory))
        out.update(tree_digests(directory, name))
    out["open_clip"] = state_digest(tiny_clip().model)
    out["aesthetic"] = state_digest(tiny_mlp(512))
    out["yolo"] = state_digest(tiny_yolo().model)
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        json.dump(build_all(Path(tmp)), sys.stdout, sort_keys=True)
