"""zoo: a plugin-based model zoo that exports PyTorch models to ONNX and proves them right.

The public API for plugin authors is re-exported here; see docs/plugins.md.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import click

    from zoo.errors import ParameterError, UsageError, ZooError
    from zoo.hookspecs import hookimpl
    from zoo.job import ExportJob
    from zoo.manager import Zoo, load_zoo
    from zoo.spec import Architecture, Dim, Exporter, Input, Output, Tolerance
    from zoo.task_spec import Task

__version__ = "0.1.0"

# Imported on first use, so that the zoo program's entry point (zoo.entry) sets its
# signal handlers before click, pluggy and importlib.metadata load.
_PUBLIC = {
    "ParameterError": "zoo.errors", "UsageError": "zoo.errors", "ZooError": "zoo.errors",
    "hookimpl": "zoo.hookspecs", "ExportJob": "zoo.job", "Zoo": "zoo.manager", "load_zoo": "zoo.manager",
    "Architecture": "zoo.spec", "Dim": "zoo.spec", "Exporter": "zoo.spec", "Input": "zoo.spec",
    "Output": "zoo.spec", "Tolerance": "zoo.spec", "Task": "zoo.task_spec",
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        if name.isidentifier() and not name.startswith("_") and importlib.util.find_spec(f"zoo.{name}") is not None:
            return importlib.import_module(f"zoo.{name}")  # zoo.spec, as when this file imported it
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # once: the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


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
