"""Benchmark one full Qwen-Image transformer forward: plain, and EliGen's regional attention.

    python benchmarks/qwen_step.py --device cuda [--repeats 7]
    python benchmarks/qwen_step.py              # CPU: a reduced config, said in the first line

On CUDA the transformer is Qwen/Qwen-Image's (diffusers' `QwenImageTransformer2DModel` defaults:
60 blocks, 24 heads x 128, text width 3584; nothing downloaded) with random bf16 weights built
on the GPU, at 1024x1024, a 128-token global prompt and 16 tokens per entity prompt (each
prompt its own length, as `qwen-eligen` encodes them). On CPU the same code runs a reduced
config (2 blocks, 4 heads x 64, 256x256, 64 + 16 tokens, float32) that ends in minutes; its
figures say how the variants compare on a CPU, not what Qwen-Image costs.

For 0, 2, 4 and 8 entities (seeded random boxes, as the FLUX benchmarks) it times, interleaved
in one warm process (every round calls each variant once, in turn, so load that comes and goes
hits all alike): `plain` (the stock processor on the global prompt alone: the negative branch),
`unmasked` (the stock processor on all prompts concatenated: the same length, no mask), and
EliGen with each `attention_method` available on the device. It prints ms per forward (median
over rounds), each variant's ratio to EliGen `dense` as the median of the per-round ratios
with their range, the agreement with `dense`, the load average before and after, and seconds
per image of each `qwen-eligen` version at its defaults (steps x (EliGen forward + plain
negative forward), the `auto` method).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench_common import box_token_masks, cpu_name

# diffusers' QwenImageTransformer2DModel defaults = Qwen/Qwen-Image's transformer config
QWEN_IMAGE: dict[str, Any] = dict(
    patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=3584, axes_dims_rope=(16, 56, 56),
)  # fmt: skip
REDUCED: dict[str, Any] = dict(QWEN_IMAGE, num_layers=2, attention_head_dim=64, num_attention_heads=4,
                               joint_attention_dim=256, axes_dims_rope=(8, 28, 28))
ENTITY_COUNTS = (0, 2, 4, 8)
SEED = 0


@dataclass(frozen=True)
class Setting:
    size: int
    global_tokens: int
    entity_tokens: int
    config: dict[str, Any]
    dtype: Any


def setting(device: str) -> tuple[Setting, str]:
    import torch

    if device.startswith("cuda"):
        return Setting(1024, 128, 16, QWEN_IMAGE, torch.bfloat16), (
            "qwen_step: Qwen-Image config (60 blocks, 24 x 128), random bf16 weights, 1024x1024, "
            f"128 + 16 tokens per entity, on {torch.cuda.get_device_name(device)}")
    return Setting(256, 64, 16, REDUCED, torch.float32), (
        f"qwen_step: REDUCED config on CPU ({cpu_name()}, {torch.get_num_threads()} threads): 2 blocks, "
        "4 x 64, 256x256, 64 + 16 tokens per entity, float32; not Qwen-Image's cost")


def build_transformer(s: Setting, device: str) -> Any:
    """Random weights in the run dtype, built on `device`, with EliGen's processors installed."""
    import torch
    from diffusers import QwenImageTransformer2DModel

    from eligen_bench.generators.qwen_image import attention
    from eligen_bench.generators.qwen_image.numerics import follow_diffsynth

    torch.manual_seed(SEED)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(s.dtype)  # never materialise 20B float32 parameters
    try:
        with torch.device(device):
            model = QwenImageTransformer2DModel(**s.config).eval()
    finally:
        torch.set_default_dtype(previous)
    follow_diffsynth(model)
    attention.install(model)
    return model


def methods(device: str) -> list[str]:
    """EliGen attention methods to time on `device` ("merge" is CPU only, "flex" is for CUDA)."""
    return ["dense", "groups", "flex"] if device.startswith("cuda") else ["dense", "groups", "merge"]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds(fn: Callable[[], Any], device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def cases(model: Any, s: Setting, entities: int, device: str) -> dict[str, Callable[[], Any]]:
    """The forwards to time at `entities`, by name."""
    import torch

    from eligen_bench.generators.flux.attention import build_plan
    from eligen_bench.generators.qwen_image.attention import EliGenQwenControl
    from eligen_bench.generators.qwen_image.sampling import model_timestep

    width = s.config["joint_attention_dim"]
    gen = torch.Generator("cpu").manual_seed(SEED + entities)
    n_image = (s.size // 16) ** 2
    image = torch.randn(1, n_image, 64, generator=gen).to(device, s.dtype)
    lengths = [s.global_tokens] + [s.entity_tokens] * entities
    text = torch.randn(1, sum(lengths), width, generator=gen).to(device, s.dtype)
    t = model_timestep(torch.tensor(500.0), s.dtype, device)
    shapes = [(1, s.size // 16, s.size // 16)]

    def forward(prompt: Any, control: Any = None) -> Callable[[], Any]:
        kwargs = {"regional": control} if control is not None else None

        def run() -> Any:
            with torch.no_grad():
                return model(hidden_states=image, encoder_hidden_states=prompt, timestep=t, img_shapes=shapes,
                             attention_kwargs=kwargs, return_dict=False)[0]
        return run

    out = {"plain": forward(text[:, : s.global_tokens])}
    if entities:
        out["unmasked"] = forward(text)
        plan = build_plan(lengths, box_token_masks(entities, s.size, SEED)).to(device)
        for method in methods(device):
            out[f"eligen {method}"] = forward(text, EliGenQwenControl(plan, method=method))
    return out


def run_entities(model: Any, s: Setting, entities: int, rounds: int, device: str) -> list[str]:
    fns = cases(model, s, entities, device)
    outputs = {name: fn() for name, fn in fns.items()}  # warm-up: caches, compilation
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(seconds(fn, device))
    ref_name = "eligen dense" if entities else "plain"
    ref = outputs[ref_name].float()
    lines = []
    for name, sink in times.items():
        ratios = [a / b for a, b in zip(sink, times[ref_name], strict=True)]
        error = ""
        if name.startswith("eligen"):
            error = f"{float((outputs[name].float() - ref).abs().max() / ref.abs().max()):.1e}"
        lines.append(f"| {entities} | {name} | {1000 * statistics.median(sink):.1f} | {statistics.median(ratios):.2f} "
                     f"[{min(ratios):.2f}, {max(ratios):.2f}] | {error or '-'} |")
    return lines


def seconds_per_image(model: Any, s: Setting, rounds: int, device: str) -> list[str]:
    """Each version at its steps with CFG: steps x (EliGen forward at 4 entities + plain forward)."""
    import torch

    from eligen_bench.generators.flux.attention import auto_method
    from eligen_bench.generators.qwen_image.generator import VERSIONS

    fns = cases(model, s, 4, device)
    method = auto_method(torch.zeros(1, device=device).reshape(1, 1, 1, 1))
    eligen, plain = fns[f"eligen {method}"], fns["plain"]
    eligen(), plain()
    step = statistics.median(seconds(eligen, device) + seconds(plain, device) for _ in range(rounds))
    return [f"- {version}: {v['steps']} steps x {step:.3f} s = {v['steps'] * step:.1f} s per image "
            f"(4 entities, `auto` = {method})" for version, v in VERSIONS.items()]


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timing rounds (each calls every variant once)")
    parser.add_argument("--entities", default=",".join(map(str, ENTITY_COUNTS)))
    args = parser.parse_args(argv)
    s, first = setting(args.device)
    print(first)
    load_before = os.getloadavg()
    model = build_transformer(s, args.device)
    print("| entities | variant | ms / forward | x eligen dense (plain at 0 entities): median [range] of rounds | max err vs dense |")
    print("|---|---|---|---|---|")
    for entities in (int(e) for e in args.entities.split(",")):
        for line in run_entities(model, s, entities, args.repeats, args.device):
            print(line, flush=True)
    print("seconds per image at the versions' defaults (CFG: one EliGen and one plain forward per step):")
    for line in seconds_per_image(model, s, args.repeats, args.device):
        print(line)
    print(f"load average (1, 5, 15 min): before {load_before}, after {os.getloadavg()}")
    del model
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
