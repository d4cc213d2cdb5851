"""The optional detailed `description` of an entity: format, validation, suite hash, and the
entity text each generator is given."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eligen_bench.api.generator import use_descriptions
from eligen_bench.errors import InputError
from eligen_bench.layout import Entity, Layout
from eligen_bench.stages.generate import plan_generation
from eligen_bench.suite import Suite, read_suite
from eligen_bench.suites.bundled import load_mini

from harness_plugins import BoxPainter, prompt_colour

SHORT, DETAIL = "a red umbrella", "a bright red umbrella with a curved wooden handle, open, fabric texture"


def described_layout() -> Layout:
    return Layout(id="d1", prompt="a street in the rain", width=64, height=64, entities=(
        Entity(prompt=SHORT, bbox=(0.1, 0.1, 0.5, 0.5), description=DETAIL),
        Entity(prompt="a dog", bbox=(0.5, 0.5, 0.9, 0.9)),
    ))


def test_description_round_trips_and_is_absent_when_none() -> None:
    layout = described_layout()
    data = layout.to_dict()
    assert data["entities"][0]["description"] == DETAIL
    assert "description" not in data["entities"][1]
    assert Layout.from_dict(json.loads(json.dumps(data))) == layout


@pytest.mark.parametrize("bad", ["", "   ", 3, "two\nlines", "x" * 10_001])
def test_bad_descriptions_name_the_field(bad) -> None:
    data = described_layout().to_dict()
    data["entities"][0]["description"] = bad
    with pytest.raises(InputError) as info:
        Layout.from_dict(data, where="s.jsonl:2")
    assert "entities[0].description" in str(info.value) and str(info.value).startswith("s.jsonl:2")


def test_suites_without_descriptions_keep_their_hash() -> None:
    # The bundled suite's header records the hash it was written with, before descriptions existed.
    mini = load_mini()
    header = json.loads(mini_path().read_text(encoding="utf-8").split("\n", 1)[0])
    assert mini.hash == header["hash"] == "2fe8566e57d4359c"
    with_none = Suite(mini.name, mini.version, tuple(
        Layout.from_dict(layout.to_dict()) for layout in mini.layouts))
    assert with_none.hash == mini.hash
    described = described_layout()
    bare = Layout.from_dict({**described.to_dict(), "entities": [
        {k: v for k, v in e.items() if k != "description"} for e in described.to_dict()["entities"]]})
    assert Suite("s", "1", (described,)).hash != Suite("s", "1", (bare,)).hash


def mini_path():
    from importlib import resources

    return resources.files("eligen_bench.suites") / "mini.jsonl"


def test_suite_file_with_descriptions_reads_back(tmp_path) -> None:
    suite = Suite("lsam", "1", (described_layout(),))
    suite.write(tmp_path / "s.jsonl")
    again = read_suite(tmp_path / "s.jsonl")
    assert again.layouts[0].entities[0].description == DETAIL and again.hash == suite.hash


def test_use_descriptions_replaces_prompts_where_there_is_one() -> None:
    layout, notes = use_descriptions(described_layout())
    assert [e.prompt for e in layout.entities] == [DETAIL, "a dog"]
    assert layout.entities[0].description == DETAIL
    assert len(notes) == 2 and "keep their prompt" in notes[1]


def test_each_generator_is_given_its_entity_text() -> None:
    layout = described_layout()
    default, detailed = BoxPainter(), BoxPainter(entity_text="description")
    assert default.text_choice == "prompt" and "entity_text" not in default.identity()
    assert detailed.identity()["entity_text"] == "description"
    # The default identity is what it was before the option existed (no image is remade).
    assert default.identity() == {"name": "box-painter", "profile": "full", "settings": dict(
        sorted(BoxPainter.defaults.items())), "models": {}}
    suite = Suite("s", "1", (layout,))
    plans = plan_generation(suite, {"short": default, "detail": detailed}, seeds=1, base_seed=0)
    assert plans[1].notes and "detailed descriptions" in next(iter(plans[1].notes))
    images = {p.label: np.array(p.generator.generate([p.requests[0]])[0]) for p in plans}
    box = (slice(10, 30), slice(10, 30))  # inside the first entity's box on 64x64
    assert (images["short"][box] == prompt_colour(SHORT)).all()
    assert (images["detail"][box] == prompt_colour(DETAIL)).all()
    assert plans[0].requests[0].key != plans[1].requests[0].key


def test_unknown_entity_text_is_one_clear_error() -> None:
    with pytest.raises(InputError, match="entity_text.*one of"):
        BoxPainter(entity_text="caption")



def test_a_worker_generator_reports_and_applies_its_entity_text(monkeypatch) -> None:
    import os
    import sys
    from pathlib import Path

    from eligen_bench.worker import WorkerGenerator

    tests = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    worker = WorkerGenerator(python=sys.executable, target="harness_plugins:BoxPainter", profile="tiny",
                             entity_text="description")
    try:
        assert worker.text_choice == "description" and worker.identity()["entity_text"] == "description"
        adapted, notes = worker.adapt(described_layout())
        assert adapted.entities[0].prompt == DETAIL and notes
    finally:
        worker.close()
