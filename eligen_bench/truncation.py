"""Prompt truncation, recorded as a fidelity fact: which prompts a text encoder cut short.

A generator calls `check_prompts` where it tokenises (e.g. FLUX: CLIP at 77 tokens, T5 at
`max_sequence_length`); the distinct prompts longer than the limit are kept per encoder on
the generator, and `record_truncation` merges them into the run's manifest (a union, so a
resumed run that encodes only the missing images keeps what earlier sessions found).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

ATTRIBUTE = "prompt_truncation"


def check_prompts(generator: Any, encoder: str, tokenizer: Any, prompts: Sequence[str], max_tokens: int) -> None:
    """Count the prompts `tokenizer` makes longer than `max_tokens` (special tokens included)."""
    records: dict[str, dict[str, Any]] = generator.__dict__.setdefault(ATTRIBUTE, {})
    record = records.setdefault(encoder, {"max_tokens": int(max_tokens), "seen": set(), "truncated": set()})
    for prompt in prompts:
        if prompt in record["seen"]:
            continue
        record["seen"].add(prompt)
        ids = tokenizer(prompt, truncation=False, verbose=False)["input_ids"]
        if len(ids) > max_tokens:
            record["truncated"].add(prompt)


def merged(previous: dict[str, Any] | None, found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The manifest record of one generator: per encoder, the limit and the truncated prompts."""
    out = {encoder: dict(record) for encoder, record in (previous or {}).items()}
    for encoder, record in found.items():
        prompts = set(out.get(encoder, {}).get("prompts", [])) | record["truncated"]
        out[encoder] = {"max_tokens": record["max_tokens"], "truncated": len(prompts), "prompts": sorted(prompts)}
    return out


def record_truncation(run_dir: Any, plans: Iterable[Any]) -> None:
    """Merge what the plans' generators found into `manifest.json` (`prompt_truncation`)."""
    found = {plan.label: plan.generator.__dict__.get(ATTRIBUTE) for plan in plans}
    found = {label: records for label, records in found.items() if records}
    if not found:
        return
    manifest = run_dir.require_manifest()
    table = manifest.setdefault(ATTRIBUTE, {})
    for label, records in found.items():
        table[label] = merged(table.get(label), records)
    run_dir.write_manifest(manifest)
