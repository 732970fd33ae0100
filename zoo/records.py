"""JSON records: one serializer for every result zoo prints with ``--json`` or writes with ``--report``.

A record is a dataclass deriving from ``Record``. Its fields become keys (renamed
with ``json_field(name=...)``, left out with ``json_field(skip=True)``);
``JSON_EXTRA`` adds computed properties (``ok``). ``to_json`` converts values
recursively, so a record holds records. This module also holds the records of
an export and a verification.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.version import __version__


def json_field(*, name: str | None = None, skip: bool = False, omit_none: bool = False, **kwargs: Any) -> Any:
    """A dataclass field with its JSON key (``name``), left out (``skip``), or left
    out when ``None`` (``omit_none``)."""
    return dataclasses.field(metadata={"json": name, "skip": skip, "omit_none": omit_none}, **kwargs)


class Record:
    """A dataclass that is a JSON record: its fields, renamed or skipped by
    ``json_field``, and the computed properties named in ``JSON_EXTRA``."""

    JSON_EXTRA: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        record = {key: to_json(getattr(self, attr)) for key, attr in self.JSON_EXTRA}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            meta = f.metadata
            item = getattr(self, f.name)
            if meta.get("skip") or (item is None and meta.get("omit_none")):
                continue
            record[meta.get("json") or f.name] = to_json(item)
        return record


def to_json(value: Any) -> Any:
    """``value`` as plain JSON data: dicts, lists, strings, numbers, booleans, ``None``.

    JSON has no NaN or infinity: such floats become the strings ``"NaN"``,
    ``"Infinity"`` and ``"-Infinity"``, so every reader parses the record.
    """
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, bool):
        return value
    for plain, convert in ((str, str.__str__), (int, int.__int__), (float, float.__float__)):
        if isinstance(value, plain):  # the exact type, from the stored value (a str Enum gives its value, not its name):
            return convert(value)  # a subclass (torch's version string, numpy's float64) would pickle with its module
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a numpy or torch scalar
        return to_json(value.item())
    return str(value)


def json_text(data: Any) -> str:
    """Strict JSON text of ``data`` (``to_json``: no NaN or infinity tokens), ending in a newline."""
    return json.dumps(to_json(data), indent=2, allow_nan=False) + "\n"


def versions() -> dict[str, str]:
    """The versions a record was made with."""
    import onnx
    import onnxruntime
    import torch


    return {
        "zoo": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


