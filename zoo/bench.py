"""``zoo bench``: latency and throughput of PyTorch eager against the exported model.

The model is exported through the normal pipeline (``export_model``) into a
temporary folder, so what is timed is a verified export. Each runtime is warmed
up, then called one batch at a time until a time budget is spent (and at least
``MIN_CALLS`` times); every call is timed on its own, so the median and p90 are
per call. On CUDA, each timed call ends with a device synchronisation.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo import progress
from zoo.errors import UsageError, VerificationFailed
from zoo.model import BuiltModel
from zoo.records import Record, json_field
from zoo.shapes import sample_sizes
from zoo.spec import Exporter

DEFAULT_BATCH_SIZES = (1, 64, 4096)
DEFAULT_BUDGET_S = 0.5  # timed calls per runtime and batch size
WARMUP_FRACTION = 0.2  # of the budget, spent before timing
MIN_CALLS = 5
MAX_CALLS = 100_000


@dataclass
class Timing(Record):
    """Per-call latencies of one runtime at one batch size."""

    JSON_EXTRA = (("calls", "calls"), ("median_s", "median"), ("p90_s", "p90"), ("min_s", "min"), ("samples_per_s", "throughput"))

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


@dataclass
class BenchRow(Record):
    JSON_EXTRA = (("speedup", "speedup"), ("variant_speedup", "variant_speedup"))

    batch: int
    torch: Timing
    onnx: Timing = json_field(name="onnxruntime")
    variant: Timing | None = json_field(omit_none=True, default=None)  # the int8/fp16 file in onnxruntime

    @property
    def speedup(self) -> float:
        """How many times faster onnxruntime is than PyTorch (median latency)."""
        return self.torch.median / self.onnx.median

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
    variant: dict[str, Any] | None = None  # name, method, criteria, sizes, accepted, and why not


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(size < 1 for size in sizes):
        raise UsageError(f"--batch-sizes {text!r}: give positive integers separated by commas, such as 1,64,4096")
    return sizes


def time_calls(call: Callable[[], Any], budget_s: float, sync: Callable[[], None] | None = None) -> list[float]:
    """Warm up, then time single calls until ``budget_s`` is spent (``MIN_CALLS`` to ``MAX_CALLS``)."""
    clock = time.perf_counter
    warmup_end = clock() + budget_s * WARMUP_FRACTION
    for calls in range(MAX_CALLS):  # first calls allocate, build kernels, fill caches
        call()
        if sync:
            sync()
        if calls >= 2 and clock() >= warmup_end:
            break
    seconds: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one call would be timed as that call's latency
    try:
        deadline = clock() + budget_s
        while len(seconds) < MAX_CALLS:
            start = clock()
            call()
            if sync:
                sync()
            seconds.append(clock() - start)
            if len(seconds) >= MIN_CALLS and start >= deadline:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return seconds


def bench_model(
    built: BuiltModel,
    exporter: Exporter,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    budget_s: float = DEFAULT_BUDGET_S,
    options: Mapping[str, Any] | None = None,
    threads: int | None = None,
    variant: str | None = None,
    acceptance: Any = None,
) -> BenchResult:
    """Export ``built`` (verified), then time PyTorch eager and onnxruntime at each batch size.

    ``threads`` sets both runtimes' intra-op threads (``None``: each one's default).
    ``variant`` ("int8", "fp16") is made from the verified file, judged by
    ``acceptance`` (``zoo.variants``) and timed beside it, accepted or not: the
    result says which.
    """
    import torch

    from zoo.pipeline import export_model

    sizes = sample_sizes(built.arch, built.params)
    if "batch" not in sizes:
        raise UsageError(f"{built.arch.name} has no dynamic 'batch' input dimension, so there is no batch size to vary")
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as folder:
        path = Path(folder) / f"{built.arch.name}{exporter.suffix}"
        exported = export_model(built, exporter, path, options=options)
        if not exported.ok:
            raise VerificationFailed(f"{built.arch.name}: nothing to benchmark, the export's {exported.error}")
        runner = exporter.load(path, built.device, threads=threads)  # the session verification uses, plus threads
        if not callable(getattr(getattr(runner, "session", None), "run", None)):
            raise UsageError(
                f"zoo bench times an onnxruntime session: the {exporter.name} format's loader gives none (use the onnx format)"
            )
        result = BenchResult(
            architecture=built.arch.name,
            params=built.params,
            seed=built.seed,
            device=built.device,
            torch_runtime=f"torch {torch.__version__} eager (inference_mode, threads {threads or torch.get_num_threads()})",
            onnx_runtime=runner.description,
            providers=runner.providers,
            budget_s=budget_s,
            export_stats=exported.export_stats,
            note=runner.note,
        )
        variant_session = None
        if variant is not None:
            variant_session = bench_variant(built, exporter, path, variant, acceptance, threads, result)
        sync = torch.cuda.synchronize if built.device == "cuda" else None
        default_threads = torch.get_num_threads()
        try:
            if threads:
                torch.set_num_threads(threads)
            for batch in batch_sizes:
                inputs = built.sample_inputs({**sizes, "batch": batch})
                progress.stage(f"timing batch {batch}")
                torch_timing = Timing("torch", batch, time_calls(torch_call(built, inputs), budget_s, sync))
                onnx_timing = Timing("onnxruntime", batch, time_calls(onnx_call(runner.session, inputs, built.device), budget_s))
                variant_timing = None
                if variant_session is not None:
                    variant_timing = Timing(variant, batch, time_calls(onnx_call(variant_session, inputs, built.device), budget_s))
                result.rows.append(BenchRow(batch, torch_timing, onnx_timing, variant_timing))
        finally:
            torch.set_num_threads(default_threads)
    return result


def bench_variant(
    built: BuiltModel, exporter: Exporter, source: Path, variant: str, acceptance: Any, threads: int | None, result: BenchResult
) -> Any:
    """Make and judge the variant of the verified file ``source``; its onnxruntime session."""
    from zoo.pipeline import exported_metadata, variant_of

    progress.stage(f"making the {variant} variant")
    target, made, verification = variant_of(
        exporter, built, source, exported_metadata(exporter, source), variant, acceptance, source.parent / variant, source
    )
    result.variant = {**made, "accepted": verification.ok, "failure": None if verification.ok else verification.failures[0]}
    return exporter.load(target, built.device, threads=threads).session


def torch_call(built: BuiltModel, inputs: Mapping[str, Any]) -> Callable[[], Any]:
    import torch

    module, args = built.module, tuple(inputs.values())

    def call() -> Any:
        with torch.inference_mode():
            return module(*args)

    return call


def onnx_call(session: Any, inputs: Mapping[str, Any], device: str) -> Callable[[], Any]:
    """One ``run``: from numpy on the CPU; on CUDA, inputs and outputs stay on the
    device (I/O binding), as PyTorch's do."""
    if device == "cuda" and session.get_providers()[0] == "CUDAExecutionProvider":
        binding = session.io_binding()
        bound = {name: tensor.contiguous() for name, tensor in inputs.items()}  # alive as long as the call
        for name, tensor in bound.items():
            binding.bind_input(name, "cuda", 0, _numpy_dtype(tensor), tuple(tensor.shape), tensor.data_ptr())
        for output in session.get_outputs():
            binding.bind_output(output.name, "cuda")

        def call_bound() -> Any:
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            return bound

        return call_bound
    feed = {name: tensor.detach().cpu().numpy() for name, tensor in inputs.items()}
    return lambda: session.run(None, feed)


def _numpy_dtype(tensor: Any) -> Any:
    import torch

    return torch.empty((), dtype=tensor.dtype).numpy().dtype.type


def plot_latency(result: BenchResult, path: Path) -> None:
    """Median latency (p90 as the band's top) against batch size, one line per runtime."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    batches = [row.batch for row in result.rows]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, timings in (
        (result.torch_runtime, [row.torch for row in result.rows]),
        (f"{result.onnx_runtime} [{result.providers[0] if result.providers else '?'}]", [row.onnx for row in result.rows]),
    ):
        medians = [t.median * 1e3 for t in timings]
        axes.plot(batches, medians, marker="o", label=label)
        axes.fill_between(batches, medians, [t.p90 * 1e3 for t in timings], alpha=0.2)
    axes.set_xscale("log", base=2)
    axes.set_xticks(batches, [str(b) for b in batches])
    axes.set_yscale("log")
    axes.set_xlabel("batch size")
    axes.set_ylabel("latency per call, ms (median; band to p90)")
    axes.set_title(f"{result.architecture} on {result.device}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    from zoo.artifacts import write_atomically

    try:
        write_atomically(
            path, lambda handle: figure.savefig(handle, dpi=120, format=path.suffix[1:].lower() or "png"), "--plot", "write the plot"
        )
    finally:
        plt.close(figure)


def check_plot_path(path: Path) -> None:
    """Refuse a ``--plot`` path that cannot be written, before minutes of timing."""
    from matplotlib.backend_bases import FigureCanvasBase

    from zoo.artifacts import check_file_path

    check_file_path(path, "--plot", example=" such as latency.png")

    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix and path.suffix[1:].lower() not in formats:
        raise UsageError(f"--plot {path.name!r}: matplotlib cannot draw {path.suffix!r} files; use .png (or {', '.join(sorted(formats))})")


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'zoo-onnx[plot]'") from None
