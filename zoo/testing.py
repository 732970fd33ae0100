"""Ready-made pytest checks for plugin authors.

Run each of your architectures through what ``zoo check``, ``zoo export`` and
``zoo verify`` do, in your own test suite::

    import pytest
    import zoo.testing

    import my_models


    @pytest.mark.parametrize("name", zoo.testing.architecture_params(my_models))
    def test_architecture(name, tmp_path):
        zoo.testing.check_export_verify(name, tmp_path, plugin=my_models)

The plugin is registered directly (built-in plugins plus yours, no entry
points), so the tests run against your source tree whether or not the package
is installed, and ``ZOO_LOAD_PLUGINS`` does not change what they see.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from zoo.api import loaded_zoo
from zoo.host.manager import Zoo

__all__ = ["Checked", "architecture_params", "check_export_verify", "plugin_zoo"]


def _resolve(plugin: object | str) -> tuple[str, object]:
    if isinstance(plugin, str):
        plugin = importlib.import_module(plugin)
    name = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__name__
    return name.split(".")[0], plugin


def plugin_zoo(plugin: object | str) -> Zoo:
    """The built-in plugins plus ``plugin`` (a module, its import name, or any object
    with ``@zoo.hookimpl`` functions). Fails the test if the plugin reports a problem
    (a misspelled hook, a name that is already taken, a hook that raised)."""
    import pytest

    name, obj = _resolve(plugin)
    zoo = loaded_zoo(entry_points=False, extra=[(name, obj)])  # the Python API's loader (zoo.api)
    if zoo.problems:
        pytest.fail("plugin problems:\n  " + "\n  ".join(zoo.problems), pytrace=False)
    return zoo


def architecture_params(plugin: object | str) -> list[Any]:
    """One ``pytest.param`` per architecture ``plugin`` registers, with the name as its id:
    ``@pytest.mark.parametrize("name", architecture_params(my_models))``."""
    import pytest

    zoo = plugin_zoo(plugin)
    name, _ = _resolve(plugin)
    names = zoo.plugins[name].architectures
    if not names:
        raise ValueError(f"plugin {name!r} registers no architectures")
    return [pytest.param(arch, id=arch) for arch in names]


@dataclass
class Checked:
    """What ``check_export_verify`` ran: the export result (with its check) and the
    re-verification of the written file."""

    path: Path
    export: Any  # zoo.verification.results.ExportResult
    verify: Any  # zoo.verification.results.ExportResult from verify_artifact

    @property
    def check(self) -> Any:
        return self.export.check

    @property
    def sizes(self) -> list[dict[str, int]]:
        """The input sizes the export was verified at."""
        return [case.sizes for case in self.export.verification.cases]


def check_export_verify(
    name: str,
    tmp_path: Path,
    *,
    plugin: object | str,
    exporter: str = "onnx",
    params: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "cpu",
    static: bool = False,
) -> Checked:
    """Build ``name`` and run, failing the test with zoo's own messages:

    1. the checks of ``zoo check`` (forward, output shapes, heads, loss, backward);
    2. ``zoo export --format EXPORTER``: export, then compare the reloaded file
       with PyTorch at several sizes of every dynamic dimension;
    3. that every dynamic dimension was really tried at more than one size;
    4. ``zoo verify FILE``: rebuild the model from the file's own metadata and compare again.
    """
    import pytest

    from zoo.build.model import build_model
    from zoo.build.shapes import dynamic_dims
    from zoo.errors import ZooError
    from zoo.exporting.pipeline import export_model
    from zoo.verification.artifact import verify_artifact

    zoo = plugin_zoo(plugin)
    try:
        arch = zoo.architecture(name)
        fmt = zoo.exporter(exporter)
        built = build_model(arch, params or {}, seed=seed, device=device)
        path = Path(tmp_path) / f"{arch.name}{fmt.suffix}"
        result = export_model(built, fmt, path, static=static, force=True)
    except ZooError as exc:
        pytest.fail(f"{name} ({exporter}): {explained(exc)}", pytrace=False)
    if not result.ok:
        failures = result.verification.failures if result.verification else [result.error]
        pytest.fail(f"{name} ({exporter}): export did not verify:\n  " + "\n  ".join(failures[:10]), pytrace=False)
    if not static:
        for dim_name, dim in dynamic_dims(arch, built.params).items():
            tried = {case.sizes[dim_name] for case in result.verification.cases}
            if len(tried) < 2 and dim.max != dim.min:
                pytest.fail(f"{name}: dynamic dimension {dim_name!r} was only verified at size {tried}", pytrace=False)
    try:
        verified = verify_artifact(zoo, path, device=device)
    except ZooError as exc:
        pytest.fail(f"{name} ({exporter}): zoo verify {path.name}: {explained(exc)}", pytrace=False)
    if not verified.ok:
        pytest.fail(f"{name} ({exporter}): zoo verify {path.name} failed: {verified.error}", pytrace=False)
    return Checked(path, result, verified)


def explained(exc: BaseException) -> str:
    """zoo's one line, with its hint to rerun with ``-v`` (no use under pytest)
    replaced by what ``-v`` shows: the exporter's own exception, in full."""
    import re

    from zoo.host.plugin_calls import root_cause

    text = re.sub(r" \(run with -v+ [^)]*\)", "", str(exc))
    cause = exc.__cause__
    if cause is None:
        return text
    said = f"{type(cause).__name__}: {cause}"
    root = root_cause(cause)
    if root is not cause:
        said += f"\n  caused by {type(root).__name__}: {root}"
    return f"{text}\n  the exporter said: {said}"
