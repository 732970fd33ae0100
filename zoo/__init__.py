"""zoo: a plugin-based model zoo that exports PyTorch models to ONNX and proves them right.

The public API for plugin authors is re-exported here; see docs/plugins.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.errors import ParameterError, UsageError, ZooError
from zoo.hookspecs import hookimpl
from zoo.job import ExportJob
from zoo.manager import Zoo, load_zoo
from zoo.spec import Architecture, Dim, Exporter, Input, Output, Tolerance
from zoo.task_spec import Task

if TYPE_CHECKING:
    import click

__version__ = "0.1.0"


def get_zoo(ctx: click.Context | None = None) -> Zoo:
    """The ``Zoo`` of the running ``zoo`` command, for plugin commands.

    It is the one the command line loaded (or was given with ``obj=`` by a test
    or an embedding program), so plugins are not loaded a second time. ``ctx``
    defaults to the current click context.
    """
    import click  # here, not at the top: plain 'import zoo' stays light

    from zoo.cli_group import get_zoo as cli_get_zoo

    ctx = ctx if ctx is not None else click.get_current_context(silent=True)
    if ctx is None:
        raise RuntimeError("zoo.get_zoo() works inside a zoo command; elsewhere call zoo.load_zoo()")
    return cli_get_zoo(ctx)


__all__ = [
    "Architecture",
    "Dim",
    "ExportJob",
    "Exporter",
    "Input",
    "Output",
    "ParameterError",
    "Task",
    "Tolerance",
    "UsageError",
    "Zoo",
    "ZooError",
    "__version__",
    "get_zoo",
    "hookimpl",
    "load_zoo",
]
