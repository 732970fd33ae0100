"""zoo: a plugin-based model zoo that exports PyTorch models to ONNX and proves them right.

The public API for plugin authors is re-exported here (``__all__``); see
docs/plugins.md. ``zoo.check(...)``, ``zoo.export(...)`` and ``zoo.verify(...)``
are the Python API of the commands (``zoo.api``, README "Python API"); the
stages they run live in ``zoo.checking``, ``zoo.exporting`` and ``zoo.verification``.
Everything else in the package is internal.

Heavy libraries (torch, numpy, onnx, onnxruntime) are imported inside the
functions that use them, everywhere in zoo: listing, planning and every refusal
before work load none of them (``tests/test_fast_cli.py``).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import click

    from zoo.api import check, export, verify
    from zoo.errors import ParameterError, UsageError, ZooError
    from zoo.host.hookspecs import hookimpl
    from zoo.host.manager import Zoo, load_zoo
    from zoo.spec.architecture import Architecture, Dim, Input, Output, Tolerance
    from zoo.spec.exporter import Exporter
    from zoo.spec.job import ExportJob
    from zoo.spec.runner import Runner, RunnerInfo
    from zoo.spec.runtime import Runtime, Setting
    from zoo.spec.task import LOG_FLOOR, HeadCheck, Metric, Task, log_floor
    from zoo.spec.weights import EvalSet, MetricClaim, Weights

from zoo.version import __version__

# Imported on first use, so that the zoo program's entry point (zoo.entry) sets its
# signal handlers before click, pluggy and importlib.metadata load.
_PUBLIC = {
    "ParameterError": "zoo.errors", "UsageError": "zoo.errors", "ZooError": "zoo.errors",
    "hookimpl": "zoo.host.hookspecs", "ExportJob": "zoo.spec.job", "Zoo": "zoo.host.manager", "load_zoo": "zoo.host.manager",
    "Architecture": "zoo.spec.architecture", "Dim": "zoo.spec.architecture", "Exporter": "zoo.spec.exporter", "Input": "zoo.spec.architecture",
    "Output": "zoo.spec.architecture", "Tolerance": "zoo.spec.architecture", "Task": "zoo.spec.task", "Metric": "zoo.spec.task", "HeadCheck": "zoo.spec.task", "LOG_FLOOR": "zoo.spec.task", "log_floor": "zoo.spec.task",
    "Weights": "zoo.spec.weights", "MetricClaim": "zoo.spec.weights", "EvalSet": "zoo.spec.weights",
    "check": "zoo.api", "export": "zoo.api", "verify": "zoo.api",
    "Runner": "zoo.spec.runner", "RunnerInfo": "zoo.spec.runner", "Runtime": "zoo.spec.runtime", "Setting": "zoo.spec.runtime",
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        if name.isidentifier() and not name.startswith("_") and importlib.util.find_spec(f"zoo.{name}") is not None:
            return importlib.import_module(f"zoo.{name}")
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

    from zoo.cli.group import get_zoo as cli_get_zoo

    ctx = ctx if ctx is not None else click.get_current_context(silent=True)
    if ctx is None:
        raise RuntimeError("zoo.get_zoo() works inside a zoo command; elsewhere call zoo.load_zoo()")
    return cli_get_zoo(ctx)


__all__ = [
    "check",
    "export",
    "verify",
    "Architecture",
    "Dim",
    "EvalSet",
    "ExportJob",
    "Exporter",
    "HeadCheck",
    "LOG_FLOOR",
    "MetricClaim",
    "Input",
    "Metric",
    "Output",
    "ParameterError",
    "Runner",
    "RunnerInfo",
    "Runtime",
    "Setting",
    "Task",
    "Tolerance",
    "UsageError",
    "Weights",
    "Zoo",
    "ZooError",
    "__version__",
    "get_zoo",
    "hookimpl",
    "load_zoo",
    "log_floor",
]
