"""``zoo bench``: latency and throughput of PyTorch eager against the exported model.

The model is exported through the normal pipeline (``export_model``) into a
temporary folder, so what is timed is a verified export. Each runtime is warmed
up, then called one batch at a time until a time budget is spent (and at least
``MIN_CALLS`` times); every call is timed on its own, so the median and p90 are
per call. On CUDA, each timed call ends with a device synchronisation.
"""

from __future__ import annotations

import gc
import inspect
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo import progress
from zoo.bench.plot import check_plot_path, require_matplotlib
from zoo.bench.results import BenchResult, BenchRow, Timing
from zoo.build.model import BuiltModel
from zoo.build.shapes import dynamic_dims, sample_sizes
from zoo.errors import UsageError, VerificationFailed
from zoo.export.pipeline import export_model, variant_of
from zoo.export.plan import resolve_acceptance, resolve_format
from zoo.spec.exporter import Exporter
from zoo.spec.params import parse_params
from zoo.verify.acceptance import variant_name
from zoo.verify.artifact import exported_metadata
from zoo.verify.compare import as_numpy

DEFAULT_BATCH_SIZES = (1, 64, 4096)
DEFAULT_BUDGET_S = 0.5  # timed calls per runtime and batch size
WARMUP_FRACTION = 0.2  # of the budget, spent before timing
MIN_CALLS = 5
MAX_CALLS = 100_000


@dataclass
class BenchPlan:
    """``zoo bench``'s options, refused before any model is built."""

    arch: Any
    overrides: dict[str, Any]
    exporter: Exporter
    batch_sizes: tuple[int, ...]
    sizes: dict[str, int]
    options: dict[str, Any]
    variant: str | None = None
    acceptance: Any = None  # zoo.verify.acceptance.Acceptance, for the variant


@dataclass(frozen=True)
class BenchRequest:
    """``zoo bench``'s options as given, before anything is resolved (``plan_bench``)."""

    name: str
    params: Sequence[str] = ()
    batch_sizes: str = ",".join(map(str, DEFAULT_BATCH_SIZES))
    dim_sizes: Sequence[str] = ()
    format_name: str = "onnx"
    device: str = "cpu"
    seed: int = 0
    budget: float = DEFAULT_BUDGET_S
    threads: int | None = None
    fold_linear: bool = False
    quantize: str | None = None
    precision: str | None = None
    plot: Path | None = None


def plan_bench(zoo: Any, request: BenchRequest) -> BenchPlan:
    """Everything a user can get wrong, refused before minutes of timing."""
    r = request
    batches = parse_batch_sizes(r.batch_sizes)
    exporter = zoo.exporter(r.format_name)
    options = {"fold_linear": True} if r.fold_linear else {}
    resolve_format(exporter, options=options)
    variant = variant_name(r.quantize, r.precision)
    acceptance = resolve_acceptance(exporter, variant, {})
    if r.plot is not None:
        require_matplotlib()
        check_plot_path(r.plot)
    arch = zoo.architecture(r.name)
    overrides = parse_params(r.params, arch.parameters, arch.name)
    sizes = parse_sizes(r.dim_sizes, dynamic_dims(arch, {**arch.defaults, **overrides}))
    return BenchPlan(arch, overrides, exporter, batches, sizes, options, variant, acceptance)


def parse_sizes(texts: Sequence[str], dims: Mapping[str, Any]) -> dict[str, int]:
    """``--size seq=128``: sizes of dynamic dimensions other than batch (swept by
    --batch-sizes), within each ``Dim``'s ``min``/``max``."""
    sizes: dict[str, int] = {}
    others = ", ".join(name for name in dims if name != "batch") or "none"
    for text in texts:
        name, _, value = text.partition("=")
        name = name.strip()
        if name == "batch":
            raise UsageError(f"--size {text!r}: batch sizes are --batch-sizes; --size sets the other dynamic dimensions ({others})")
        if name not in dims:
            raise UsageError(f"--size {text!r}: {name!r} is not a dynamic dimension of this architecture; it has: {others}")
        dim = dims[name]
        try:
            size = int(value)
        except ValueError:
            size = 0
        high = dim.max if dim.max is not None else None
        if size < max(dim.min, 1) or (high is not None and size > high):
            bounds = f"{max(dim.min, 1)} to {high}" if high is not None else f"at least {max(dim.min, 1)}"
            raise UsageError(f"--size {text!r}: give NAME=SIZE with a size {bounds}")
        sizes[name] = size
    return sizes


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
    sizes: Mapping[str, int] | None = None,
    variant: str | None = None,
    acceptance: Any = None,
) -> BenchResult:
    """Export ``built`` (verified), then time PyTorch eager and the exported model at each batch size.

    ``threads`` sets both runtimes' intra-op threads (``None``: each one's default).
    ``sizes`` sets other dynamic dimensions (default: their sample sizes). The
    exported model is timed through its onnxruntime session when the format's
    runner has one, else by calling the runner itself (numpy in and out).
    ``variant`` ("int8", "fp16") is made from the verified file, judged by
    ``acceptance`` (``zoo.verify.acceptance``) and timed beside it, accepted or not: the
    result says which.
    """
    import torch


    fixed = {**sample_sizes(built.arch, built.params), **(sizes or {})}
    if "batch" not in fixed:
        raise UsageError(f"{built.arch.name} has no dynamic 'batch' input dimension, so there is no batch size to vary")
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as folder:
        path = Path(folder) / f"{built.arch.name}{exporter.suffix}"
        exported = export_model(built, exporter, path, options=options)
        if not exported.ok:
            raise VerificationFailed(f"{built.arch.name}: nothing to benchmark, the export's {exported.error}")
        runner = load_runner(exporter, path, built.device, threads)
        session = getattr(runner, "session", None)
        timed_session = callable(getattr(session, "run", None))
        result = BenchResult(
            architecture=built.arch.name,
            params=built.params,
            seed=built.seed,
            device=built.device,
            torch_runtime=f"torch {torch.__version__} eager (inference_mode, threads {threads or torch.get_num_threads()})",
            onnx_runtime=getattr(runner, "description", exporter.name),
            providers=list(getattr(runner, "providers", [])),
            budget_s=budget_s,
            export_stats=exported.export_stats,
            note=getattr(runner, "note", ""),
            format=exporter.name,
            sizes={name: size for name, size in fixed.items() if name != "batch"},
            label="ORT" if timed_session else exporter.name.upper(),
        )
        variant_session = None
        if variant is not None:
            if not timed_session:
                raise UsageError(f"zoo bench times a variant in onnxruntime: the {exporter.name} format's runner has no session")
            variant_session = bench_variant(built, exporter, path, variant, acceptance, threads, result)
        sync = torch.cuda.synchronize if built.device == "cuda" else None
        default_threads = torch.get_num_threads()
        try:
            if threads:
                torch.set_num_threads(threads)
            for batch in batch_sizes:
                case = {**fixed, "batch": batch}
                inputs = built.sample_inputs(case)
                progress.stage(f"timing batch {batch}")
                torch_timing = Timing("torch", batch, time_calls(torch_call(built, inputs), budget_s, sync))
                exported_call = onnx_call(session, inputs, built.device) if timed_session else runner_call(runner, inputs)
                onnx_timing = Timing(exporter.name, batch, time_calls(exported_call, budget_s))  # both return synchronised
                variant_timing = None
                if variant_session is not None:
                    variant_timing = Timing(variant, batch, time_calls(onnx_call(variant_session, inputs, built.device), budget_s))
                result.rows.append(BenchRow(batch, torch_timing, onnx_timing, {"batch": batch, **result.sizes}, variant_timing))
        finally:
            torch.set_num_threads(default_threads)
    return result


def bench_variant(
    built: BuiltModel, exporter: Exporter, source: Path, variant: str, acceptance: Any, threads: int | None, result: BenchResult
) -> Any:
    """Make and judge the variant of the verified file ``source``; its onnxruntime session."""
    progress.stage(f"making the {variant} variant")
    target, made, verification = variant_of(
        exporter, built, source, exported_metadata(exporter, source), variant, acceptance, source.parent / variant, source
    )
    result.variant = {**made, "accepted": verification.ok, "failure": None if verification.ok else verification.failures[0]}
    return exporter.load(target, built.device, threads=threads).session


def load_runner(exporter: Exporter, path: Path, device: str, threads: int | None) -> Any:
    """The format's runner; ``threads`` reaches loaders that take it (onnx's does)."""
    try:
        takes_threads = "threads" in inspect.signature(exporter.load).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        takes_threads = False
    return exporter.load(path, device, threads=threads) if takes_threads else exporter.load(path, device)


def runner_call(runner: Callable[[dict[str, Any]], Any], inputs: Mapping[str, Any]) -> Callable[[], Any]:
    """One call of a format's runner, numpy in and out, as verification calls it."""
    feed = {name: as_numpy(tensor) for name, tensor in inputs.items()}
    return lambda: runner(feed)


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
