"""The ``zoo`` command line: parse, call the library, print.

Errors a user can fix are ``ZooError``s: one line on stderr, exit 1 (a check or
verification failed) or 2 (usage). Ctrl-C exits 130, SIGTERM 143, SIGHUP 129
(``zoo.interrupts``).

Each command imports the library it calls inside its own body: ``zoo list``
loads only what listing needs (``tests/test_fast_cli.py``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from zoo import interrupts
from zoo.build.weights import SUFFIXES as WEIGHT_SUFFIXES
from zoo.cli.completion import complete_architecture
from zoo.cli.group import ZooGroup, get_zoo, plugin_commands
from zoo.cli.options import (
    OpsetOption,
    atol_option,
    device_option,
    fold_linear_option,
    format_option,
    inputs_option,
    json_option,
    param_option,
    report_option,
    rtol_option,
    seed_option,
    timeout_option,
    variant_options,
)
from zoo.cli.output import echo, echo_json, error_line, write_stdout
from zoo.cli.render import (
    bench_lines,
    check_lines,
    export_lines,
    export_summary,
    list_lines,
    plugins_lines,
    show_lines,
)
from zoo.errors import ZooError
from zoo.progress import terminal_progress
from zoo.spec.params import parse_params
from zoo.version import __version__


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="zoo")
@click.option("-v", "--verbose", count=True, help="Show log messages (-vv: debug), including the exporter's own.")
def cli(verbose: int) -> None:
    """A plugin-based model zoo: build PyTorch architectures, check them, export
    them to ONNX, and prove with onnxruntime that the export computes the same.

    \b
    Examples:
      zoo list
      zoo check binary
      zoo export binary --device cuda
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # basicConfig leaves the level alone where logging is already set up (an embedding app, pytest)
    logging.getLogger().setLevel(logging.ERROR if verbose == 0 else level)


@cli.command("list")
@click.argument("pattern", required=False)
@json_option
@click.pass_context
def list_command(ctx: click.Context, pattern: str | None, as_json: bool) -> None:
    """List registered architectures, optionally filtered by a wildcard PATTERN.

    \b
    Examples:
      zoo list
      zoo list 'multi*'
      zoo list --json
    """
    archs = get_zoo(ctx).architectures.filter(pattern)
    echo([a.to_dict() for a in archs], list_lines(archs, pattern), as_json)


@cli.command("show")
@click.argument("name", shell_complete=complete_architecture)
@param_option
@seed_option
@json_option
@click.pass_context
def show_command(ctx: click.Context, name: str, params: Sequence[str], seed: int, as_json: bool) -> None:
    """Show an architecture: parameters, layers, shapes and warnings.

    \b
    Examples:
      zoo show binary
      zoo show multi --param n_classes=10 --param activation=relu
    """
    from zoo.build.model import build_model
    from zoo.check.describe import describe

    arch = get_zoo(ctx).architecture(name)
    overrides = parse_params(params, arch.parameters, arch.name)
    built = build_model(arch, overrides, seed=seed)
    info = describe(built)
    echo({**arch.to_dict(), "params": built.params, **info.to_dict()}, show_lines(built, info), as_json)


@cli.command("check")
@click.argument("name", shell_complete=complete_architecture)
@param_option
@device_option
@seed_option
@json_option
@click.pass_context
def check_command(ctx: click.Context, name: str, params: Sequence[str], device: str, seed: int, as_json: bool) -> None:
    """Forward pass, head checks, loss check and backward pass; no export.

    Exits 1 if any check fails.

    \b
    Examples:
      zoo check binary
      zoo check stack --param activation=relu --seed 3
    """
    from zoo.build.model import build_model
    from zoo.check.checks import check_model

    arch = get_zoo(ctx).architecture(name)
    overrides = parse_params(params, arch.parameters, arch.name)
    result = check_model(build_model(arch, overrides, seed=seed, device=device))
    echo(result, check_lines(result), as_json)
    if not result.ok:
        ctx.exit(1)


@cli.command("export")
@click.argument("name", required=False, shell_complete=complete_architecture)
@click.option("--all", "export_all", is_flag=True, help="Export every architecture (NAME, if given, is a wildcard filter).")
@param_option
@device_option
@seed_option
@click.option("--weights", type=click.Path(path_type=Path), help=f"Trained state dict to load ({', '.join(WEIGHT_SUFFIXES)}).")
@format_option("Export format ('zoo plugins' lists them).")
@click.option(
    "-o", "--output", type=click.Path(),  # a str: plan_export needs to see a trailing slash
    help="Output file (default ./NAME plus the format's suffix, such as .onnx); with --all, a folder, created if missing (its parent must exist).",
)
@click.option("--opset", type=int, cls=OpsetOption)
@click.option("--static", is_flag=True, help="Fix every dimension to the sample shape instead of keeping batch/sequence dynamic.")
@fold_linear_option
@rtol_option
@atol_option
@inputs_option
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output file.")
@click.option(
    "--update", is_flag=True,
    help="Keep an existing file zoo wrote when it records this export's settings and versions and still verifies; re-export it otherwise.",
)
@variant_options("Place", "instead, once it meets the acceptance criteria")
@click.option("--min-agreement", type=float, help="Variant: least fraction of rows whose argmax/threshold agrees with PyTorch (0.99).")
@click.option("--max-loss-change", type=float, help="Variant: largest relative change of the loss (0.05).")
@click.option("--max-error", type=float, help="Variant, regression: largest p99 absolute error, as a fraction of the output's RMS (0.05).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="With --all: export in this many worker processes.")
@click.option("--shard", metavar="I/N", help="With --all: export only the I-th of N disjoint shards of the sorted list (1-based).")
@timeout_option(None)
@report_option
@json_option
@click.pass_context
def export_command(
    ctx: click.Context, name: str | None, export_all: bool, report: Path | None, as_json: bool, jobs: int, shard: str | None,
    **options: Any,
) -> None:
    """Check, export and verify an architecture: onnxruntime must compute what
    PyTorch computes, at several batch sizes, or the command fails (exit 1) and
    no file is left.

    \b
    Examples:
      zoo export binary
      zoo export multiclass --param n_classes=10 -o models/mc10.onnx
      zoo export binary --device cuda --report binary.json
      zoo export stack --fold-linear
      zoo export --all -o exported/
      zoo export --all -o exported/ --jobs 2 --shard 1/4
      zoo export --all -o exported/ --update
    """
    from zoo.export.plan import ExportRequest, plan_export
    from zoo.export.workers import run_plan
    from zoo.files.writing import write_json
    from zoo.verify.results import ExportResult, FailedExport

    zoo = get_zoo(ctx)
    plan = plan_export(zoo, ExportRequest(name, export_all, report=report, jobs=jobs, shard=shard, **options))
    with terminal_progress(plan.targets[0].arch.name if not export_all else None, as_json):
        results = run_plan(plan, jobs, zoo, None if as_json or not export_all else lambda line: click.echo(line, err=True))
        records = [r.to_dict() for r in results]  # the files' sha256 is computed here: a terminal sees how far
    failed = next((r for r in results if not r.ok), None)
    if not export_all and isinstance(failed, FailedExport) and failed.exit_code != 1 and failed.exception is not None:
        raise failed.exception  # a usage error (a parameter the build refused): one line, as before any work
    record = records if export_all else records[0]
    if report is not None:  # side files (NAME.onnx.data) are known only now
        placed = [p.name for r in results if isinstance(r, ExportResult) and r.ok and r.placed for p in r.files]
        outcome = f"the report was not written; {', '.join(placed)} placed and verified" if placed else "nothing was written"
        protected = [*plan.protected, *(p for r in results if isinstance(r, ExportResult) for p in r.files)]
        write_json(report, record, "--report", protected, outcome=outcome)
    interrupts.work_done(0 if failed is None else 1)  # files placed, report written: a late Ctrl-C changes nothing
    if as_json:
        echo_json(record)
    elif export_all or isinstance(results[0], ExportResult) and results[0].verification is not None:
        write_stdout("\n".join(export_summary(results, single=not export_all)) + "\n")
    if failed is not None:
        if not export_all:
            error_line(failed.error)
        ctx.exit(1)


@cli.command("bench")
@click.argument("name", shell_complete=complete_architecture)
@param_option
@click.option("--batch-sizes", default="1,64,4096", show_default=True, help="Comma-separated batch sizes to time.")
@click.option(
    "--size", "dim_sizes", multiple=True, metavar="DIM=SIZE",
    help="Size of another dynamic dimension, repeatable (--size seq=128; default: its export sample size).",
)
@format_option("Export format to time ('zoo plugins' lists them).")
@device_option
@seed_option
@click.option(
    "--budget", type=click.FloatRange(min=0.01, max=3600), default=0.5, show_default=True, callback=lambda _c, _p, v: _finite(v, "--budget"),
    help="Seconds of timed calls per runtime and batch size (after warm-up).",
)
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads for both runtimes (default: each runtime's own).")
@fold_linear_option
@variant_options("Also time", "(judged by the default acceptance criteria)")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Also draw latency against batch size to this PNG (needs matplotlib).")
@json_option
@click.pass_context
def bench_command(ctx: click.Context, as_json: bool, **options: Any) -> None:
    """Time PyTorch eager against the exported model (onnxruntime for onnx):
    median and p90 latency per call, throughput, and the speed-up, per batch
    size. The model is exported and verified first, in a temporary folder.

    \b
    Examples:
      zoo bench binary
      zoo bench stack --param width=1024 --batch-sizes 1,256,4096 --fold-linear
      zoo bench text --size seq=128 --batch-sizes 1,16
      zoo bench text --format pt2
      zoo bench multiclass --device cuda --json
      zoo bench binary --plot latency.png
      zoo bench stack --param width=1024 --quantize int8
    """
    from zoo.bench.plot import plot_latency
    from zoo.bench.timing import BenchRequest, bench_model, plan_bench
    from zoo.build.model import build_model, check_batch_sizes

    request = BenchRequest(**options)
    plan = plan_bench(get_zoo(ctx), request)
    built = build_model(plan.arch, plan.overrides, seed=request.seed, device=request.device)
    check_batch_sizes(built, plan.batch_sizes)  # before the export and minutes of timing
    with terminal_progress(plan.arch.name, as_json):
        result = bench_model(
            built, plan.exporter, plan.batch_sizes, request.budget, plan.options, request.threads, plan.sizes, plan.variant,
            plan.acceptance,
        )
    plot = request.plot
    if plot is not None:
        plot_latency(result, plot)
    echo(result, bench_lines(result) + ([f"plot: {plot}"] if plot is not None else []), as_json)


@cli.command("verify")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--weights", type=click.Path(path_type=Path), help="The weights the file was exported with, if any.")
@click.option("--arch", "arch_name", metavar="NAME", help="Verify against this architecture (for a file zoo did not write).")
@param_option
@click.option("--seed", type=int, help="With --arch: the seed of the initial weights (default 0).")
@device_option
@rtol_option
@atol_option
@inputs_option
@timeout_option(600.0)  # the file is untrusted: it must not decide alone how long verify runs
@report_option
@json_option
@click.pass_context
def verify_command(
    ctx: click.Context, file: Path, weights: Path | None, arch_name: str | None, params: Sequence[str], seed: int | None,
    device: str, rtol: Sequence[str], atol: Sequence[str], inputs: Sequence[Path], timeout: float | None,
    report: Path | None, as_json: bool,
) -> None:
    """Re-verify an exported file: rebuild its architecture from the metadata
    inside it (name, parameters, seed, weights by sha256) and compare again;
    or, with --arch, against that architecture (inputs and outputs matched by name, else position).

    \b
    Examples:
      zoo verify binary-sigmoid.onnx
      zoo verify trained.onnx --weights trained.safetensors --device cuda
      zoo verify model.onnx --inputs batch.npz --atol logits=1e-4
      zoo verify someone-elses.onnx --arch stack --weights stack.pt
    """
    from zoo.files.paths import check_file_path
    from zoo.files.writing import write_json
    from zoo.verify.artifact import read_paths, verify_artifact
    from zoo.verify.results import FailedVerify

    read = [*read_paths(get_zoo(ctx), file, weights), *map(Path, inputs)] if report is not None else []
    if report is not None:
        check_file_path(report, "--report", read)  # the JSON must never replace what it verifies
    try:
        result = verify_artifact(
            get_zoo(ctx), file, weights=weights, device=device, rtol=rtol, atol=atol, inputs=inputs, arch_name=arch_name,
            params=params, seed=seed, timeout=timeout,
        )
    except ZooError as exc:  # the file fails its check or does not load: scripts get a record too
        if exc.exit_code == 1:
            failure = FailedVerify(None, str(exc), file=file)
            if report is not None:
                write_json(report, failure, "--report", read)
            if as_json:
                echo_json(failure)
        raise
    if report is not None:
        write_json(report, result, "--report", [*read, *result.files])
    interrupts.work_done(0 if result.ok else 1)
    echo(result, export_lines(result, verb="verify"), as_json)
    if not result.ok:
        if not as_json:
            error_line(result.error)
        ctx.exit(1)


@cli.command("plugins")
@json_option
@click.pass_context
def plugins_command(ctx: click.Context, as_json: bool) -> None:
    """List loaded plugins, their distributions, what they registered, and
    failures; then the export formats (--format) with their options.

    \b
    Examples:
      zoo plugins
      ZOO_LOAD_PLUGINS= zoo plugins      # built-ins only
    """
    zoo = get_zoo(ctx)
    plugin_commands(ctx)  # so plugin commands are listed too

    # each plugin with the formats it registered, as the text's FORMAT table shows them
    records = [{**i.to_dict(), "formats": [zoo.exporters.get(name).to_dict() for name in i.exporters]} for i in zoo.plugins.values()]
    echo(records, plugins_lines(zoo), as_json)


def _finite(value: float, flag: str) -> float:  # click's FloatRange lets NaN through
    if value != value:
        raise click.BadParameter(f"{flag} nan is not a number of seconds")
    return value
