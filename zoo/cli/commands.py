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
from zoo.cli.bench_command import bench_command
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
    runtime_option,
    seed_option,
    timeout_option,
    variant_options,
    weights_option,
)
from zoo.cli.output import echo, echo_json, error_line, write_stdout
from zoo.cli.render import check_lines, export_lines, export_summary, list_lines, show_lines
from zoo.cli.render_plugins import plugins_lines, runtime_records
from zoo.cli.weights import weights_command
from zoo.errors import ZooError
from zoo.progress import terminal_progress
from zoo.spec.params import parse_params
from zoo.version import __version__


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="zoo")
@click.option("-v", "--verbose", count=True, help="Show log messages (-vv: debug), including the exporter's own.")
@click.option("--plugin", "plugins", multiple=True, metavar="PATH|MODULE",
              help="Also load this plugin module for this run: a .py file or a module name (repeatable); no package or pip install needed.")
def cli(verbose: int, plugins: tuple[str, ...]) -> None:
    """A plugin-based model zoo: build PyTorch architectures, check them, export
    them to ONNX, and prove with onnxruntime that the export computes the same.

    \b
    Examples:
      zoo list
      zoo check binary
      zoo export binary --device cuda
      zoo --plugin ./my_models.py export tiny
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # basicConfig leaves the level alone where logging is already set up (an embedding app, pytest)
    logging.getLogger().setLevel(logging.ERROR if verbose == 0 else level)


def verbose(ctx: click.Context) -> bool:
    """``zoo -v``: every failing case in full."""
    return bool(ctx.find_root().params.get("verbose"))


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
    zoo = get_zoo(ctx)
    archs = zoo.architectures.filter(pattern)
    records = [{**a.to_dict(), "weights": [w.name for w in zoo.weights.of(a.name)]} for a in archs]
    echo(records, list_lines(archs, pattern, zoo.weights), as_json)


@cli.command("show")
@click.argument("name", shell_complete=complete_architecture)
@param_option
@seed_option
@click.option("--weights", metavar="NAME|FILE", help="Show it built with this weight set's parameters (and its weights loaded).")
@json_option
@click.pass_context
def show_command(ctx: click.Context, name: str, params: Sequence[str], seed: int, weights: str | None, as_json: bool) -> None:
    """Show an architecture: parameters, layers, shapes, warnings and its weight sets.

    \b
    Examples:
      zoo show binary
      zoo show multi --param n_classes=10 --param activation=relu
      zoo show multi --weights digits
    """
    from zoo.build.model import build_model
    from zoo.build.trained import resolve_weights
    from zoo.checking.describe import describe

    zoo = get_zoo(ctx)
    arch = zoo.architecture(name)
    overrides = parse_params(params, arch.parameters, arch.name)
    with terminal_progress(arch.name, as_json):  # a weight set's download
        choice = resolve_weights(zoo, arch, weights)
    if choice is not None and choice.entry is not None:
        overrides = {**choice.entry.params, **overrides}
    built = build_model(arch, overrides, seed=seed, weights=choice.path if choice else None)
    info = describe(built)
    registered = zoo.weights.of(arch.name)
    record = {**arch.to_dict(), "params": built.params, **info.to_dict(), "weights": [w.to_dict() for w in registered]}
    echo(record, show_lines(built, info, registered), as_json)


@cli.command("check")
@click.argument("name", shell_complete=complete_architecture)
@param_option
@device_option
@seed_option
@weights_option
@json_option
@click.pass_context
def check_command(
    ctx: click.Context, name: str, params: Sequence[str], device: str, seed: int, weights: str | None, as_json: bool
) -> None:
    """Forward pass, head checks, loss check and backward pass; no export.

    Exits 1 if any check fails.

    \b
    Examples:
      zoo check binary
      zoo check stack --param activation=relu --seed 3
    """
    from zoo.build.model import build_model
    from zoo.build.trained import resolve_weights
    from zoo.checking.checks import check_model

    zoo = get_zoo(ctx)
    arch = zoo.architecture(name)
    overrides = parse_params(params, arch.parameters, arch.name)
    choice = resolve_weights(zoo, arch, weights)
    if choice is not None and choice.entry is not None:  # a weight set builds with its parameters unless -p overrides one
        overrides = {**choice.entry.params, **overrides}
    result = check_model(build_model(arch, overrides, seed=seed, device=device, weights=choice.path if choice else None))
    echo(result, check_lines(result), as_json)
    if not result.ok:
        ctx.exit(1)


@cli.command("export")
@click.argument("name", required=False, shell_complete=complete_architecture)
@click.option("--all", "export_all", is_flag=True, help="Export every architecture (NAME, if given, is a wildcard filter).")
@param_option
@device_option
@seed_option
@click.option(
    "--weights", metavar="NAME|FILE",
    help=f"A weight set of the architecture ('zoo show NAME' lists them; 'default' picks its default) or a state dict file ({', '.join(WEIGHT_SUFFIXES)}).",
)
@format_option("Export format ('zoo plugins' lists them).")
@click.option(
    "-o", "--output", type=click.Path(),  # a str: plan_export needs to see a trailing slash
    help="Output file (default ./NAME plus the format's suffix, such as .onnx); with --all, a folder, created if missing (its parent must exist).",
)
@click.option("--opset", type=int, cls=OpsetOption)
@click.option("--static", is_flag=True, help="Fix every dimension to the sample shape instead of keeping batch/sequence dynamic.")
@click.option(
    "--size", "sizes", multiple=True, metavar="DIM=N",
    help="Size of a dynamic dimension in the export sample, repeatable (--size batch=8); with --static, the fixed size.",
)
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
@click.option(
    "--max-metric-drop", multiple=True, metavar="[METRIC=]NUMBER",
    help="Variant, with labels in --inputs: how far a task metric may fall below PyTorch's (repeatable; default the task's: accuracy 0.01 = 1 pp, rmse 5%).",
)
@click.option("--min-speedup", type=float, metavar="X", help="Variant: refuse it unless it is X times as fast as the float32 file (batch 1 and the largest case).")
@click.option(
    "--calibration", multiple=True, type=click.Path(path_type=Path), metavar="FILE.npz",
    help="int8: quantize statically, calibrated on these inputs (repeatable; keys are the input names, like --inputs).",
)
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="With --all: export in this many worker processes.")
@click.option("--shard", metavar="I/N", help="With --all: export only the I-th of N disjoint shards of the sorted list (1-based).")
@runtime_option
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
      zoo export binary --size batch=8 --static
      zoo export multiclass --weights w.safetensors --inputs test.npz --quantize int8
      zoo export --all -o exported/
      zoo export --all -o exported/ --jobs 2 --shard 1/4
      zoo export binary --runtime all
      zoo export binary --runtime openvino:inference_precision=f32
      zoo export --all -o exported/ --update
    """
    from zoo.exporting.plan import ExportRequest, plan_export
    from zoo.exporting.workers import run_plan
    from zoo.files.writing import write_json
    from zoo.verification.results import ExportResult, FailedExport

    zoo = get_zoo(ctx)
    with terminal_progress(None if export_all else name, as_json):  # a weight set's download
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
        write_stdout("\n".join(export_summary(results, single=not export_all, detail=verbose(ctx))) + "\n")
    if failed is not None:
        if not export_all:
            error_line(failed.error)
        ctx.exit(1)


@cli.command("verify")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--weights", metavar="NAME|FILE",
    help="The weights the file was exported with: a weight set's name or a file (a registered set the file names is found by itself).",
)
@click.option("--arch", "arch_name", metavar="NAME", help="Verify against this architecture (for a file zoo did not write).")
@param_option
@click.option("--seed", type=int, help="With --arch: the seed of the initial weights (default 0).")
@device_option
@rtol_option
@atol_option
@inputs_option
@runtime_option
@timeout_option(600.0)  # the file is untrusted: it must not decide alone how long verify runs
@click.option("--min-agreement", type=float, help="Variant: judge by this least agreement (a looser one the file records needs it).")
@click.option("--max-loss-change", type=float, help="Variant: judge by this largest relative loss change.")
@click.option("--max-error", type=float, help="Variant, regression: judge by this largest p99 error relative to the RMS.")
@click.option("--accept-recorded", is_flag=True, help="Variant: judge by the criteria the file records, even looser than zoo's defaults.")
@report_option
@json_option
@click.pass_context
def verify_command(
    ctx: click.Context, file: Path, weights: str | None, arch_name: str | None, params: Sequence[str], seed: int | None,
    device: str, rtol: Sequence[str], atol: Sequence[str], inputs: Sequence[Path], runtimes: Sequence[str], timeout: float | None,
    min_agreement: float | None, max_loss_change: float | None, max_error: float | None, accept_recorded: bool,
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
      zoo verify binary-sigmoid.onnx --runtime all
    """
    from zoo.files.paths import check_file_path
    from zoo.files.writing import write_json
    from zoo.verification.artifact import read_paths, verify_artifact
    from zoo.verification.results import FailedVerify

    read = [*read_paths(get_zoo(ctx), file, weights), *map(Path, inputs)] if report is not None else []
    if report is not None:
        check_file_path(report, "--report", read)  # the JSON must never replace what it verifies
    try:
        result = verify_artifact(
            get_zoo(ctx), file, weights=weights, device=device, rtol=rtol, atol=atol, inputs=inputs, arch_name=arch_name,
            params=params, seed=seed, timeout=timeout, accept_recorded=accept_recorded, runtimes=runtimes,
            criteria={"min_agreement": min_agreement, "max_loss_change": max_loss_change, "max_error": max_error},
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
    echo(result, export_lines(result, verb="verify", detail=verbose(ctx)), as_json)
    if not result.ok:
        error_line(result.error)  # with --json too: stderr says why, stdout has the record
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
    runtimes = {record["name"]: record for record in runtime_records(zoo)}
    records = [
        {**i.to_dict(), "formats": [zoo.exporters.get(name).to_dict() for name in i.exporters], "runtimes": [runtimes[name] for name in i.runtimes]}
        for i in zoo.plugins.values()
    ]
    echo(records, plugins_lines(zoo), as_json)


cli.add_command(weights_command)
cli.add_command(bench_command)
