"""What one generator label of a run is, for a page: the method, the settings that differ from
its defaults, and the local files it read (file name and sha256, never the path).

Read from what the run recorded at generation (`manifest["configurations"]`, see
`eligen_bench.configurations`); for a run made before that record existed, the settings are
compared with the defaults of the method as installed here, and files have no hash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eligen_bench.configurations import NOT_SHOWN, changed_settings, public_value

if TYPE_CHECKING:
    from eligen_bench.report.data import Run

HASH_DIGITS = 12


def configuration(run: Run, label: str) -> dict[str, Any]:
    """{'method', 'title', 'changed', 'files', 'recorded'} of one generator label, fit to publish."""
    identity = run.config.get("generators", {}).get(label)
    identity = identity if isinstance(identity, dict) else {}
    method = str(identity.get("name", label))
    record = (run.manifest.get("configurations") or {}).get(label)
    if isinstance(record, dict):
        files = {str(k): {"name": str(v.get("name", "")), "sha256": str(v.get("sha256", ""))}
                 for k, v in (record.get("files") or {}).items() if isinstance(v, dict)}
        changed = record.get("changed") if isinstance(record.get("changed"), dict) else {}
        return {"method": str(record.get("name", method)), "title": str(record.get("title", label)),
                "changed": {k: public_value(v) for k, v in changed.items() if k not in files},
                "files": files, "recorded": True}
    settings = identity.get("settings") if isinstance(identity.get("settings"), dict) else {}
    return {"method": method, "title": label,
            "changed": {k: public_value(v) for k, v in changed_settings(settings, _installed_defaults(method)).items()
                        if k not in NOT_SHOWN},
            "files": {}, "recorded": False}


def _installed_defaults(method: str) -> dict[str, Any]:
    """The defaults of the method as installed here (empty when it is not)."""
    from eligen_bench import registry

    try:
        return dict(registry.generator_class(method).defaults)
    except Exception:  # a page must build without the plugin that made the run
        return {}


def configuration_text(config: dict[str, Any]) -> str:
    """One line: 'eligen; lora_scale=0.5; lora: step20000.safetensors (sha256 1a2b3c4d5e6f)'."""
    parts = [str(config["method"])]
    parts += [f"{k}={_short(v)}" for k, v in config["changed"].items()]
    parts += [f"{k}: {f['name']}" + (f" (sha256 {f['sha256'][:HASH_DIGITS]})" if f.get("sha256") else "")
              for k, f in config["files"].items()]
    if len(parts) == 1:
        parts.append("defaults")
    return "; ".join(parts)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
