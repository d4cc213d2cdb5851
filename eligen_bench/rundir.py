"""The results folder of one run: manifest, images, score shards, the compiled score table.

```
<run>/manifest.json            config, suite hash, seeds, versions, model ids
<run>/suite.jsonl              the layouts as run
<run>/images/<generator>/<layout>_<seed index>.png   (PNG text chunk holds the request key)
<run>/scores/<metric key>/<generator>/<shard>.parquet
<run>/scores.parquet           all rows of the run's current metrics
<run>/report/                  tables, plots, leaderboard
```
A stage is done for an item when its file exists and its recorded key matches; every write
is atomic, so a run killed at any moment resumes without a half-written file.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eligen_bench import __version__
from eligen_bench.atomic import atomic_write, atomic_write_text, remove_stale_temporaries
from eligen_bench.errors import InputError
from eligen_bench.hashing import content_hash

if TYPE_CHECKING:
    from PIL import Image

KEY_CHUNK = "eligen_bench_key"
PACKAGES = (
    "torch", "torchvision", "diffusers", "transformers", "open_clip_torch", "ultralytics",
    "pycocotools", "pandas", "numpy", "pillow", "peft", "vllm",
)


@dataclass(frozen=True)
class RunDir:
    """Paths and atomic I/O of one results folder."""

    root: Path
    """The run's folder."""

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def suite_path(self) -> Path:
        return self.root / "suite.jsonl"

    @property
    def scores_path(self) -> Path:
        return self.root / "scores.parquet"

    def image_path(self, generator: str, stem: str) -> Path:
        return self.root / "images" / generator / f"{stem}.png"

    def shard_path(self, metric_key: str, generator: str, shard: str) -> Path:
        return self.root / "scores" / metric_key / generator / f"{shard}.parquet"

    # manifest -----------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"corrupt manifest ({exc})", where=str(self.manifest_path)) from None

    def require_manifest(self) -> dict[str, Any]:
        manifest = self.read_manifest()
        if manifest is None:
            raise InputError("no manifest.json: not a run folder (run `eligen-bench generate` first)", where=str(self.root))
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    def open_for(self, config: dict[str, Any], *, allow_mixed: bool) -> dict[str, Any]:
        """Create the manifest, or check that an existing one was made by the same config."""
        self.root.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.root)
        existing = self.read_manifest()
        config_hash = generation_hash(config)
        if existing is not None and existing.get("config_hash") != config_hash and not allow_mixed:
            raise InputError(
                f"was made by a different configuration (config hash {existing.get('config_hash')}, "
                f"now {config_hash}); use a new --out folder, or --allow-mixed to add to it",
                where=str(self.root),
            )
        manifest = dict(existing or {})
        if existing is not None and existing.get("config_hash") == config_hash:
            config = {**config, "metrics": existing.get("config", {}).get("metrics", {})}
        config.setdefault("metrics", {})
        history = list(manifest.get("history", []))
        if existing is not None and existing.get("config_hash") != config_hash:
            history.append({"config_hash": existing.get("config_hash"), "config": existing.get("config")})
        manifest.update(
            format=1,
            eligen_bench_version=__version__,
            created=manifest.get("created") or _now(),
            updated=_now(),
            code_version=code_version(),
            packages=package_versions(),
            config=config,
            config_hash=config_hash,
            history=history,
        )
        self.write_manifest(manifest)
        return manifest

    # images -------------------------------------------------------------------
    def write_image(self, path: Path, image: Image.Image, key: str) -> None:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text(KEY_CHUNK, key)
        atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))

    def image_key(self, path: Path) -> str | None:
        """The request key stored in a PNG, or None when absent or unreadable (then regenerate)."""
        if not path.exists():
            return None
        from PIL import Image

        try:
            with Image.open(path) as image:
                image.verify()
            with Image.open(path) as image:
                return image.text.get(KEY_CHUNK)  # type: ignore[attr-defined]
        except Exception:  # a corrupt image is simply not done
            return None


def generation_hash(config: dict[str, Any]) -> str:
    """Hash of what determines the images (metrics excluded: changing one never regenerates)."""
    return content_hash({k: v for k, v in config.items() if k != "metrics"})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def code_version() -> str:
    """The git commit of the source tree (with '+dirty' when modified), else the package version."""
    source = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return __version__
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return __version__
