"""The Python API: ``zoo.check``, ``zoo.export`` and ``zoo.verify`` for programs and notebooks.

Each does what its command does and returns the same record ``--json`` prints
(a dict); a check or verification that fails is a record with ``"status":
"failed"``, never an exception. What the command reports as a usage error (an
unknown name, a bad parameter, a file that exists without ``force``) raises
``zoo.UsageError``. ``plugins`` loads plugin modules for the call, as ``zoo
--plugin`` does (``.py`` paths or module names, or module objects); ``zoo``
passes a ``Zoo`` of your own instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from zoo.host.manager import Zoo, load_zoo

__all__ = ["check", "export", "verify"]

Plugins = Iterable["str | Path | ModuleType"]


def loaded_zoo(plugins: Plugins = (), zoo: Zoo | None = None, entry_points: bool = True,
               extra: Iterable[tuple[str, object]] = ()) -> Zoo:
    """``zoo`` as given, else the installed plugins (unless not ``entry_points``), then
    ``extra`` (named plugin objects), then ``plugins`` (modules, paths, module names)."""
    if zoo is not None:
        return zoo
    sources: list[str] = []
    modules: list[tuple[str, object]] = list(extra)
    for plugin in plugins:
        if isinstance(plugin, ModuleType):
            modules.append((plugin.__name__.split(".")[0], plugin))
        else:
            sources.append(str(plugin))
    return load_zoo(entry_points=entry_points, extra=modules, plugins=sources)


def _param_texts(params: Mapping[str, Any] | None) -> list[str]:
    # the same parser as -p KEY=VALUE: one set of rules for both
    return [f"{key}={','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}" for key, value in (params or {}).items()]


def check(name: str, *, params: Mapping[str, Any] | None = None, seed: int = 0, device: str = "cpu",
          plugins: Plugins = (), zoo: Zoo | None = None) -> dict[str, Any]:
    """``zoo check NAME``: forward, head, loss and backward checks; the ``--json`` record."""
    from zoo.build.model import build_model
    from zoo.checking.checks import check_model
    from zoo.spec.params import parse_params

    the_zoo = loaded_zoo(plugins, zoo)
    arch = the_zoo.architecture(name)
    overrides = parse_params(_param_texts(params), arch.parameters, arch.name)
    return check_model(build_model(arch, overrides, seed=seed, device=device)).to_dict()


def export(name: str, output: str | Path | None = None, *, params: Mapping[str, Any] | None = None,
           plugins: Plugins = (), zoo: Zoo | None = None, **options: Any) -> dict[str, Any]:
    """``zoo export NAME``: check, export, verify, place the file; the ``--json`` record.

    ``options`` are the command's, by their Python names: ``format_name``,
    ``opset``, ``static``, ``fold_linear``, ``rtol``, ``atol``, ``force``,
    ``seed``, ``device``, ``weights``, ``inputs``, ``quantize``, ``precision``,
    ``timeout``, ``sizes`` (``{"batch": 8}``, as ``--size batch=8``)."""
    from zoo.errors import ZooError
    from zoo.exporting.plan import ExportRequest, plan_export
    from zoo.exporting.workers import run_plan

    the_zoo = loaded_zoo(plugins, zoo)
    sizes = options.pop("sizes", None)
    if sizes:
        options["sizes"] = [f"{dim}={size}" for dim, size in sizes.items()]
    plan = plan_export(the_zoo, ExportRequest(name, params=_param_texts(params), output=output, **options))
    result = run_plan(plan, 1, the_zoo)[0]
    exception = getattr(result, "exception", None)
    if isinstance(exception, ZooError) and exception.exit_code == 2:
        raise exception  # a parameter the build refused: a usage error, as on the command line
    return result.to_dict()


def verify(file: str | Path, *, weights: str | Path | None = None, arch: str | None = None,
           params: Mapping[str, Any] | None = None, plugins: Plugins = (), zoo: Zoo | None = None,
           **options: Any) -> dict[str, Any]:
    """``zoo verify FILE``: rebuild the model from the file's metadata (or ``arch``) and
    compare again; the ``--json`` record. ``options``: ``device``, ``seed``, ``rtol``,
    ``atol``, ``inputs``, ``timeout``."""
    from zoo.verification.artifact import verify_artifact

    the_zoo = loaded_zoo(plugins, zoo)
    result = verify_artifact(the_zoo, Path(file), weights=None if weights is None else Path(weights), arch_name=arch,
                             params=_param_texts(params), **options)
    return result.to_dict()
