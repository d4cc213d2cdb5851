"""Generation stage: every (layout, seed) image for each generator, skipping finished ones."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eligen_bench.api.generator import Generator
from eligen_bench.claims import claimed
from eligen_bench.hashing import file_sha256
from eligen_bench.input_images import check_input_image
from eligen_bench.layout import Layout
from eligen_bench.requests import GenerationRequest
from eligen_bench.rundir import RunDir
from eligen_bench.seeds import SeedPlan
from eligen_bench.suite import Suite

if TYPE_CHECKING:
    from eligen_bench.executors.base import Executor
    from eligen_bench.executors.shard import Shard

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


def seeds_for(suite: Suite, seeds: int | SeedPlan, base_seed: int = 0) -> dict[str, list[int]]:
    """Every layout's seeds: `seeds` derived ones from `base_seed`, or as a `SeedPlan` gives them."""
    plan = seeds if isinstance(seeds, SeedPlan) else SeedPlan(seeds, base_seed)
    return {layout.id: plan.for_layout(layout.id) for layout in suite.layouts}


def plan_generation(suite: Suite, generators: Mapping[str, Generator], seeds: int | SeedPlan,
                    base_seed: int = 0) -> list[GenerationPlan]:
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
    path = suite.input_path(layout)
    assert path is not None
    check_input_image(path, where=layout.where)
    return str(path), file_sha256(path)


def pending_requests(run: RunDir, plan: GenerationPlan) -> list[GenerationRequest]:
    """Requests whose image is missing, unreadable, or made by another configuration."""
    return [r for r in plan.requests if not is_made(run, plan.label, r)]


def is_made(run: RunDir, label: str, request: GenerationRequest) -> bool:
    return run.image_key(run.image_path(label, request.stem)) == request.key


def item_name(label: str, request: GenerationRequest) -> str:
    """The work item's name: stable whatever is already done (shards partition by it)."""
    return f"{label}/{request.stem}"


def make_images(run: RunDir, label: str, generator: Generator, batch: Sequence[GenerationRequest],
                worker: dict[str, Any], *, wait: bool = False) -> list[GenerationRequest]:
    """One work item (a batch of requests): make and write the images not made yet; returns the
    requests skipped because another process holds their claim (none when `wait`).

    Every executor calls this. Each image is claimed (`eligen_bench.claims`) and checked again
    under its claim, not only when planning, so an item another process finished or is making
    is not made twice; each write is atomic, so a kill never leaves a broken file. With `wait`,
    each request's claim is waited for in turn, never holding one while waiting for the next.
    Images are made with the worker's torch thread setting (`runtime.threads`), whoever runs it.
    """
    from eligen_bench.runtime import threads

    with run.working(), threads(worker["threads"]):
        if wait:
            for request in batch:
                with claimed(run.root, claim_name(label, request), wait=True):
                    _make_missing(run, label, generator, [request], worker)
            return []
        with ExitStack() as claims:
            held, skipped = [], []
            for request in batch:
                mine = claims.enter_context(claimed(run.root, claim_name(label, request), wait=False))
                (held if mine else skipped).append(request)
            _make_missing(run, label, generator, held, worker)
        return skipped


def claim_name(label: str, request: GenerationRequest) -> str:
    return f"image:{item_name(label, request)}"


def _make_missing(run: RunDir, label: str, generator: Generator, requests: Sequence[GenerationRequest],
                  worker: dict[str, Any]) -> None:
    """Make the requests whose image is not on disk with their key (their claims are held)."""
    todo = [r for r in requests if not is_made(run, label, r)]
    if not todo:
        return
    from eligen_bench.runtime import record_facts

    generator.ensure_loaded()
    images = generator.generate(todo)
    record_facts(worker, "generator", label, generator)
    if len(images) != len(todo):
        raise RuntimeError(f"{label} returned {len(images)} images for {len(todo)} requests")
    for request, image in zip(todo, images, strict=True):
        run.write_image(run.image_path(label, request.stem), image, request.key, request.init_image_sha256)
        run.record_made(worker, "image", label, request.stem)


def batches(requests: Sequence[GenerationRequest], batch_size: int) -> list[list[GenerationRequest]]:
    size = max(1, batch_size)
    return [list(requests[start : start + size]) for start in range(0, len(requests), size)]


def run_generation(run: RunDir, plans: list[GenerationPlan], batch_size: int = 1, progress: bool = True,
                   *, executor: Executor, shard: Shard | None = None) -> dict[str, dict[str, int]]:
    """Make the missing images (of this shard), under one progress bar; returns {label: {'made': n, 'kept': m}}."""
    from eligen_bench import console
    mine = {plan.label: [r for r in plan.requests if shard is None or shard.owns(item_name(plan.label, r))]
            for plan in plans}
    pending = {label: [r for r in requests if not is_made(run, label, r)] for label, requests in mine.items()}
    total = sum(map(len, mine.values()))
    bar = console.stage_bar("generate", total, total - sum(map(len, pending.values())), enabled=progress)
    summary = {}
    try:
        for plan in plans:
            todo, kept = pending[plan.label], len(mine[plan.label]) - len(pending[plan.label])
            log.info("generate %s: %d to make, %d already done", plan.label, len(todo), kept)
            if todo:
                bar.set_description(f"generate {plan.label}")
                console.quiet_loaded_libraries()
                executor.generate(run, plan.label, plan.generator, batches(todo, batch_size), bar)
            summary[plan.label] = {"made": len(todo), "kept": kept}
    finally:
        bar.set_description("generate")
        bar.close()
    return summary
