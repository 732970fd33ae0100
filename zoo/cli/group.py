"""The ``zoo`` group: plugin commands, and one line and an exit code for whatever ends a command.

Errors a user can fix are ``ZooError``s: one line on stderr, exit 1 (a check or
verification failed) or 2 (usage); with ``--json``, a failed record on stdout
too. Ctrl-C, SIGTERM and SIGHUP exit 128 + the signal, after every cleanup.
"""

from __future__ import annotations

import errno
from typing import Any

import click

from zoo import interrupts
from zoo.cli.output import error_line, json_failure
from zoo.errors import ZooError, write_error
from zoo.host.manager import Zoo, load_zoo


class ZooGroup(click.Group):
    """Adds plugin commands, and turns ``ZooError`` and Ctrl-C into one line and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *plugin_commands(ctx).commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self.commands.get(name) or plugin_commands(ctx).commands.get(name)

    def invoke(self, ctx: click.Context) -> Any:
        status = 1
        with interrupts.signals_raise():  # SIGTERM and SIGHUP clean up as Ctrl-C does
            try:
                result = super().invoke(ctx)
                status = 0
                return result
            except click.exceptions.Exit as exc:
                status = exc.exit_code
                raise
            except (Exception, KeyboardInterrupt) as exc:
                status = _one_line(ctx, exc)
                ctx.exit(status)
            finally:
                interrupts.finished(status)  # a signal from here on does not change the status

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["zoo.args"] = list(args)  # for --json when the sub-command's own parsing fails
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:  # 'zoo --bogus'
            _usage_line(ctx, exc)
            raise  # unreachable: _usage_line exits


def _one_line(ctx: click.Context, exc: BaseException) -> int:
    """Print the line for what ended a command; its exit status. A bug keeps its traceback."""
    interrupt = interrupts.interrupt_behind(exc)  # Ctrl-C, or the failure a swallowed one became
    if interrupt is not None:
        try:
            click.echo(interrupt.line, err=True)
        except OSError:  # SIGHUP: the terminal may be gone
            pass
        return interrupt.exit_code
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:  # -o, --report: a name past 255 bytes
        exc = write_error(exc, exc.filename, "use")
    if isinstance(exc, ZooError):
        json_failure(ctx, str(exc), exc.exit_code)
        error_line(exc)
        return exc.exit_code
    if isinstance(exc, click.UsageError):
        if not isinstance(exc, click.exceptions.NoArgsIsHelpError):
            json_failure(ctx, exc.format_message(), exc.exit_code)
        _usage_line(ctx, exc)
    raise exc


def _usage_line(ctx: click.Context, exc: click.UsageError) -> None:
    """Click's own parse errors (bad --device, missing argument, unknown option)
    get the same one-line form as ours, with the way to help."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        raise exc  # bare 'zoo' prints the help, as click does
    command = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
    error_line(f"{exc.format_message()} (see '{command} --help')")
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


def plugin_commands(ctx: click.Context) -> click.Group:
    root = ctx.find_root()
    group = root.meta.get("zoo.plugin_commands")
    if group is None:
        group = root.meta["zoo.plugin_commands"] = click.Group("plugin-commands")
        get_zoo(ctx).add_commands(group, reserved=root.command.commands)  # type: ignore[attr-defined]
        _report_problems(root)
    return group
