"""``zoo bench``: the command line of timing PyTorch against the exported file."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from zoo.cli.completion import complete_architecture
from zoo.cli.group import get_zoo
from zoo.cli.options import (
    device_option,
    finite_seconds,
    fold_linear_option,
    format_option,
    json_option,
    param_option,
    runtime_option,
    seed_option,
    variant_options,
    weights_option,
)
from zoo.cli.output import echo
from zoo.cli.render import bench_lines
from zoo.errors import UsageError
from zoo.progress import terminal_progress


@click.command("bench")
@click.argument("name", shell_complete=complete_architecture)
@click.option("--arch", "arch_name", metavar="NAME", help="For a FILE zoo did not write: the architecture it computes.")
@param_option
@click.option("--batch-sizes", default="1,64,4096", show_default=True, help="Comma-separated batch sizes to time.")
@click.option(
    "--size", "dim_sizes", multiple=True, metavar="DIM=SIZE",
    help="Size of another dynamic dimension, repeatable (--size seq=128; default: its export sample size).",
)
@format_option("Export format to time ('zoo plugins' lists them).")
@device_option
@seed_option
@weights_option
@click.option(
    "--budget", type=click.FloatRange(min=0.01, max=3600), default=0.5, show_default=True, callback=lambda _c, _p, v: finite_seconds(v, "--budget"),
    help="Seconds of timed calls per runtime and batch size (after warm-up).",
)
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads for both runtimes (default: each runtime's own).")
@fold_linear_option
@variant_options("Also time", "(judged by the default acceptance criteria)")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Also draw latency against batch size to this PNG (needs matplotlib).")
@runtime_option
@json_option
@click.pass_context
def bench_command(ctx: click.Context, as_json: bool, **options: Any) -> None:
    """Time PyTorch eager against the exported model (onnxruntime for onnx):
    median and p90 latency per call, throughput, and the speed-up, per batch
    size. The model is exported and verified first, in a temporary folder;
    NAME may also be an exported FILE, verified as 'zoo verify' does, then timed.

    \b
    Examples:
      zoo bench binary
      zoo bench stack --param width=1024 --batch-sizes 1,256,4096 --fold-linear
      zoo bench text --size seq=128 --batch-sizes 1,16
      zoo bench text --format pt2
      zoo bench multiclass --device cuda --json
      zoo bench binary --plot latency.png
      zoo bench binary-sigmoid.onnx
      zoo bench stack --param width=1024 --quantize int8
      zoo bench binary --runtime all
    """
    from zoo.bench.plot import plot_latency
    from zoo.bench.timing import BenchRequest, bench_file, bench_model, plan_bench
    from zoo.build.model import build_model, check_batch_sizes

    request = BenchRequest(**options)
    file = Path(request.name) if Path(request.name).suffix and Path(request.name).is_file() else None
    if file is not None:  # an exported file: its architecture, parameters and seed from its metadata (or --arch)
        verified = bench_file(get_zoo(ctx), file, request.arch_name, request.params, request.weights,
                              request.seed if request.arch_name else None, request.device)
        built = verified.built
        bench_request = dataclasses.replace(request, name=built.arch.name, params=(), format_name=verified.exporter.name, weights=None)
        plan = plan_bench(get_zoo(ctx), bench_request)
    else:
        if request.arch_name is not None:
            raise UsageError(f"--arch names the architecture of a FILE; {request.name!r} is not a file")
        with terminal_progress(request.name, as_json):  # a weight set's download
            plan = plan_bench(get_zoo(ctx), request)
        built = build_model(plan.arch, plan.overrides, seed=request.seed, device=request.device, weights=plan.weights)
    check_batch_sizes(built, plan.batch_sizes)  # before the export and minutes of timing
    with terminal_progress(plan.arch.name, as_json):
        result = bench_model(
            built, plan.exporter, plan.batch_sizes, request.budget, plan.options, request.threads, plan.sizes, plan.variant,
            plan.acceptance, file=file, runtimes=plan.runtimes,
        )
    plot = request.plot
    if plot is not None:
        plot_latency(result, plot)
    echo(result, bench_lines(result) + ([f"plot: {plot}"] if plot is not None else []), as_json)
