"""torch.onnx's table of ATen → ONNX functions, built once per process and opset.

``torch.onnx.export(dynamo=True)`` builds this table (``ONNXRegistry.from_torchlib``)
anew on every call: it re-parses the source of about 500 onnxscript functions,
about 0.7 s, most of a small model's export. zoo exports many models in one
process (``--all``, ``--jobs`` workers, a plugin's test suite), so the first
build is kept and every export gets its own copy of it: a custom op registered
in one export (``custom_translation_table``) never reaches another.

This wraps a private torch API. Where torch no longer has it in this form,
nothing is changed and each export builds its own table.
"""

from __future__ import annotations

import copy
from typing import Any

_installed = False


def reuse_torchlib_registry() -> None:
    """Make ``ONNXRegistry.from_torchlib`` build once per (class, opset) and hand out copies."""
    global _installed
    if _installed:
        return
    _installed = True
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        return
    registry_class = _registration.ONNXRegistry
    original = registry_class.__dict__.get("from_torchlib")
    if not isinstance(original, classmethod) or not hasattr(registry_class(), "functions"):
        return
    build = original.__func__
    built: dict[tuple[type, Any], Any] = {}

    def from_torchlib(cls: type, *args: Any, **kwargs: Any) -> Any:
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in built:
            built[key] = build(cls, *args, **kwargs)
        return _copy(built[key])

    registry_class.from_torchlib = classmethod(from_torchlib)


def _copy(registry: Any) -> Any:
    """A registry whose table can be added to without changing ``registry``'s
    (the entries themselves are never changed once built)."""
    fresh = copy.copy(registry)
    fresh.functions = {target: list(entries) for target, entries in registry.functions.items()}
    return fresh
