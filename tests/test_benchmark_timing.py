"""The benchmarks time their variants interleaved and report ratios per round.

Only the bookkeeping is checked (call order, which times are paired, what is printed), on
made-up times: nothing here measures the machine.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:  # as when run as a script: its folder's helpers import
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_variants_are_called_in_turn_and_warm_up_rounds_dropped() -> None:
    common = _load("bench_common")
    calls: list[str] = []

    def timer(name: str, values: list[float]):
        def run() -> float:
            calls.append(name)
            return values[len([c for c in calls if c == name]) - 1]
        return run

    got = common.interleaved({"a": timer("a", [9.0, 1.0, 2.0]), "b": timer("b", [9.0, 3.0, 4.0])}, rounds=2)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert got == {"a": [1.0, 2.0], "b": [3.0, 4.0]}


def test_ratio_is_the_median_of_per_round_ratios_with_its_range() -> None:
    common = _load("bench_common")
    # load falls on rounds 2 and 3: the ratio of medians (4 / 4 = 1.00) hides that B is half of A
    a, b = [1.0, 4.0, 8.0], [2.0, 8.0, 4.0]
    ratios = common.round_ratios(a, b)
    assert ratios == [0.5, 0.5, 2.0]
    assert common.ratio_summary(ratios) == "0.50 [0.50-2.00]"
    assert common.ratio_summary([0.431]) == "0.43 (1 round)"
    assert common.load_average().startswith("load average")


def test_flux_step_pairs_times_of_the_same_round(capsys) -> None:
    bench = _load("flux_step")
    rows = [bench.Row(name, 2, 100, 0.0, 0, None, 1.0) for name in ("plain FLUX", "unmasked SDPA", "eligen dense")]
    calls: list[int] = []
    fns = [lambda i=i: calls.append(i) for i in range(3)]
    bench.time_round_robin(rows, fns, repeats=3, device="cpu")
    assert calls == [0, 1, 2] * 5  # two warm-up rounds, then three timed
    assert all(len(r.times) == 3 for r in rows)
    rows[0].times, rows[2].times = [1.0, 2.0, 4.0], [0.5, 1.2, 4.0]
    bench.print_rows(rows)
    line = next(x for x in capsys.readouterr().out.splitlines() if "eligen dense" in x)
    assert "| 0.60 [0.50-1.00] |" in line


def test_sd_methods_ratio_uses_plain_sd_of_the_same_round() -> None:
    bench = _load("sd_methods")

    def sample(seconds: float):
        return bench.Sample(seconds, [seconds / 2, seconds / 2], 0.0)

    plain = bench.Row("plain SD", "sd1", 0, 2, 2, 0.0, [sample(1.0), sample(3.0)])
    row = bench.Row("gligen", "sd1", 2, 2, 2, 0.0, [sample(2.0), sample(3.0)], baseline=plain.samples)
    assert row.ratios(plain) == [2.0, 1.0]
    assert bench._row_line(row, plain).endswith("| 1.50 [1.00-2.00] |")
    # a reduced --steps run: each image's estimate at the default steps enters its round's ratio
    reduced = bench.Row("gligen", "sd1", 2, 1, 2, 0.0, [sample(2.0)], baseline=[sample(1.0)])
    plain_reduced = bench.Row("plain SD", "sd1", 0, 1, 2, 0.0, [sample(1.0)])
    assert reduced.ratios(plain_reduced) == [4.0 / 2.0]  # (2 - 2 + 2 x 2) / (1 - 1 + 2 x 1)


def test_scaling_ratios_pair_rounds(capsys) -> None:
    bench = _load("scaling")
    results = []
    for round_, (local, one, two) in enumerate([(10.0, 9.0, 18.0), (5.0, 9.0, 9.0)]):
        for executor, workers, rate in (("local", 1, local), ("ray", 1, one), ("ray", 2, two)):
            results.append({"round": round_, "stage": "generate", "executor": executor, "workers": workers,
                            "wall": 1.0, "start": 0.0, "rate": rate, "overhead_ms": 1.0, "overhead_share": 0.01})
    bench.print_table(results, SimpleNamespace(images=8, cost=0.1, metric_cost=0.1, shard_size=4, rounds=2))
    lines = capsys.readouterr().out.splitlines()
    two = next(x for x in lines if x.startswith("| generate | ray | 2 |"))
    assert "| 1.80 [1.80-1.80]x | 1.50 [1.00-2.00]x |" in two
