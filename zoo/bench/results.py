"""What ``zoo bench`` measures: each timing, one row per batch size, the whole result."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from zoo.records import Record, json_field

RELIABLE_CALLS = 10  # fewer timed calls than this, and a median says little


@dataclass
class Timing(Record):
    """Per-call latencies of one runtime at one batch size."""

    JSON_EXTRA = (
        ("calls", "calls"), ("median_s", "median"), ("p90_s", "p90"), ("min_s", "min"), ("samples_per_s", "throughput"),
        ("unreliable", "unreliable"),
    )

    runtime: str = json_field(skip=True)
    batch: int = json_field(skip=True)
    seconds: list[float] = json_field(skip=True)

    @property
    def calls(self) -> int:
        return len(self.seconds)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p90(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]

    @property
    def throughput(self) -> float:
        """Samples per second at the median latency."""
        return self.batch / self.median

    @property
    def p10(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[int(0.1 * (len(ordered) - 1))]

    @property
    def unreliable(self) -> str | None:
        """Why this median is no measurement to compare (too few calls, or a spread
        wider than the median itself: other work on the machine); ``None`` if it is one."""
        if self.calls < RELIABLE_CALLS:
            return f"{self.calls} calls (fewer than {RELIABLE_CALLS})"
        spread = self.p90 - self.p10
        if spread > self.median:
            return f"p10-p90 spread {spread:.3g} s is wider than the median {self.median:.3g} s"
        return None


@dataclass
class BenchRow(Record):
    """One batch size. ``onnx`` is the exported model's timing, whatever its
    format (named ``onnxruntime`` in JSON, the default format's runtime)."""

    JSON_EXTRA = (("speedup", "speedup"), ("variant_speedup", "variant_speedup"), ("speedup_reliable", "reliable"))

    batch: int
    torch: Timing
    onnx: Timing = json_field(name="onnxruntime")
    sizes: dict[str, int] = field(default_factory=dict)  # every dynamic dimension: batch=64, seq=128
    variant: Timing | None = json_field(omit_none=True, default=None)  # the int8/fp16 file in onnxruntime
    others: dict[str, Timing] = json_field(name="other_runtimes", omit_none=True, default=None)  # --runtime beyond the first

    @property
    def speedup(self) -> float:
        """How many times faster onnxruntime is than PyTorch (median latency)."""
        return self.torch.median / self.onnx.median

    @property
    def reliable(self) -> bool:
        """Whether every timing of the row is a measurement (see ``Timing.unreliable``)."""
        return all(t.unreliable is None for t in (self.torch, self.onnx, self.variant) if t is not None)

    @property
    def variant_speedup(self) -> float | None:
        """How many times faster the variant is than the float32 file, both in onnxruntime."""
        return None if self.variant is None else self.onnx.median / self.variant.median


@dataclass
class BenchResult(Record):
    architecture: str
    params: dict[str, Any]
    seed: int
    device: str
    torch_runtime: str = json_field(name="torch")  # "torch 2.13.0 eager (inference_mode, threads 2)"
    onnx_runtime: str = json_field(name="onnxruntime")
    providers: list[str] = json_field(name="execution_providers")
    budget_s: float
    rows: list[BenchRow] = field(default_factory=list)
    export_stats: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    format: str = "onnx"
    sizes: dict[str, int] = field(default_factory=dict)  # the other dynamic dimensions, the same in every row
    label: str = json_field(skip=True, default="ORT")  # the exported runtime's column heading
    variant: dict[str, Any] | None = None  # name, method, criteria, sizes, accepted, and why not
    runtime_info: dict[str, Any] | None = json_field(omit_none=True, default=None)  # the first runtime (zoo.RunnerInfo.to_dict())
    other_runtimes: list[dict[str, Any]] = json_field(omit_none=True, default=None)  # each further runtime's RunnerInfo
