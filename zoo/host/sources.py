"""``zoo --plugin PATH_OR_MODULE``: a plugin module loaded for one run, without packaging it.

A ``.py`` path (or anything with a ``/``) is imported from that file under its
stem, with its folder on ``sys.path`` so that it can import the files beside it;
anything else is an importable module name. The import itself runs
inside the manager's fault isolation, like an installed plugin's.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from zoo.errors import UsageError


def is_path(source: str) -> bool:
    return source.endswith(".py") or "/" in source or os.sep in source


def absolute(source: str) -> str:
    """The form a worker process (another working folder, maybe) loads again."""
    return str(Path(source).resolve()) if is_path(source) else source


def plugin_loader(source: str) -> tuple[str, Callable[[], ModuleType]]:
    """The plugin's name and the call that imports it; a file that is not there is a usage error."""
    if not is_path(source):
        if not source.replace(".", "").replace("_", "").isalnum():
            raise UsageError(f"--plugin {source!r} is neither a .py file nor a module name")
        return source, lambda: importlib.import_module(source)
    path = Path(source)
    if path.suffix != ".py" or not path.is_file():
        raise UsageError(f"--plugin {source}: no such .py file; give the path of a plugin module or an importable module name")
    name = path.stem
    return name, lambda: _import_file(name, path.resolve())


def _import_file(name: str, path: Path) -> ModuleType:
    module_name = name if name.isidentifier() and name not in sys.modules else f"_zoo_plugin_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look their module up there
    if str(path.parent) not in sys.path:  # its own folder, as pytest does: a plugin file may import the files beside it
        sys.path.append(str(path.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
