"""Shell completion (click's own: ``eval "$(_ZOO_COMPLETE=bash_source zoo)"``):
architecture names and aliases, export formats. Plugin commands complete as
sub-commands already."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import click
from click.shell_completion import CompletionItem

from zoo.host.manager import load_zoo


def quiet_zoo(ctx: click.Context) -> Any:
    """The zoo, loaded without a word on the terminal (a plugin's prints or
    warnings would end up in the shell's list of completions); None if it fails."""
    root = ctx.find_root()
    if root.obj is not None:
        return root.obj
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            root.obj = load_zoo()
    except Exception:  # noqa: BLE001 - completion offers nothing rather than a traceback in the shell
        return None
    return root.obj


def _items(names: list[tuple[str, str]], incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(name, help=help_text or None) for name, help_text in names if name.startswith(incomplete)]


def complete_architecture(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    zoo = quiet_zoo(ctx)
    if zoo is None:
        return []
    names = [(key, arch.summary) for arch in zoo.architectures for key in (arch.name, *arch.aliases)]
    return _items(names, incomplete)


def complete_format(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    zoo = quiet_zoo(ctx)
    return [] if zoo is None else _items([(e.name, e.summary) for e in zoo.exporters], incomplete)
