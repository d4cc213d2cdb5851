"""Benchmark one full FLUX transformer forward: plain FLUX, EliGen and Regional Prompting FLUX.

    python benchmarks/flux_step.py --device cuda [--repeats 5] [--compile] [--batch-cfg]
    python benchmarks/flux_step.py              # CPU: a reduced config, said in the first line

On CUDA the transformer is FLUX.1-dev's (the config of diffusers' FluxTransformer2DModel for
black-forest-labs/FLUX.1-dev, written below, nothing downloaded) with random bf16 weights built
directly on the GPU, at 1024x1024 with 512 T5 tokens per prompt. On CPU the same code runs a
reduced config (few blocks, narrow, 256x256, 64 tokens per prompt, float32) so that it ends in
minutes; its figures say how the methods compare on a CPU, not what FLUX costs.

Entity masks are random, partly overlapping boxes (fixed seed), as in
`benchmarks/regional_attention.py`. For 0, 2, 4 and 8 entities it prints, per method side by
side: milliseconds per forward, the ratio to plain FLUX, peak memory one forward adds,
agreement with the dense-mask reference (max abs difference over max abs value), and the ratio
to the FLOP floor: ``2 x parameters x tokens + 4 x allowed pairs x width x blocks`` at the
matmul rate measured here with a large matmul. Then the targets as pass/fail and seconds per
image of `eligen`, `flux` and `regional-flux` at their generators' defaults (steps, true CFG,
injection steps read from the generator classes).

Timing is interleaved in one warm process (CUDA events on the GPU): after two warm-up rounds,
each of `--repeats` rounds calls every variant once, in turn, so load that comes and goes on a
shared machine falls on a round's calls alike. Milliseconds are the median over rounds; every
ratio between variants (to plain FLUX, the targets, `--compile`, `--batch-cfg`) is the median of
the per-round ratios, printed with their range. The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from bench_common import (
    box_token_masks,
    cpu_name,
    interleaved,
    load_average,
    ratio_summary,
    round_ratios,
    status_kib,
)

# diffusers' FluxTransformer2DModel config of black-forest-labs/FLUX.1-dev
FLUX_DEV: dict[str, Any] = dict(
    patch_size=1, in_channels=64, out_channels=None, num_layers=19, num_single_layers=38,
    attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
    pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
)  # fmt: skip
REDUCED: dict[str, Any] = dict(
    FLUX_DEV, num_layers=1, num_single_layers=2, attention_head_dim=64, num_attention_heads=4,
    joint_attention_dim=256, pooled_projection_dim=64, axes_dims_rope=(8, 28, 28),
)  # fmt: skip
ENTITY_COUNTS = (0, 2, 4, 8)
SEED = 0
TARGETS = {"flex / dense": 0.80, "flex / unmasked SDPA": 1.0, "flex / FLOP floor": 1.25}


@dataclass
class Shape:
    """Image size and prompt length of one benchmark setting."""

    size: int
    prompt_tokens: int
    config: dict[str, Any]
    dtype: Any

    @property
    def latents(self) -> int:
        return (self.size // 16) ** 2

    @property
    def width(self) -> int:
        return self.config["num_attention_heads"] * self.config["attention_head_dim"]

    @property
    def blocks(self) -> int:
        return self.config["num_layers"] + self.config["num_single_layers"]


def setting(device: str) -> tuple[Shape, str]:
    """The shape for `device` and the first line saying which it is."""
    import torch

    if device.startswith("cuda"):
        return Shape(1024, 512, FLUX_DEV, torch.bfloat16), (
            "flux_step: FLUX.1-dev config (19 double + 38 single blocks, 24 x 128), random bf16 "
            f"weights, 1024x1024, 512 tokens per prompt, on {torch.cuda.get_device_name(device)}"
        )
    return Shape(256, 64, REDUCED, torch.float32), (
        "flux_step: REDUCED config on CPU (1 double + 2 single blocks, 4 heads x 64, width 256), "
        "random float32 weights, 256x256, 64 tokens per prompt: not the FLUX.1-dev shape; "
        f"CPU: {cpu_name()}, {torch.get_num_threads()} threads"
    )




def build_transformer(shape: Shape, device: str) -> Any:
    """FluxTransformer2DModel with random weights made on `device`, regional processors installed."""
    import torch
    from diffusers import FluxTransformer2DModel

    from eligen_bench.generators.flux import regional as flux_regional

    torch.manual_seed(SEED)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(shape.dtype)
    try:
        with torch.device(device):
            model = FluxTransformer2DModel(**shape.config).eval()
    finally:
        torch.set_default_dtype(previous)
    flux_regional.install(model)
    return model


def box_masks(entities: int, shape: Shape) -> Any:
    """Bool (entities, latents) token masks of random boxes (1/4 to 5/8 of each side)."""
    return box_token_masks(entities, shape.size, SEED)


class Inputs:
    """Seeded inputs of one forward with `prompts` prompts of `shape.prompt_tokens` tokens."""

    def __init__(self, shape: Shape, prompts: int, device: str, batch: int = 1):
        import torch

        g = torch.Generator().manual_seed(SEED)
        n, text = shape.latents, prompts * shape.prompt_tokens
        side = shape.size // 16
        rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        img_ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3)

        def rand(*size: int) -> Any:
            return torch.randn(size, generator=g).to(device, shape.dtype)

        self.kwargs = dict(
            hidden_states=rand(batch, n, shape.config["in_channels"]),
            encoder_hidden_states=rand(batch, text, shape.config["joint_attention_dim"]),
            pooled_projections=rand(batch, shape.config["pooled_projection_dim"]),
            timestep=torch.full((batch,), 0.5, device=device, dtype=shape.dtype),
            guidance=torch.full((batch,), 3.5, device=device, dtype=shape.dtype),
            img_ids=img_ids.to(device, shape.dtype),
            txt_ids=torch.zeros(text, 3, device=device, dtype=shape.dtype),
        )
        self.length = n + text


def forward_fn(model: Any, inputs: Inputs, control: Any) -> Callable[[], Any]:
    """A zero-argument forward pass under `control` (None: plain diffusers attention)."""
    import torch

    extra = {"regional": control} if control is not None else None

    def run() -> Any:
        with torch.no_grad():
            return model(**inputs.kwargs, joint_attention_kwargs=extra, return_dict=False)[0]

    return run


# ----- measuring -----------------------------------------------------------------------------
def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], Any], repeats: int, device: str, warmup: int = 2) -> float:
    """Median seconds of `fn` after `warmup` calls (they absorb compilation and caches)."""
    import torch

    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timer(fn: Callable[[], Any], device: str) -> Callable[[], float]:
    """A zero-argument timer: seconds of one call of `fn` (for `bench_common.interleaved`)."""
    return lambda: median_seconds(fn, 1, device, warmup=0)


def peak_bytes(fn: Callable[[], Any], device: str) -> tuple[int, Any]:
    """Bytes one call adds at its peak over what was allocated before it, and its output."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before, out
    try:
        before = status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets the peak resident set to the current one
        out = fn()
        return (status_kib("VmHWM") - before) * 1024, out
    except OSError:  # no /proc: memory not measured
        return -1, fn()


def matmul_rate(device: str, dtype: Any) -> float:
    """FLOP/s of a large square matmul in `dtype` (median of 5 after warm-up)."""
    import torch

    n = 8192 if device.startswith("cuda") else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = median_seconds(lambda: a @ b, 5, device)
    return 2.0 * n**3 / seconds


@dataclass
class Row:
    """One measured forward."""

    name: str
    entities: int
    length: int
    seconds: float
    peak: int
    error: float | None
    floor_seconds: float
    times: list[float] = field(default_factory=list)
    """Seconds of each timing round (the rounds interleave all variants of an entity count)."""


def measure(name: str, entities: int, fn: Callable[[], Any], length: int, floor: float, ref: Any,
            device: str) -> tuple[Row, Any]:  # fmt: skip
    """Peak memory of the first call (it includes building cached masks) and error vs `ref`;
    the time is filled in by `time_round_robin`."""
    peak, out = peak_bytes(fn, device)
    error = None if ref is None else float((out.float() - ref.float()).abs().max() / ref.float().abs().max())
    return Row(name, entities, length, float("nan"), peak, error, floor), out


def time_round_robin(rows: list[Row], fns: list[Callable[[], Any]], repeats: int, device: str) -> None:
    """Seconds of each fn per round, the variants interleaved after two warm-up rounds."""
    times = interleaved({str(i): timer(fn, device) for i, fn in enumerate(fns)}, repeats, warmup=2)
    for i, row in enumerate(rows):
        row.times = times[str(i)]
        row.seconds = statistics.median(row.times)


def ratio_of(rows: list[Row], numerator: tuple[int, str], denominator: tuple[int, str]) -> list[float]:
    """Per-round ratios of two variants' seconds, by (entities, name)."""
    by = {(r.entities, r.name): r.times for r in rows}
    return round_ratios(by[numerator], by[denominator])


def floor_seconds(params: int, tokens: int, pairs: float, shape: Shape, rate: float) -> float:
    """The FLOP floor of one forward in seconds: weights once per token, attention on allowed pairs."""
    return (2.0 * params * tokens + 4.0 * pairs * shape.width * shape.blocks) / rate


# ----- the cases -----------------------------------------------------------------------------
def eligen_methods(device: str) -> list[tuple[str, str, str]]:
    """(label, method, token order) of the EliGen variants run on `device`."""
    methods = [("dense", "dense", "sequence"), ("groups", "groups", "sequence")]
    if not device.startswith("cuda"):
        methods.append(("merge", "merge", "sequence"))
    return methods + [("flex", "flex", "sequence"), ("flex-sorted", "flex", "sorted")]


def run_entities(model: Any, shape: Shape, entities: int, ctx: dict[str, Any]) -> list[Row]:
    """Every variant at one entity count, the dense reference first."""
    from eligen_bench.generators.flux.attention import allowed_fraction, build_plan
    from eligen_bench.generators.flux.attention_flex import prompting_bits
    from eligen_bench.generators.flux.regional import (
        EliGenControl,
        RegionalPromptingControl,
        regional_prompting_mask,
    )

    device, params, rate = ctx["device"], ctx["params"], ctx["rate"]
    masks = box_masks(entities, shape)
    rows, fns = [], []
    plain_inputs = Inputs(shape, 1, device)  # timed in the same rounds, so ratios share the load
    fns.append(forward_fn(model, plain_inputs, None))
    rows.append(measure("plain FLUX", entities, fns[-1], plain_inputs.length,
                        floor_seconds(params, plain_inputs.length, plain_inputs.length**2, shape, rate),
                        None, device)[0])  # fmt: skip
    inputs = Inputs(shape, entities + 1, device)
    length = inputs.length
    fns.append(forward_fn(model, inputs, None))
    rows.append(measure("unmasked SDPA", entities, fns[-1], length,
                        floor_seconds(params, length, length**2, shape, rate), None, device)[0])  # fmt: skip
    if entities:
        plan = build_plan([shape.prompt_tokens] * (entities + 1), masks).to(device)
        pairs = allowed_fraction(plan) * length**2
        ref = None
        for label, method, order in eligen_methods(device):
            fns.append(forward_fn(model, inputs, EliGenControl(plan, method=method, token_order=order)))
            row, out = measure(f"eligen {label}", entities, fns[-1], length,
                               floor_seconds(params, length, pairs, shape, rate), ref, device)  # fmt: skip
            ref = out if ref is None else ref
            rows.append(row)
        # Regional Prompting FLUX: entity prompts plus the background prompt, batch of two
        background = masks.sum(0) != 1  # the reference rule: uncovered or covered twice
        regions = torch_cat(masks, background) if bool(background.any()) else masks
        count = regions.shape[0]
        lengths = [shape.prompt_tokens] * count
        rp_inputs = Inputs(shape, count, device, batch=2)
        mask = regional_prompting_mask(lengths, regions)
        text = count * shape.prompt_tokens
        pairs = float(mask.sum()) + rp_inputs.length * (rp_inputs.length - text + shape.prompt_tokens)
        ref = None
        for method in ("dense", "flex"):
            control = RegionalPromptingControl(
                mask.to(device), text, shape.prompt_tokens, 0.3, method=method,
                token_bits=prompting_bits(lengths, regions).to(device),
            )  # fmt: skip
            fns.append(forward_fn(model, rp_inputs, control))
            row, out = measure(f"regional-flux {method}", entities, fns[-1], rp_inputs.length,
                               floor_seconds(params, 2 * rp_inputs.length, pairs, shape, rate), ref, device)  # fmt: skip
            ref = out if ref is None else ref
            rows.append(row)
    time_round_robin(rows, fns, ctx["repeats"], device)
    return rows


def torch_cat(masks: Any, background: Any) -> Any:
    import torch

    return torch.cat([masks, background[None]])


# ----- printing ------------------------------------------------------------------------------
def print_rows(rows: list[Row]) -> None:
    print("\n| entities | variant | L | ms / forward | x plain FLUX: median [range] of rounds | peak MiB "
          "| max err vs dense | x FLOP floor |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        peak = f"{r.peak / 2**20:.0f}" if r.peak >= 0 else "n/a"
        error = "-" if r.error is None else f"{r.error:.1e}"
        ratio = ratio_summary(ratio_of(rows, (r.entities, r.name), (r.entities, "plain FLUX")))
        print(f"| {r.entities} | {r.name} | {r.length} | {r.seconds * 1e3:.1f} | {ratio} "
              f"| {peak} | {error} | {r.seconds / r.floor_seconds:.2f} |")  # fmt: skip


def print_targets(rows: list[Row], auto: str, device: str) -> None:
    """The issue's targets, measured in this run: pass/fail (they are set for the GPU)."""
    by = {(r.entities, r.name): r.seconds for r in rows}
    floors = {(r.entities, r.name): r.floor_seconds for r in rows}
    top = max(r.entities for r in rows)
    print(f"\nTargets at {top} entities (set for CUDA; this run: {device}, auto = {auto}):")
    if (top, "eligen flex") not in by:
        print("  no flex measurement")
        return
    flex = (top, "eligen flex")
    times = {(r.entities, r.name): r.times for r in rows}
    checks = {
        "flex / dense": ratio_of(rows, flex, (top, "eligen dense")),
        "flex / unmasked SDPA": ratio_of(rows, flex, (top, "unmasked SDPA")),
        "flex / FLOP floor": [t / floors[flex] for t in times[flex]],
    }
    for name, ratios in checks.items():
        verdict = "PASS" if statistics.median(ratios) <= TARGETS[name] else "FAIL"
        print(f"  {name}: {ratio_summary(ratios)} (target <= {TARGETS[name]:.2f}) {verdict}")
    for n in sorted({r.entities for r in rows if 0 < r.entities <= 2}):
        ratios = ratio_of(rows, (n, f"eligen {auto}"), (n, "eligen dense"))
        verdict = "PASS" if statistics.median(ratios) <= 1 else "FAIL"
        print(f"  {n} entities, auto ({auto}) / dense: {ratio_summary(ratios)} (target <= 1.00) {verdict}")


def print_seconds_per_image(rows: list[Row], auto: str, note: str) -> None:
    """Seconds per image at each generator's defaults, from the measured forwards."""
    from eligen_bench.generators.flux.generator import (
        EliGenGenerator,
        FluxGenerator,
        RegionalFluxGenerator,
    )

    by = {(r.entities, r.name): r.seconds for r in rows}
    f, e, rp = FluxGenerator.defaults, EliGenGenerator.defaults, RegionalFluxGenerator.defaults
    plains = {r.entities: r.seconds for r in rows if r.name == "plain FLUX"}
    print(f"\nSeconds per image at the generators' defaults{note}:")
    inject = min(rp["inject_steps"], rp["steps"])
    for n in sorted({r.entities for r in rows if r.entities}):
        plain = SimpleNamespace(seconds=plains[n])  # plain FLUX timed in the same rounds
        flux = f["steps"] * (1 + (f["cfg_scale"] != 1.0)) * plain.seconds
        eligen_step = by[(n, f"eligen {auto}")]
        negative = eligen_step if e["cfg_entity_control"] else plain.seconds
        eligen = e["steps"] * (eligen_step + (e["cfg_scale"] != 1.0) * negative)
        rp_method = "flex" if auto == "flex" else "dense"
        regional = inject * by[(n, f"regional-flux {rp_method}")] + (rp["steps"] - inject) * plain.seconds
        regional += rp["steps"] * (rp["cfg_scale"] != 1.0) * plain.seconds
        print(f"  {n} entities: flux ({f['steps']} steps, cfg {f['cfg_scale']}): {flux:.1f} s; eligen ({e['steps']} steps, cfg {e['cfg_scale']}, {auto}): {eligen:.1f} s; "
              f"regional-flux ({rp['steps']} steps, {inject} with the mask, cfg {rp['cfg_scale']}, "
              f"{rp_method}): {regional:.1f} s")  # fmt: skip


# ----- variants ------------------------------------------------------------------------------
def compile_variant(model: Any, shape: Shape, ctx: dict[str, Any], entities: int) -> None:
    """torch.compile of the whole transformer: plain FLUX and EliGen (auto) vs eager."""
    import torch

    from eligen_bench.generators.flux.attention import build_plan
    from eligen_bench.generators.flux.regional import EliGenControl

    device, repeats = ctx["device"], ctx["repeats"]
    compiled = torch.compile(model, dynamic=False)
    plain = Inputs(shape, 1, device)
    inputs = Inputs(shape, entities + 1, device)
    plan = build_plan([shape.prompt_tokens] * (entities + 1), box_masks(entities, shape)).to(device)
    control = EliGenControl(plan, method=ctx["auto"])
    print(f"\n--compile (whole transformer, {entities} entities for EliGen; eager and compiled interleaved):")
    for label, inp, ctl in (("plain FLUX", plain, None), (f"eligen {ctx['auto']}", inputs, control)):
        eager, fast = forward_fn(model, inp, ctl), forward_fn(compiled, inp, ctl)
        try:
            for _ in range(3):  # compilation, outside the timed rounds
                fast()
        except Exception as error:  # a variant that does not compile is reported, not fatal
            print(f"  {label}: compile failed: {type(error).__name__}: {str(error).splitlines()[0]}")
            continue
        times = interleaved({"eager": timer(eager, device), "compiled": timer(fast, device)}, repeats)
        print(f"  {label}: eager {statistics.median(times['eager']) * 1e3:.1f} ms, compiled "
              f"{statistics.median(times['compiled']) * 1e3:.1f} ms "
              f"({ratio_summary(round_ratios(times['compiled'], times['eager']))}x)")


def batch_cfg_variant(model: Any, shape: Shape, ctx: dict[str, Any], entities: int) -> None:
    """Both CFG branches in one batch-2 forward vs two batch-1 forwards."""
    from eligen_bench.generators.flux.attention import build_plan
    from eligen_bench.generators.flux.regional import EliGenControl

    device, repeats = ctx["device"], ctx["repeats"]
    plan = build_plan([shape.prompt_tokens] * (entities + 1), box_masks(entities, shape)).to(device)
    control = EliGenControl(plan, method=ctx["auto"])
    print("\n--batch-cfg (one batch-2 forward vs two batch-1 forwards per step):")
    cases = (("plain FLUX", 1, None), (f"eligen {ctx['auto']}, negative under the same mask", entities + 1, control))
    for label, prompts, ctl in cases:
        one = forward_fn(model, Inputs(shape, prompts, device), ctl)
        two = forward_fn(model, Inputs(shape, prompts, device, batch=2), ctl)
        times = interleaved({"one": timer(one, device), "two": timer(two, device)}, repeats, warmup=2)
        ratios = round_ratios(times["two"], [2 * t for t in times["one"]])
        print(f"  {label}: 2 x {statistics.median(times['one']) * 1e3:.1f} ms -> "
              f"{statistics.median(times['two']) * 1e3:.1f} ms ({ratio_summary(ratios)}x)")
    print("  (eligen's default negative has no entity prompts, so its two branches differ in length "
          "and cannot share a batch without padding)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    import torch

    from eligen_bench.generators.flux.attention import auto_method

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--entities", default=",".join(map(str, ENTITY_COUNTS)))
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the transformer")
    parser.add_argument("--batch-cfg", action="store_true", help="also time both CFG branches in one batch")
    args = parser.parse_args(argv)
    shape, first_line = setting(args.device)
    print(first_line, flush=True)
    print(f"before: {load_average()}", flush=True)
    model = build_transformer(shape, args.device)
    params = sum(p.numel() for p in model.parameters())
    rate = matmul_rate(args.device, shape.dtype)
    print(f"parameters: {params / 1e9:.3f} B; measured {shape.dtype} matmul rate: {rate / 1e12:.2f} TFLOP/s", flush=True)
    auto = auto_method(torch.empty(0, device=args.device))
    ctx = {"device": args.device, "repeats": args.repeats, "params": params, "rate": rate, "auto": auto}
    rows: list[Row] = []
    counts = [int(n) for n in args.entities.split(",")]
    for n in counts:
        rows += run_entities(model, shape, n, ctx)
        print(f"  {n} entities done", flush=True)
    print_rows(rows)
    print_targets(rows, ctx["auto"], args.device)
    note = "" if args.device.startswith("cuda") else " (reduced config: not FLUX's cost)"
    print_seconds_per_image(rows, ctx["auto"], note)
    top = max(counts)
    if args.compile:
        compile_variant(model, shape, ctx, top)
    if args.batch_cfg:
        batch_cfg_variant(model, shape, ctx, top)
    print(f"\nafter: {load_average()}")


if __name__ == "__main__":
    main()
