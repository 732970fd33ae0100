"""``zoo pt2-info FILE``: what a ``.pt2`` archive from ``zoo export --format pt2`` holds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click

import zoo


@click.command("pt2-info")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def pt2_info(file: Path, as_json: bool) -> None:
    """Show the zoo metadata, inputs, outputs and graph operators of a .pt2 archive.

    \b
    Example:
      zoo export cnn --format pt2 && zoo pt2-info small-cnn.pt2
    """
    from zoo_example_plugin.pt2 import load_program

    # zoo.UsageError: zoo prints one line and exits 2, as for its own commands
    if not file.is_file():
        raise zoo.UsageError(f"{str(file)!r} does not exist")
    try:
        program, manifest = load_program(file)
    except Exception as exc:  # noqa: BLE001 - not an archive of ours: a user error, one line
        raise zoo.UsageError(f"{str(file)!r} is not a pt2 archive written by zoo: {exc}") from exc
    meta = {k.removeprefix("zoo."): v for k, v in manifest["metadata"].items()}
    operators = Counter(str(node.target) for node in program.graph.nodes if node.op == "call_function")
    info = {
        "architecture": meta.get("architecture"),
        "plugin": meta.get("plugin"),
        "params": json.loads(meta.get("params", "{}")),
        "seed": meta.get("seed"),
        "inputs": manifest["inputs"],
        "outputs": manifest["outputs"],
        "operators": dict(operators.most_common()),
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{file.name}: {info['architecture']} (plugin {info['plugin']}, seed {info['seed']})")
    click.echo("  params    " + ", ".join(f"{k}={v}" for k, v in info["params"].items()))
    click.echo(f"  inputs    {', '.join(info['inputs'])}")
    click.echo(f"  outputs   {', '.join(info['outputs'])}")
    click.echo(f"  graph     {sum(operators.values())} operator calls")
    for name, count in operators.most_common():
        click.echo(f"    {count:4d}  {name}")
