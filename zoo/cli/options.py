"""Options several ``zoo`` commands share (a ``click.option`` decorator makes a new Option on each use)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import click

from zoo.cli.completion import complete_format
from zoo.cli.group import get_zoo
from zoo.cli.output import remember_json
from zoo.host.manager import load_zoo
from zoo.spec.architecture import TOLERANCE_HELP


def complete_param(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """``-p <TAB>``: the architecture's parameters as ``KEY=``, then its choices for ``KEY=``."""
    from click.shell_completion import CompletionItem

    from zoo.cli.completion import quiet_zoo

    # while an option waits for its value, click leaves the command's arguments unparsed in ctx.args
    name = ctx.params.get("name") or ctx.params.get("arch_name") or next((a for a in ctx.args if not a.startswith("-")), None)
    zoo = quiet_zoo(ctx)
    try:
        arch = zoo.architecture(name) if zoo is not None and name else None
    except Exception:  # noqa: BLE001 - an unknown name completes nothing
        arch = None
    if arch is None:
        return []
    key, sep, _ = incomplete.partition("=")
    if not sep:
        return [CompletionItem(f"{k}=", help=p.type_name) for k, p in arch.parameters.items() if k.startswith(incomplete)]
    found = arch.parameters.get(key)
    annotation = found.annotation if found is not None else None
    choices = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else (
        ("true", "false") if annotation is bool else ())
    return [CompletionItem(f"{key}={c}") for c in map(str, choices) if f"{key}={c}".startswith(incomplete)]


param_option = click.option(
    "-p", "--param", "params", multiple=True, metavar="KEY=VALUE", shell_complete=complete_param,
    help="Build parameter, repeatable (see 'zoo show NAME' for the list).",
)
weights_option = click.option(
    "--weights", metavar="NAME|FILE",
    help="A registered weight set of the architecture ('zoo weights'; 'default' for its default), or a state dict file.",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, callback=remember_json, help="Print JSON for scripts instead of text (errors too)."
)
device_option = click.option(
    "--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Where the model and its PyTorch reference run."
)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Seed for initial weights and generated inputs.")
atol_option = click.option(
    "--atol", multiple=True, metavar="[OUTPUT=]NUMBER",
    help=f"Absolute tolerance, for every output or one (repeatable: --atol logits=1e-4) ({TOLERANCE_HELP}).",
)
rtol_option = click.option("--rtol", multiple=True, metavar="[OUTPUT=]NUMBER", help="Relative tolerance, like --atol (see it for defaults).")
inputs_option = click.option(
    "--inputs", "inputs", multiple=True, type=click.Path(path_type=Path), metavar="FILE.npz",
    help="Also verify on these inputs (repeatable): an .npz whose keys are the input names, batch dimension first; "
    "a key named after an output holds its labels (class indices, 0/1 or values), scored by the task's metrics.",
)
fold_linear_option = click.option(
    "--fold-linear", is_flag=True,
    help="Fold chains of affine ops (Gemm, MatMul+Add) with no nonlinearity between them into one, then verify.",
)
runtime_option = click.option(
    "--runtime", "runtimes", multiple=True, metavar="NAME[:KEY=VALUE,...]",
    help="Runtime to prove the file on, repeatable, with its settings (openvino:inference_precision=f32); "
    "'all': every installed one ('zoo plugins' lists them). Default: onnxruntime.",
)


def format_option(help: str) -> Any:
    return click.option("--format", "format_name", default="onnx", show_default=True, shell_complete=complete_format, help=help)


def variant_options(verb: str, condition: str) -> Any:
    """``--quantize int8`` and ``--precision fp16``: ``verb`` the variant, ``condition`` saying how it is judged."""
    quantize = click.option("--quantize", type=click.Choice(["int8"]), help=f"{verb} an int8 variant {condition}.")
    precision = click.option("--precision", type=click.Choice(["fp16"]), help=f"{verb} a float16 variant {condition}.")

    def both(command: Any) -> Any:
        return quantize(precision(command))

    return both


def timeout_option(default: float | None) -> Any:
    help = "Stop the verification after this many seconds (exit 1)."
    return click.option("--timeout", type=float, default=default, show_default=default is not None, metavar="SECONDS", help=help)


report_option = click.option(
    "--report", type=click.Path(dir_okay=False, path_type=Path), help="Also write the JSON record(s) to this file."
)


class OpsetOption(click.Option):
    """``--opset``, whose help names each installed format's default and range: formats
    come from plugins, which load after the options are declared."""

    @property
    def help(self) -> str:
        ctx = click.get_current_context(silent=True)
        zoo = get_zoo(ctx) if ctx is not None else load_zoo()
        ranges = "; ".join(f"{e.name}: default {e.default_opset}, {e.opsets[0]}-{e.opsets[1]}" for e in zoo.exporters if e.opsets)
        return "Operator set, for formats that have them" + (f" ({ranges})." if ranges else ".")

    @help.setter
    def help(self, _text: str | None) -> None:  # click.Option.__init__ assigns it
        pass


def finite_seconds(value: float, flag: str) -> float:
    """A number of seconds click's FloatRange took: NaN gets through it."""
    if value != value:
        raise click.BadParameter(f"{flag} nan is not a number of seconds")
    return value
