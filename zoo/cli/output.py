"""What the CLI prints on stdout: a command's text or JSON, and, with ``--json``,
a failed command's record too (``{"status": "failed", "error": ..., "exit_code": N}``)
next to the one line on stderr every failure gets. A full or closed stdout is one
line and exit 1, never a traceback.

The ``zoo`` program owns its stdout at the file-descriptor level
(``own_standard_streams``): descriptor 1 points to stderr for the whole command,
so plugin code that writes to it directly (``os.write(1, ...)``, a C library,
a child process) lands on stderr, and only zoo's own output reaches the real stdout."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Any

import click

from zoo.errors import OutputWriteError
from zoo.records import json_text
from zoo.verification.results import FailedExport


def json_failure(ctx: click.Context, error: str, exit_code: int) -> None:
    """With ``--json``, print the failed record, unless the command already printed one."""
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


def echo(data: Any, lines: list[str], as_json: bool) -> None:
    """Print a command's result: ``data`` as JSON, or the text ``lines``."""
    if as_json:
        echo_json(data)
    else:
        write_stdout("\n".join(lines) + "\n")


def echo_json(data: Any) -> None:
    write_stdout(json_text(data))
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.find_root().meta["zoo.json_shown"] = True  # a failure after this prints no second record


def write_stdout(text: str) -> None:
    """Stdout closed or full (``zoo list > /dev/full``): one line, exit 1; files written stay."""
    try:
        if sys.stdout is None:  # closed before zoo started ('zoo list >&-')
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        click.echo(text, nl=False)
        sys.stdout.flush()
    except OSError as exc:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # so the flush at exit cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        why = f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, '?')})"
        raise OutputWriteError(f"cannot write to standard output: {why}; the result was not printed (files written stay)") from None


def error_line(text: str) -> None:
    """The one line on stderr every failed command ends with."""
    click.echo(f"zoo: error: {text}", err=True)


def own_standard_streams() -> None:
    """For the ``zoo`` program, before anything else runs: ``sys.stdout`` writes to a
    copy of the real stdout, descriptor 1 becomes stderr (inherited by worker
    processes too). A closed stderr becomes /dev/null, so a warning cannot fail a
    good command; a closed stdout stays ``None``, which ``write_stdout`` reports."""
    import io

    stdout_open, stderr_open = _is_open(1), _is_open(2)
    if not stderr_open:
        null = os.open(os.devnull, os.O_WRONLY)
        if null != 2:
            os.dup2(null, 2)
            os.close(null)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True)
    stream = None
    if stdout_open:
        old = sys.stdout
        encoding = getattr(old, "encoding", None) or "utf-8"
        line_buffering = bool(getattr(old, "line_buffering", False))
        real = os.dup(1)
        # closefd=False: the descriptor lives as long as the process (no ResourceWarning at exit)
        stream = io.TextIOWrapper(io.FileIO(real, "w", closefd=False), encoding=encoding, errors="strict", line_buffering=line_buffering)
    os.dup2(2, 1)
    sys.stdout = stream


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
