"""Run folders made before a code move resume with nothing remade: request keys hold no module path.

The keys below were computed by the code before generators/ and metrics/ moved into one folder
per family (commit bc022f3), and read back from the images of a run made then. A key that
changes regenerates every existing run's images: change one here only with a change of the
method's defaults or models, and say so in the change.

Changed since: `eligen` and `flux` (DiffSynth's schedule) embed the timestep and guidance as
DiffSynth does (float32 timestep, its summation order), which changes their images, so their
keys carry that too (`FluxFamily.identity`); every other key is the one from before the move.
"""

from __future__ import annotations

import dataclasses

from eligen_bench import registry
from eligen_bench.stages.generate import plan_generation
from eligen_bench.suites.bundled import load_mini

KEYS = {
    ("eligen", "empty-beach"): "7106319a773d0ee2", ("eligen", "breakfast"): "31481aa18c0a909d",
    ("flux", "empty-beach"): "246b0cd1cda4f234", ("flux", "breakfast"): "f8290ba14dbda1c7",
    ("gligen", "empty-beach"): "b39b43ff1b8dbf57", ("gligen", "breakfast"): "1444ff4f3d7b30c3",
    ("instancediffusion", "empty-beach"): "5fd77237ab394c11",
    ("instancediffusion", "breakfast"): "e54748a0d573238f",
    ("migc", "empty-beach"): "e6c4af646aa2a612", ("migc", "breakfast"): "eb7641574efbd96c",
    ("multidiffusion", "empty-beach"): "70c36b693264eab5", ("multidiffusion", "breakfast"): "3bbcf9684825b21b",
    ("regional-flux", "empty-beach"): "ad0f3d93fae334c5", ("regional-flux", "breakfast"): "db2105c003785c44",
}


def test_request_keys_are_those_of_runs_made_before_the_move_unless_the_method_changed() -> None:
    suite = load_mini()
    layouts = tuple(layout for layout in suite.layouts if layout.id in ("empty-beach", "breakfast"))
    names = sorted({name for name, _ in KEYS})
    generators = {name: registry.get("generator", name)(profile="tiny", device="cpu") for name in names}
    plans = plan_generation(dataclasses.replace(suite, layouts=layouts), generators, seeds=1, base_seed=0)
    keys = {(plan.label, request.layout.id): request.key for plan in plans for request in plan.requests}
    assert keys == KEYS
