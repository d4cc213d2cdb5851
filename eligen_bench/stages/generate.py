"""Generation stage: every (layout, seed) image for each generator, skipping finished ones."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from eligen_bench.errors import InputError
from eligen_bench.generators.base import Generator
from eligen_bench.hashing import file_sha256
from eligen_bench.layout import Layout
from eligen_bench.requests import GenerationRequest
from eligen_bench.rundir import RunDir
from eligen_bench.seeds import derive_seed
from eligen_bench.suite import Suite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationPlan:
    """What one generator has to make in this run."""

    label: str
    """Folder name of the generator's images."""
    generator: Generator
    """The (not yet loaded) generator."""
    requests: tuple[GenerationRequest, ...]
    """One per (layout, seed index), in suite order."""
    notes: Mapping[str, int] = field(default_factory=dict)
    """What adapting the layouts changed (note -> number of layouts), for the provenance."""


def seeds_for(suite: Suite, seeds: int, base_seed: int) -> dict[str, list[int]]:
    return {layout.id: [derive_seed(base_seed, layout.id, i) for i in range(seeds)] for layout in suite.layouts}


def plan_generation(suite: Suite, generators: Mapping[str, Generator], seeds: int,
                    base_seed: int) -> list[GenerationPlan]:
    """Adapt every layout to every generator first, so bad input fails before anything is written."""
    plans = []
    seed_table = seeds_for(suite, seeds, base_seed)
    inputs = suite_inputs(suite)
    for label, generator in generators.items():
        identity = generator.identity()
        notes: Counter[str] = Counter()
        requests = []
        for layout in suite.layouts:
            adapted, layout_notes = generator.adapt(layout)
            notes.update(layout_notes)
            path, sha = inputs.get(layout.id, (None, None))
            for index, seed in enumerate(seed_table[layout.id]):
                requests.append(GenerationRequest(adapted, index, seed, identity, path, sha))
        plans.append(GenerationPlan(label, generator, tuple(requests), dict(notes)))
    return plans


def suite_inputs(suite: Suite) -> dict[str, tuple[str, str]]:
    """Resolved path and content hash of every input image of the suite, by layout id."""
    return {layout.id: input_image(suite, layout) for layout in suite.layouts if layout.init_image}


def input_image(suite: Suite, layout: Layout) -> tuple[str, str]:
    """The resolved path and content hash of a layout's input image; InputError when unreadable."""
    from PIL import Image

    path = suite.input_path(layout)
    assert path is not None
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, SyntaxError) as exc:  # PIL's errors for missing, truncated, not-an-image
        raise InputError(f"cannot read input image {str(path)!r} ({type(exc).__name__})",
                         where=f"layout {layout.id!r}", field="init_image") from None
    return str(path), file_sha256(path)


def pending_requests(run: RunDir, plan: GenerationPlan) -> list[GenerationRequest]:
    """Requests whose image is missing, unreadable, or made by another configuration."""
    return [r for r in plan.requests if run.image_key(run.image_path(plan.label, r.stem)) != r.key]


def run_generation(run: RunDir, plans: list[GenerationPlan], batch_size: int = 1,
                   progress: bool = True) -> dict[str, dict[str, int]]:
    """Make the missing images; returns {label: {'made': n, 'kept': m}}."""
    from eligen_bench import console

    summary = {}
    pending_of = {plan.label: pending_requests(run, plan) for plan in plans}
    total = sum(len(plan.requests) for plan in plans)
    bar = console.stage_bar("generate", total, total - sum(map(len, pending_of.values())), enabled=progress)
    for plan in plans:
        pending = pending_of[plan.label]
        kept = len(plan.requests) - len(pending)
        log.info("generate %s: %d to make, %d already done", plan.label, len(pending), kept)
        if pending:
            bar.set_description(f"generate {plan.label}")
            console.quiet_loaded_libraries()
            plan.generator.ensure_loaded()
            try:
                for start in range(0, len(pending), max(1, batch_size)):
                    batch = pending[start : start + batch_size]
                    images = plan.generator.generate(batch)
                    if len(images) != len(batch):
                        raise RuntimeError(f"{plan.label} returned {len(images)} images for {len(batch)} requests")
                    for request, image in zip(batch, images, strict=True):
                        run.write_image(run.image_path(plan.label, request.stem), image, request.key)
                    bar.update(len(batch))
            finally:
                plan.generator.close()
        summary[plan.label] = {"made": len(pending), "kept": kept}
    bar.set_description("generate")
    bar.close()
    return summary
