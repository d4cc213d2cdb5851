"""Every generator declares an entity limit, and `run`, `generate` and `validate` check it up front."""

from __future__ import annotations

import json
import time

import pytest

from eligen_bench import registry
from eligen_bench.api.generator import MAX_ENTITIES, Capabilities
from eligen_bench.cli import main

CROWD = 10_000


def crowded_suite(tmp_path, count: int = CROWD):
    entities = [{"prompt": f"a dot {i}", "bbox": [0.0, 0.0, 0.5, 0.5]} for i in range(count)]
    path = tmp_path / "crowd.jsonl"
    path.write_text(json.dumps({"suite": "crowd"}) + "\n"
                    + json.dumps({"id": "plain", "prompt": "a field", "width": 64, "height": 64}) + "\n"
                    + json.dumps({"id": "crowd", "prompt": "a crowd", "width": 64, "height": 64,
                                  "entities": entities}) + "\n")
    return path


def test_every_registered_generator_declares_a_bounded_limit() -> None:
    for name in registry.entries("generator"):
        limit = registry.get("generator", name).capabilities.max_entities
        assert isinstance(limit, int) and 0 <= limit <= MAX_ENTITIES, name


def test_capabilities_refuse_an_unbounded_limit() -> None:
    assert Capabilities(max_entities=None).max_entities == MAX_ENTITIES  # type: ignore[arg-type]
    for bad in (MAX_ENTITIES + 1, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_entities"):
            Capabilities(max_entities=bad)


@pytest.mark.parametrize("generator", ["multidiffusion", "eligen", "regional-flux", "flux", "gligen"])
def test_generate_and_run_refuse_too_many_entities_up_front(tmp_path, capsys, generator) -> None:
    suite = crowded_suite(tmp_path)
    out = tmp_path / "run"
    for command in (["generate"], ["run", "--metrics", "harness_plugins:RegionFill"]):
        started = time.monotonic()
        assert main([*command, "--suite", str(suite), "--generators", generator, "--profile", "tiny",
                     "--out", str(out), "--no-progress"]) == 2
        assert time.monotonic() - started < 30
        err = capsys.readouterr().err.strip()
        assert "\n" not in err
        assert f"crowd.jsonl:3: layout 'crowd': entities: {CROWD} entities, but " in err and "at most" in err
        assert not out.exists()


def test_validate_checks_every_generator_limit(tmp_path, capsys) -> None:
    suite = crowded_suite(tmp_path, MAX_ENTITIES + 1)
    assert main(["validate", str(suite), "--generators", "gligen,multidiffusion,eligen"]) == 2
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error:")]
    assert len(problems) == 3
    assert all(line.startswith("error: crowd.jsonl:3: layout 'crowd': entities: ") for line in problems)
    assert main(["validate", str(crowded_suite(tmp_path, MAX_ENTITIES)), "--generators", "multidiffusion"]) == 0
