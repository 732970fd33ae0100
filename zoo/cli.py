"""The ``zoo`` command line: parse, call the library, print.

Errors a user can fix are ``ZooError``s: one line on stderr, exit 1 (a check or
verification failed) or 2 (usage). Ctrl-C exits 130.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from zoo import __version__
from zoo.errors import OutputPathError, UsageError, ZooError
from zoo.exporters import onnx as onnx_format
from zoo.manager import Zoo, load_zoo
from zoo.params import format_value, parse_params
from zoo.render import bench_lines, check_lines, export_lines, heading, summary_row, table
from zoo.spec import TOLERANCE_HELP, Architecture
from zoo.weights import SUFFIXES as WEIGHT_SUFFIXES

# Formats come from plugins, loaded after --help is built: this names the built-in one's range.
OPSET_HELP = (
    "Operator set, for formats that have them; the default and supported range are the format's "
    f"(onnx: default {onnx_format.DEFAULT_OPSET}, {onnx_format.MIN_OPSET}-{onnx_format.MAX_OPSET})."
)

EXIT_INTERRUPTED = 130


class ZooGroup(click.Group):
    """Adds plugin commands, and turns ``ZooError`` and Ctrl-C into one line and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_plugin_commands(ctx).commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self.commands.get(name) or _plugin_commands(ctx).commands.get(name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ZooError as exc:
            click.echo(f"zoo: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except click.UsageError as exc:
            _usage_line(ctx, exc)
        except KeyboardInterrupt:
            click.echo("zoo: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:  # 'zoo --bogus'
            _usage_line(ctx, exc)
            raise  # unreachable: _usage_line exits


def _usage_line(ctx: click.Context, exc: click.UsageError) -> None:
    """Click's own parse errors (bad --device, missing argument, unknown option)
    get the same one-line form as ours, with the way to help."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        raise exc  # bare 'zoo' prints the help, as click does
    command = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
    click.echo(f"zoo: error: {exc.format_message()} (see '{command} --help')", err=True)
    ctx.exit(exc.exit_code)


def get_zoo(ctx: click.Context) -> Zoo:
    """The Zoo for this invocation: given by the caller (``obj=``) or loaded once."""
    root = ctx.find_root()
    if root.obj is None:
        root.obj = load_zoo()
    _report_problems(root)
    return root.obj


def _report_problems(root: click.Context) -> None:
    """Each plugin problem once, on stderr: the commands keep working."""
    shown = root.meta.setdefault("zoo.problems_shown", 0)
    for problem in root.obj.problems[shown:]:
        click.echo(f"zoo: warning: {problem}", err=True)
    root.meta["zoo.problems_shown"] = len(root.obj.problems)


def _plugin_commands(ctx: click.Context) -> click.Group:
    root = ctx.find_root()
    group = root.meta.get("zoo.plugin_commands")
    if group is None:
        group = root.meta["zoo.plugin_commands"] = click.Group("plugin-commands")
        get_zoo(ctx).add_commands(group, reserved=cli.commands)
        _report_problems(root)
    return group


def param_option(func: Any) -> Any:
    return click.option(
        "-p",
        "--param",
        "params",
        multiple=True,
        metavar="KEY=VALUE",
        help="Build parameter, repeatable (see 'zoo show NAME' for the list).",
    )(func)


def json_option(func: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")(func)


def device_option(func: Any) -> Any:
    return click.option(
        "--device",
        type=click.Choice(["cpu", "cuda"]),
        default="cpu",
        show_default=True,
        help="Where the model and its PyTorch reference run.",
    )(func)


def seed_option(func: Any) -> Any:
    return click.option("--seed", type=int, default=0, show_default=True, help="Seed for initial weights and generated inputs.")(func)


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
    if as_json:
        click.echo(json.dumps([a.to_dict() for a in archs], indent=2))
        return
    if not archs:
        click.echo(f"no architecture matches {pattern!r}" if pattern else "no architectures registered")
        return
    rows = [(a.name, ",".join(a.aliases) or "-", ",".join(a.tasks) or "-", a.shape_text(), a.plugin) for a in archs]
    click.echo(table(("NAME", "ALIASES", "TASK", "INPUTS", "PLUGIN"), rows))


@cli.command("show")
@click.argument("name")
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
    from zoo.describe import describe
    from zoo.model import build_model

    arch = get_zoo(ctx).architecture(name)
    overrides = parse_params(params, arch.parameters, arch.name)
    built = build_model(arch, overrides, seed=seed)
    info = describe(built)
    if as_json:
        click.echo(json.dumps({**arch.to_dict(), "params": built.params, **info.to_dict()}, indent=2, default=str))
        return
    click.echo(heading(arch))
    if arch.summary:
        click.echo(f"  {arch.summary}")
    click.echo("parameters:")
    for p in arch.parameters.values():
        click.echo(f"  {p.name} = {format_value(built.params[p.name])}  ({p.type_name}, default {format_value(p.default)})")
    click.echo("inputs:")
    for inp in arch.inputs:
        symbolic = "×".join(map(str, inp.shape))
        click.echo(f"  {inp.name}: {inp.dtype} {info.input_shapes[inp.name]}  ({symbolic})")
    click.echo("outputs:")
    for out in arch.outputs:
        extra = ", ".join(f"{k} {v}" for k, v in (("task", out.task), ("head", out.head)) if v)
        click.echo(f"  {out.name}: {info.output_shapes.get(out.name)}" + (f"  ({extra})" if extra else ""))
    click.echo("layers:")
    for layer_name, module in info.layers:
        click.echo(f"  {layer_name:<12} {module}")
    click.echo(f"parameter count: {info.parameters:,} ({info.trainable:,} trainable)")
    for warning in info.warnings:
        click.echo(f"warning: {warning}")


@cli.command("check")
@click.argument("name")
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
    from zoo.check import check_model
    from zoo.model import build_model

    arch = get_zoo(ctx).architecture(name)
    overrides = parse_params(params, arch.parameters, arch.name)
    result = check_model(build_model(arch, overrides, seed=seed, device=device))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo("\n".join(check_lines(result)))
    if not result.ok:
        ctx.exit(1)


def tolerance_options(func: Any) -> Any:
    func = click.option("--atol", type=float, help=f"Absolute tolerance ({TOLERANCE_HELP}).")(func)
    return click.option("--rtol", type=float, help="Relative tolerance (see --atol for defaults).")(func)


def fold_linear_option(func: Any) -> Any:
    return click.option(
        "--fold-linear",
        is_flag=True,
        help="Fold chains of affine ops (Gemm, MatMul+Add) with no nonlinearity between them into one, then verify.",
    )(func)


def report_option(func: Any) -> Any:
    return click.option(
        "--report", type=click.Path(dir_okay=False, path_type=Path), help="Also write the JSON record(s) to this file."
    )(func)


@cli.command("export")
@click.argument("name", required=False)
@click.option("--all", "export_all", is_flag=True, help="Export every architecture (NAME, if given, is a wildcard filter).")
@param_option
@device_option
@seed_option
@click.option("--weights", type=click.Path(path_type=Path), help=f"Trained state dict to load ({', '.join(WEIGHT_SUFFIXES)}).")
@click.option("--format", "format_name", default="onnx", show_default=True, help="Export format ('zoo plugins' lists them).")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path),
    help="Output file (default ./NAME plus the format's suffix, such as .onnx); with --all, a folder.",
)
@click.option("--opset", type=int, help=OPSET_HELP)
@click.option("--static", is_flag=True, help="Fix every dimension to the sample shape instead of keeping batch/sequence dynamic.")
@fold_linear_option
@tolerance_options
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output file.")
@report_option
@json_option
@click.pass_context
def export_command(
    ctx: click.Context,
    name: str | None,
    export_all: bool,
    params: Sequence[str],
    device: str,
    seed: int,
    weights: Path | None,
    format_name: str,
    output: Path | None,
    opset: int | None,
    static: bool,
    fold_linear: bool,
    rtol: float | None,
    atol: float | None,
    force: bool,
    report: Path | None,
    as_json: bool,
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
    """
    from zoo.exporting import (
        FailedExport,
        check_output_path,
        check_report_path,
        export_many,
        export_model,
        validate_request,
        write_report,
    )
    from zoo.model import build_model, torch_device

    zoo = get_zoo(ctx)
    exporter = zoo.exporter(format_name)
    options = {"fold_linear": True} if fold_linear else {}
    validate_request(exporter, opset=opset, rtol=rtol, atol=atol, options=options)  # before any model is built
    if export_all:
        if params or weights:
            raise UsageError("--param and --weights describe one architecture; export it by NAME instead of --all")
        archs = zoo.architectures.filter(name)
        if not archs:
            raise UsageError(f"no architecture matches {name!r}")
    elif name is None:
        raise UsageError("give an architecture NAME (see 'zoo list') or --all")
    else:
        archs = [zoo.architecture(name)]
    torch_device(device)  # fail before any work when the device is missing
    folder = output or Path(".")
    if export_all:
        targets = [folder / f"{a.name}{exporter.suffix}" for a in archs]
    else:
        targets = [output or Path(f"{archs[0].name}{exporter.suffix}")]
    if report is not None:
        check_report_path(report, [*targets, weights])  # the JSON must never replace the model or its weights
    settings = dict(opset=opset, static=static, rtol=rtol, atol=atol, force=force, options=options)
    if export_all:
        if not folder.is_dir():
            raise OutputPathError(f"with --all, -o must be an existing folder; {str(folder)!r} is not")

        def progress(index: int, arch: Architecture) -> None:
            if not as_json:
                click.echo(f"[{index + 1}/{len(archs)}] {arch.name} ...", err=True)

        results = export_many(archs, exporter, folder, seed=seed, device=device, on_start=progress, **settings)
        records: Any = [r.to_dict() for r in results]
    else:
        (arch,) = archs
        target = targets[0]
        check_output_path(target, force)  # before the build: a big model costs seconds and GBs
        overrides = parse_params(params, arch.parameters, arch.name)
        try:
            built = build_model(arch, overrides, seed=seed, device=device, weights=weights)
            results = [export_model(built, exporter, target, **settings)]
        except ZooError as exc:  # a failed check or export still leaves its record, as with --all
            if exc.exit_code == 1:
                _failure_record(FailedExport(arch.name, str(exc)).to_dict(), report, as_json, [*targets, weights])
            raise
        records = results[0].to_dict()
    if report is not None:  # side files (NAME.onnx.data) are known only now
        write_report(report, records, [p for r in results for p in getattr(r, "files", [])])
    if as_json:
        click.echo(json.dumps(records, indent=2, default=str))
    elif export_all:
        click.echo(table(("NAME", "STATUS", "MAX ABS ERROR", "TIME", "FILE"), [summary_row(r) for r in results]))
    else:
        click.echo("\n".join(export_lines(results[0])))
    if not all(r.ok for r in results):
        if not export_all and not as_json:
            click.echo(f"zoo: error: {results[0].error}", err=True)
        ctx.exit(1)


@cli.command("bench")
@click.argument("name")
@param_option
@click.option("--batch-sizes", default="1,64,4096", show_default=True, help="Comma-separated batch sizes to time.")
@device_option
@seed_option
@click.option(
    "--budget", type=click.FloatRange(min=0.01), default=0.5, show_default=True,
    help="Seconds of timed calls per runtime and batch size (after warm-up).",
)
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads for both runtimes (default: each runtime's own).")
@fold_linear_option
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Also draw latency against batch size to this PNG (needs matplotlib).")
@json_option
@click.pass_context
def bench_command(
    ctx: click.Context,
    name: str,
    params: Sequence[str],
    batch_sizes: str,
    device: str,
    seed: int,
    budget: float,
    threads: int | None,
    fold_linear: bool,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Time PyTorch eager against the exported model in onnxruntime: median and
    p90 latency per call, throughput, and the speed-up, per batch size. The
    model is exported and verified first, in a temporary folder.

    \b
    Examples:
      zoo bench binary
      zoo bench stack --param width=1024 --batch-sizes 1,256,4096 --fold-linear
      zoo bench multiclass --device cuda --json
      zoo bench binary --plot latency.png
    """
    from zoo.bench import bench_model, check_plot_path, parse_batch_sizes, plot_latency, require_matplotlib
    from zoo.exporting import validate_request
    from zoo.model import build_model

    sizes = parse_batch_sizes(batch_sizes)
    zoo = get_zoo(ctx)
    exporter = zoo.exporter("onnx")
    options = {"fold_linear": True} if fold_linear else {}
    validate_request(exporter, options=options)  # before the model is built
    if plot is not None:
        require_matplotlib()  # before minutes of timing, not after
        check_plot_path(plot)
    arch = zoo.architecture(name)
    overrides = parse_params(params, arch.parameters, arch.name)
    built = build_model(arch, overrides, seed=seed, device=device)
    result = bench_model(built, exporter, sizes, budget_s=budget, options=options, threads=threads)
    if plot is not None:
        plot_latency(result, plot)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    click.echo("\n".join(bench_lines(result)))
    if plot is not None:
        click.echo(f"plot: {plot}")


@cli.command("verify")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--weights", type=click.Path(path_type=Path), help="The weights the file was exported with, if any.")
@device_option
@tolerance_options
@report_option
@json_option
@click.pass_context
def verify_command(
    ctx: click.Context,
    file: Path,
    weights: Path | None,
    device: str,
    rtol: float | None,
    atol: float | None,
    report: Path | None,
    as_json: bool,
) -> None:
    """Re-verify an exported file: rebuild its architecture from the metadata
    inside it (name, parameters, seed, weights by sha256) and compare again.

    \b
    Examples:
      zoo verify binary-sigmoid.onnx
      zoo verify trained.onnx --weights trained.safetensors --device cuda
    """
    from zoo.exporting import FailedExport, check_report_path, verify_artifact, write_report

    if report is not None:
        check_report_path(report, [file, weights])  # the JSON must never replace what it verifies
    try:
        result = verify_artifact(get_zoo(ctx), file, weights=weights, device=device, rtol=rtol, atol=atol)
    except ZooError as exc:  # the file fails its check or does not load: scripts get a record too
        if exc.exit_code == 1:
            _failure_record(FailedExport(None, str(exc), file=file).to_dict(), report, as_json, [file, weights])
        raise
    record = result.to_dict()
    if report is not None:
        write_report(report, record, result.files)  # with the side files the exporter lists
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
    else:
        click.echo("\n".join(export_lines(result, verb="verify")))
    if not result.ok:
        if not as_json:
            click.echo(f"zoo: error: {result.error}", err=True)
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
    _plugin_commands(ctx)  # so plugin commands are listed too
    infos = list(zoo.plugins.values())
    if as_json:  # each plugin with the formats it registered, as the text's FORMAT table shows them
        records = [{**i.to_dict(), "formats": [zoo.exporters.get(name).to_dict() for name in i.exporters]} for i in infos]
        click.echo(json.dumps(records, indent=2))
        return
    rows = []
    for info in infos:
        registered = [
            f"{kind}: {', '.join(names)}"
            for kind, names in (("architectures", info.architectures), ("exporters", info.exporters), ("commands", info.commands))
            if names
        ]
        dist = f"{info.distribution or '-'}{' (built-in)' if info.builtin else ''}"
        rows.append((info.name, dist, info.version or "-", info.status, "; ".join(registered) or "-"))
    click.echo(table(("PLUGIN", "DISTRIBUTION", "VERSION", "STATUS", "REGISTERED"), rows))
    for info in infos:
        for error in info.errors:
            click.echo(f"{info.name}: {error}")
    if len(zoo.exporters):  # what --format takes, and what each format can do
        formats = [
            (e.name, e.suffix, e.plugin, " ".join("--" + o.replace("_", "-") for o in e.options) or "-", e.summary or "-")
            for e in zoo.exporters
        ]
        click.echo()
        click.echo(table(("FORMAT", "SUFFIX", "PLUGIN", "OPTIONS", "SUMMARY"), formats))


def _failure_record(record: dict[str, Any], report: Path | None, as_json: bool, protected: list[Path | None]) -> None:
    """Write a failed command's record where its success would have gone (--report, --json)."""
    from zoo.exporting import write_report

    if report is not None:
        write_report(report, record, protected)
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))


def main() -> None:
    cli(prog_name="zoo")
