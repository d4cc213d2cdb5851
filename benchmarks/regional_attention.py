"""Benchmark EliGen's regional attention: dense-mask reference vs our decomposition vs plain SDPA.

Shape: FLUX at 1024x1024, i.e. 4096 latent tokens and 512 T5 tokens per prompt, with 0, 2, 4
and 8 entities whose masks are random, partly overlapping boxes (fixed seed), head dim 128.

    python benchmarks/regional_attention.py [--heads 1] [--repeats 7] [--device cpu] [--threads N]

The reference's time is that of the SDPA call with its dense mask already built (the reference
code builds the mask once per forward pass); its peak memory includes building the mask.
Times are taken interleaved in one warm process: after a warm-up round, each of `--repeats`
rounds calls the three variants once, in turn, so load from other processes that comes and goes
falls on a round's three calls alike. Seconds are the median over rounds; each ratio is the
median of the per-round ratios, with their range, and the load average is printed before and
after. Peak memory is what one call adds on top of its inputs, measured in a fresh child process
per cell so that no cell sees another's allocations: on CPU the rise of the process's peak
resident set (Linux VmHWM, reset through /proc/self/clear_refs before the call), on CUDA
torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from bench_common import (
    box_token_masks,
    interleaved,
    load_average,
    ratio_summary,
    round_ratios,
    status_kib,
)

ENTITY_COUNTS = (0, 2, 4, 8)
SIZE = 1024
PROMPT_TOKENS = 512
HEAD_DIM = 128
SEED = 0
VARIANTS = ("reference", "ours", "plain")


def make_plan(entities: int, seed: int = SEED):
    """Plan of `entities` random box masks at 1024x1024 (boxes 1/4 to 5/8 of each side)."""
    from eligen_bench.generators.flux.attention import build_plan

    return build_plan([PROMPT_TOKENS] * (entities + 1), box_token_masks(entities, SIZE, seed))


def make_inputs(plan, heads: int, device: str):
    """Seeded float32 q, k, v of shape (1, heads, L, 128)."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    shape = (1, heads, plan.length, HEAD_DIM)
    return tuple(torch.randn(shape, generator=generator).to(device) for _ in range(3))


def variant_fn(name: str, q, k, v, plan, prebuilt_mask: bool):
    """A zero-argument callable running one variant.

    With `prebuilt_mask` the reference's dense mask is built here, outside the callable, as
    the reference code builds it once per forward pass and shares it between blocks.
    """
    import torch.nn.functional as F

    from eligen_bench.generators.flux.attention import (
        additive_mask,
        reference_attention,
        regional_attention,
    )

    if name == "reference":
        mask = additive_mask(plan, q.dtype, q.device) if prebuilt_mask else None
        return lambda: reference_attention(q, k, v, plan, mask=mask)
    if name == "ours":
        return lambda: regional_attention(q, k, v, plan)
    return lambda: F.scaled_dot_product_attention(q, k, v)


def measure_peak(entities: int, name: str, heads: int, device: str) -> int:
    """Bytes one call of `name` adds on top of its inputs (first call of a fresh process)."""
    import torch

    plan = make_plan(entities).to(device)
    q, k, v = make_inputs(plan, heads, device)
    fn = variant_fn(name, q, k, v, plan, prebuilt_mask=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    before = status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current resident set
    fn()
    return (status_kib("VmHWM") - before) * 1024


def measure_times(entities: int, heads: int, repeats: int, device: str) -> dict[str, list[float]]:
    """Seconds of each variant per round, the variants interleaved after one warm-up round."""
    import torch

    plan = make_plan(entities).to(device)
    q, k, v = make_inputs(plan, heads, device)
    fns = {name: variant_fn(name, q, k, v, plan, prebuilt_mask=True) for name in VARIANTS}

    def timer(fn):
        def run() -> float:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - start
        return run

    return interleaved({name: timer(fn) for name, fn in fns.items()}, repeats)


def run_peak(entities: int, name: str, args: argparse.Namespace) -> float:
    """`measure_peak` in a fresh interpreter, so no cell sees another's allocations."""
    command = [sys.executable, __file__, "--child", str(entities), name]
    command += ["--heads", str(args.heads), "--device", args.device]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1]))


def max_abs_diff(entities: int, heads: int, device: str) -> float:
    """Largest |ours - reference| over all outputs."""
    from eligen_bench.generators.flux.attention import reference_attention, regional_attention

    plan = make_plan(entities).to(device)
    q, k, v = make_inputs(plan, heads, device)
    ours = regional_attention(q, k, v, plan)
    return float((ours - reference_attention(q, k, v, plan)).abs().max())


def table(args: argparse.Namespace) -> list[str]:
    """Measure every cell and format the Markdown table."""
    from eligen_bench.generators.flux.attention import allowed_fraction

    lines = [
        "| entities | L | allowed pairs | (a) reference s | (b) ours s | (c) unmasked s | (b)/(a) | (b)/(c) "
        "| (a) peak MiB | (b) peak MiB | (c) peak MiB | max abs diff (b)-(a) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entities in ENTITY_COUNTS:
        plan = make_plan(entities)
        mib = [run_peak(entities, name, args) / 2**20 for name in VARIANTS]
        times = measure_times(entities, args.heads, args.repeats, args.device)
        a, b, c = (statistics.median(times[name]) for name in VARIANTS)
        ours_ref = ratio_summary(round_ratios(times["ours"], times["reference"]))
        ours_plain = ratio_summary(round_ratios(times["ours"], times["plain"]))
        lines.append(
            f"| {entities} | {plan.length} | {allowed_fraction(plan):.2f} | {a:.3f} | {b:.3f} | {c:.3f} | "
            f"{ours_ref} | {ours_plain} | {mib[0]:.0f} | {mib[1]:.0f} | {mib[2]:.0f} | "
            f"{max_abs_diff(entities, args.heads, args.device):.1e} |"
        )
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--heads", type=int, default=1, help="attention heads (FLUX has 24; 1 fits a small CPU)"
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed rounds per cell (each calls every variant once)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument("--child", nargs=2, metavar=("ENTITIES", "VARIANT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        entities, name = int(args.child[0]), args.child[1]
        print(json.dumps(measure_peak(entities, name, args.heads, args.device)))
        return
    print(
        f"regional attention, FLUX {SIZE}x{SIZE}: {(SIZE // 16) ** 2} latent + {PROMPT_TOKENS} per prompt, "
        f"heads={args.heads}, head_dim={HEAD_DIM}, float32, device={args.device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} interleaved rounds"
    )
    print(f"before: {load_average()}")
    print(
        "peak = extra memory of one call over its inputs, fresh process per cell ("
        + (
            "torch.cuda.max_memory_allocated)"
            if args.device.startswith("cuda")
            else "Linux VmHWM rise)"
        )
    )
    rows = table(args)
    print(f"after: {load_average()}")
    print("seconds: median over rounds; ratios: median [min-max] of the per-round ratios")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
