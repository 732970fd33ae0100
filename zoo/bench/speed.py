"""Is a deployable variant worth shipping: its speed against the float32 file, on the same runtime.

A quantized graph can come out slower than the float32 one (onnxruntime's
dynamic quantization on small layers, say). While a variant is made, both files
are loaded in the same runtime and called alternately, one call each in turn,
for a fixed small budget at batch 1 and at the largest verification case's
sizes; the speed-up is the float32 median over the variant's median.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from zoo.host.plugin_calls import quiet_exporter
from zoo.verification.runtimes import RuntimeChoice, load_runner

BUDGET_S = 0.1  # per size, both files together: a verdict, not a benchmark ('zoo bench' is that)
MIN_CALLS = 5
WARM_UP = 2


def timing_sizes(verification: Any) -> list[dict[str, int]]:
    """Batch 1 and the largest case's sizes (by element count), other dimensions as that case has them."""
    cases = [dict(case.sizes) for case in verification.cases if case.sizes]
    if not cases:
        return [{}]
    largest = max(cases, key=lambda sizes: _product(sizes.values()))
    small = {**largest, "batch": 1} if "batch" in largest else largest
    return [small] if small == largest else [small, largest]


def time_against(exporter: Any, built: Any, float_path: Path, variant_path: Path, verification: Any) -> dict[str, Any]:
    """Median seconds per call of both files at each timing size, and the speed-ups."""
    from zoo.verification.compare import as_numpy

    runners = [load_runner(exporter, RuntimeChoice(None), path, built.device) for path in (float_path, variant_path)]
    rows = []
    for sizes in timing_sizes(verification):
        feed = {name: as_numpy(t) for name, t in built.sample_inputs(sizes or None, seed=built.seed).items()}
        float_s, variant_s = alternate(runners, feed)
        rows.append({"sizes": sizes, "float32_s": float_s, "variant_s": variant_s, "speedup": float_s / variant_s if variant_s > 0 else 0.0})
    for runner in runners:
        runner.close()
    return {"budget_s": BUDGET_S, "rows": rows}


def alternate(runners: list[Any], feed: dict[str, Any]) -> tuple[float, float]:
    """Median seconds per call of each runner, called in turn so that both see the same machine load."""
    times: list[list[float]] = [[] for _ in runners]
    with quiet_exporter():
        for runner in runners:
            for _ in range(WARM_UP):
                runner(feed)
        end = time.perf_counter() + BUDGET_S
        while time.perf_counter() < end or len(times[0]) < MIN_CALLS:
            for runner, seconds in zip(runners, times):
                start = time.perf_counter()
                runner(feed)
                seconds.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def speed_verdict(variant: dict[str, Any], name: str, min_speedup: float | None) -> tuple[list[str], list[str]]:
    """What refuses the variant under ``--min-speedup``, else the warnings: slower or larger than the float32 file."""
    refused, warnings = [], []
    for row in variant["speed"]["rows"]:
        at = ", ".join(f"{k}={v}" for k, v in row["sizes"].items()) or "the sample sizes"
        if min_speedup is not None and row["speedup"] < min_speedup:
            refused.append(
                f"at {at} it runs {row['speedup']:.2f}× as fast as the float32 file (median {row['variant_s'] * 1e6:.1f} µs vs "
                f"{row['float32_s'] * 1e6:.1f} µs), at least {min_speedup:g}× required (--min-speedup)"
            )
        elif min_speedup is None and row["speedup"] < 1:
            warnings.append(f"the {name} file is slower than the float32 file at {at} ({row['speedup']:.2f}× its speed)")
    if variant["bytes"] > variant["float32_bytes"]:
        warnings.append(f"the {name} file is larger than the float32 file ({variant['bytes'] / variant['float32_bytes']:.2f}×)")
    return refused, warnings


def _product(values: Any) -> int:
    total = 1
    for value in values:
        total *= value
    return total
