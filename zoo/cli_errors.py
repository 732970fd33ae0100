"""How the CLI reports a failed command to scripts: with ``--json``, a failed
record on stdout too (``{"status": "failed", "error": ..., "exit_code": N}``),
next to the one line on stderr every failure gets."""

from __future__ import annotations

import click


def json_failure(ctx: click.Context, error: str, exit_code: int) -> None:
    """With ``--json``, print the failed record, unless the command already printed one."""
    from zoo.cli import echo_json
    from zoo.records import FailedExport

    root = ctx.find_root()
    if root.meta.get("zoo.json_shown") or not wants_json(root):
        return
    echo_json(FailedExport(None, error, exit_code=exit_code))


def wants_json(root: click.Context) -> bool:
    """The sub-command's ``--json``: its parsed value, or, when parsing failed
    before it was read, whether it is on that command's command line."""
    if "zoo.as_json" in root.meta:
        return bool(root.meta["zoo.as_json"])
    args = root.meta.get("zoo.args", [])
    name = next((arg for arg in args if not arg.startswith("-")), None)  # the root's own options take no values
    command = root.command.get_command(root, name) if name else None  # type: ignore[attr-defined]
    takes_json = command is not None and any(param.name == "as_json" for param in command.params)
    return takes_json and "--json" in args[args.index(name) + 1 :]


def remember_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """``--json``'s callback: the value, kept where the group's error handling finds it."""
    ctx.find_root().meta["zoo.as_json"] = value
    return value
