"""``zoo bench``: latency and throughput of PyTorch eager against the exported model.

The model is exported through the normal pipeline (``export_model``) into a
temporary folder, so what is timed is a verified export. Each runtime is warmed
up, then called one batch at a time until a time budget is spent (and at least
``MIN_CALLS`` times); every call is timed on its own, so the median and p90 are
per call. On CUDA, each timed call ends with a device synchronisation.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo import progress
from zoo.bench.plot import check_plot_path, require_matplotlib
from zoo.bench.results import BenchResult, BenchRow, Timing
from zoo.build.model import BuiltModel, call_module
from zoo.build.shapes import dynamic_dims, parse_dim_sizes, sample_sizes
from zoo.build.trained import resolve_weights
from zoo.errors import UsageError, VerificationFailed
from zoo.exporting.pipeline import export_model, variant_of
from zoo.exporting.plan import resolve_acceptance, resolve_format
from zoo.spec.exporter import Exporter
from zoo.spec.params import parse_params
from zoo.spec.runner import Runner
from zoo.verification.acceptance import variant_name
from zoo.verification.artifact import exported_metadata, verify_artifact
from zoo.verification.divergence import failure_text
from zoo.verification.runtimes import RuntimeChoice, load_runner, parse_runtimes

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
    acceptance: Any = None  # zoo.verification.acceptance.Acceptance, for the variant
    weights: Path | None = None  # --weights: the file to load
    weights_entry: Any = None  # the registered zoo.Weights it is, if any
    runtimes: list[Any] = field(default_factory=list)  # zoo.verification.runtimes.RuntimeChoice, one latency column each


def bench_file(zoo: Any, path: Path, arch_name: str | None, params: Sequence[str], weights: Path | None, seed: int | None,
               device: str) -> Any:
    """``zoo bench FILE``: the file verified as ``zoo verify`` does (its architecture from its
    metadata, or ``arch_name``); the ``ExportResult``, whose ``built`` and ``exporter`` are timed."""
    verified = verify_artifact(zoo, path, weights=weights, device=device, arch_name=arch_name, params=params, seed=seed)
    if not verified.ok:
        raise VerificationFailed(f"{path.name}: nothing to benchmark, it does not verify: {verified.error}")
    if verified.verification.fixed.get("batch") is not None:
        raise UsageError(f"{path.name} takes batch={verified.verification.fixed['batch']} only; zoo bench varies the batch size")
    return verified


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
    weights: str | Path | None = None  # a weight set's name, or a state dict file
    arch_name: str | None = None  # zoo bench FILE --arch NAME: a file zoo did not write
    runtimes: Sequence[str] = ()  # --runtime NAME[:KEY=VALUE,...], or all


def plan_bench(zoo: Any, request: BenchRequest) -> BenchPlan:
    """Everything a user can get wrong, refused before minutes of timing."""
    r = request
    batches = parse_batch_sizes(r.batch_sizes)
    exporter = zoo.exporter(r.format_name)
    options = {"fold_linear": True} if r.fold_linear else {}
    resolve_format(exporter, options=options)
    variant = variant_name(r.quantize, r.precision)
    acceptance = resolve_acceptance(exporter, variant, {})
    choices = parse_runtimes(zoo, r.runtimes, exporter)
    if r.plot is not None:
        require_matplotlib()
        check_plot_path(r.plot)
    arch = zoo.architecture(r.name)
    overrides = parse_params(r.params, arch.parameters, arch.name)
    choice = resolve_weights(zoo, arch, r.weights)
    if choice is not None and choice.entry is not None:  # its build parameters, unless -p overrides one
        overrides = {**choice.entry.params, **overrides}
    sizes = parse_sizes(r.dim_sizes, dynamic_dims(arch, {**arch.defaults, **overrides}))
    return BenchPlan(
        arch, overrides, exporter, batches, sizes, options, variant, acceptance, choice.path if choice else None,
        choice.entry if choice else None, choices,
    )


def parse_sizes(texts: Sequence[str], dims: Mapping[str, Any]) -> dict[str, int]:
    """``--size seq=128``: sizes of dynamic dimensions other than batch (swept by
    --batch-sizes), within each ``Dim``'s ``min``/``max``."""
    others = ", ".join(name for name in dims if name != "batch") or "none"
    for text in texts:
        if text.partition("=")[0].strip() == "batch":
            raise UsageError(f"--size {text!r}: batch sizes are --batch-sizes; --size sets the other dynamic dimensions ({others})")
    return parse_dim_sizes(texts, {name: dim for name, dim in dims.items() if name != "batch"})


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
    file: Path | None = None,
    runtimes: Sequence[Any] = (),
) -> BenchResult:
    """Export ``built`` (verified on every runtime), then time PyTorch eager and the
    exported model on each runtime at each batch size.

    ``threads`` sets the intra-op threads of PyTorch and of each runtime that takes a
    ``threads`` setting (``None``: each one's default). ``sizes`` sets other dynamic
    dimensions (default: their sample sizes). ``runtimes``
    (``zoo.verification.runtimes.RuntimeChoice``): the first is the main column, each other
    one adds a latency column; none: the format's own runner. ``variant`` ("int8",
    "fp16") is made from the verified file, judged by ``acceptance`` and timed beside
    it on the first runtime, accepted or not: the result says which. ``file``: time this exported file (verified by the caller) instead of exporting.
    """

    fixed = {**sample_sizes(built.arch, built.params), **(sizes or {})}
    if "batch" not in fixed:
        raise UsageError(f"{built.arch.name} has no dynamic 'batch' input dimension, so there is no batch size to vary")
    choices = [with_threads(c, threads) for c in runtimes or [RuntimeChoice(None)]]
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as folder:
        path, export_stats = (file, {}) if file is not None else exported_file(built, exporter, Path(folder), options, choices)
        runners = [load_runner(exporter, choice, path, built.device) for choice in choices]
        try:
            result = bench_result(built, exporter, runners, choices, threads, budget_s, export_stats, fixed)
            variant_runner = None
            if variant is not None:
                if runners[0].info.runtime != "onnxruntime":
                    raise UsageError(f"zoo bench times a variant in onnxruntime: put --runtime onnxruntime first (the {exporter.name} format runs on {runners[0].info.runtime or 'its own runner'})")
                variant_runner = bench_variant(built, exporter, path, variant, acceptance, choices[0], result)
            names = [choice.name or exporter.name for choice in choices]
            time_rows(built, dict(zip(names, runners)), variant_runner, batch_sizes, fixed, budget_s, threads, result)
        finally:
            for runner in runners:
                runner.close()
    return result


def exported_file(
    built: BuiltModel, exporter: Exporter, folder: Path, options: Mapping[str, Any] | None, choices: Sequence[Any]
) -> tuple[Path, dict[str, Any]]:
    """``built`` exported into ``folder`` and verified on every runtime, with the export's statistics."""
    path = folder / f"{built.arch.name}{exporter.suffix}"
    exported = export_model(built, exporter, path, options=options, runtimes=choices)
    if not exported.ok:
        failing = next((v for v in exported.verifications if not v.ok), None)
        error = exported.error if failing is None else failure_text(failing, len(exported.verifications) > 1, tolerance_options=False)
        raise VerificationFailed(f"{built.arch.name}: nothing to benchmark, the export's {error}")
    return path, exported.export_stats


def bench_result(
    built: BuiltModel, exporter: Exporter, runners: Sequence[Runner], choices: Sequence[Any], threads: int | None,
    budget_s: float, export_stats: dict[str, Any], fixed: Mapping[str, int],
) -> BenchResult:
    """The result's header: what runs, where and how long; ``time_rows`` fills its rows."""
    import torch

    info = runners[0].info
    return BenchResult(
        architecture=built.arch.name,
        params=built.params,
        seed=built.seed,
        device=built.device,
        torch_runtime=f"torch {torch.__version__} eager (inference_mode, threads {threads or torch.get_num_threads()})",
        onnx_runtime=info.description,
        providers=list(info.providers),
        budget_s=budget_s,
        export_stats=export_stats,
        note=info.note,
        format=exporter.name,
        sizes={name: size for name, size in fixed.items() if name != "batch"},
        label="ORT" if info.runtime == "onnxruntime" else (choices[0].name or exporter.name).upper(),
        runtime_info=info.to_dict(),
        other_runtimes=[r.info.to_dict() for r in runners[1:]] or None,
    )


def time_rows(
    built: BuiltModel, runners: Mapping[str, Runner], variant_runner: Runner | None, batch_sizes: Sequence[int], fixed: Mapping[str, int],
    budget_s: float, threads: int | None, result: BenchResult,
) -> None:
    """One row per batch size: PyTorch, each runtime by name (and the variant), timed one after the other."""
    import torch

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
            timings = [Timing(name, batch, time_calls(r.timed_call(inputs, built.device), budget_s)) for name, r in runners.items()]
            variant_timing = None
            if variant_runner is not None:
                variant_timing = Timing("variant", batch, time_calls(variant_runner.timed_call(inputs, built.device), budget_s))
            others = {t.runtime: t for t in timings[1:]} or None
            result.rows.append(BenchRow(batch, torch_timing, timings[0], {"batch": batch, **result.sizes}, variant_timing, others))
    finally:
        torch.set_num_threads(default_threads)


def with_threads(choice: RuntimeChoice, threads: int | None) -> RuntimeChoice:
    """``--threads`` for a runtime that takes a ``threads`` setting (or a format's own ``load``
    that takes ``threads=``), unless ``--runtime`` set its own."""
    runtime = choice.runtime
    if not threads or "threads" in choice.settings or (runtime is not None and "threads" not in runtime.settings):
        return choice
    return choice.with_settings({"threads": str(threads)})


def bench_variant(
    built: BuiltModel, exporter: Exporter, source: Path, variant: str, acceptance: Any, choice: RuntimeChoice, result: BenchResult
) -> Runner:
    """Make and judge the variant of the verified file ``source``; its runner on ``choice``."""
    progress.stage(f"making the {variant} variant")
    target, made, verification = variant_of(
        exporter, built, source, exported_metadata(exporter, source), variant, acceptance, source.parent / variant, source,
        runtimes=[choice],
    )
    result.variant = {**made, "accepted": verification.ok, "failure": None if verification.ok else verification.failures[0]}
    return load_runner(exporter, choice, target, built.device)


def torch_call(built: BuiltModel, inputs: Mapping[str, Any]) -> Callable[[], Any]:
    import torch

    arch, module, feed = built.arch, built.module, dict(inputs)

    def call() -> Any:
        with torch.inference_mode():
            return call_module(arch, module, feed)

    return call
