"""JSON records: one serializer for every result zoo prints with ``--json`` or writes with ``--report``.

A record is a dataclass deriving from ``Record``. Its fields become keys (renamed
with ``json_field(name=...)``, left out with ``json_field(skip=True)``);
``JSON_EXTRA`` adds computed properties (``ok``). ``to_json`` converts values
recursively, so a record holds records. This module also holds the records of
an export and a verification.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


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
    import json

    return json.dumps(to_json(data), indent=2, allow_nan=False) + "\n"


def versions() -> dict[str, str]:
    """The versions a record was made with."""
    import platform

    import onnx
    import onnxruntime
    import torch

    from zoo import __version__

    return {
        "zoo": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


@dataclasses.dataclass
class CaseResult(Record):
    """One verification case: the sizes of the dynamic dimensions, and per output
    its numbers (``max_abs``, ``max_rel``, ``ok``, agreement, loss)."""

    JSON_EXTRA = (("ok", "ok"),)

    sizes: dict[str, int]
    outputs: dict[str, dict[str, Any]]
    failures: list[str]
    source: str | None = json_field(omit_none=True, default=None)  # the user's file (--inputs), else generated

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def max_abs(self) -> float:
        return max((o["max_abs"] for o in self.outputs.values()), default=0.0)


@dataclasses.dataclass
class Verification(Record):
    """An exported file run against PyTorch on every case."""

    JSON_EXTRA = (("ok", "ok"), ("max_abs_error", "max_abs"))

    runtime: str
    providers: list[str] = json_field(name="execution_providers")
    tolerances: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # output name -> rtol/atol
    cases: list[CaseResult] = dataclasses.field(default_factory=list)
    note: str = ""
    seconds: float = json_field(skip=True, default=0.0)
    # on failure: the first node whose output differs from its module's (zoo.divergence)
    first_divergence: dict[str, Any] | None = json_field(omit_none=True, default=None)

    @property
    def ok(self) -> bool:
        return all(case.ok for case in self.cases)

    @property
    def failures(self) -> list[str]:
        return [f for case in self.cases for f in case.failures]

    @property
    def max_abs(self) -> float:
        return max((c.max_abs for c in self.cases), default=0.0)


@dataclasses.dataclass
class ExportResult(Record):
    """One record of ``--report``: everything needed to trust or redo an export."""

    built: Any  # zoo.model.BuiltModel
    exporter: Any  # zoo.spec.Exporter
    opset: int | None
    static: bool
    files: list[Path] = dataclasses.field(default_factory=list)
    placed: bool = True  # False: ``files`` are where the export would have gone; nothing was written there
    check: Any = None  # zoo.check.CheckResult
    verification: Verification | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    error: str | None = None
    export_stats: dict[str, Any] = dataclasses.field(default_factory=dict)  # ExportJob.stats
    variant: dict[str, Any] | None = None  # name, how it was made, criteria, sizes (``zoo.variants``)
    variant_verification: Verification | None = None  # the variant against PyTorch, by its criteria

    @property
    def ok(self) -> bool:
        return self.error is None and self.verification is not None and self.verification.ok

    @property
    def name(self) -> str:
        return self.built.arch.name

    @functools.cached_property
    def file_records(self) -> list[dict[str, Any]]:
        """Path, size and sha256 of each file, hashed once for the summary and the report.
        An unplaced file has no size or hash: whatever is on disk there is not this export."""
        from zoo.artifacts import file_record

        return [file_record(p) if self.placed else {"path": str(p), "written": False} for p in self.files]

    def to_dict(self) -> dict[str, Any]:
        built = self.built
        return to_json(
            {
                "status": "ok" if self.ok else "failed",
                "error": self.error,
                "architecture": built.arch.name,
                "plugin": built.arch.plugin,
                "params": built.params,
                "seed": built.seed,
                "device": built.device,
                "weights": built.weights,
                "exporter": {"name": self.exporter.name, "plugin": self.exporter.plugin, "opset": self.opset, "static": self.static},
                "files": self.file_records,
                "export_stats": self.export_stats,
                "check": self.check,
                "verification": self.verification,
                "variant": None if self.variant is None else {**self.variant, "verification": self.variant_verification},
                "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
                "versions": versions(),
            }
        )


@dataclasses.dataclass
class FailedExport(Record):
    """The record of an export that failed before verification (check, build or
    export error), or of a ``zoo verify`` whose file fails its check or does not
    load (``file``; its architecture may be unknown)."""

    JSON_EXTRA = (("status", "status"),)

    name: str | None = json_field(name="architecture")
    error: str = ""
    file: Path | None = json_field(omit_none=True, default=None)
    exit_code: int = 1
    exception: Exception | None = json_field(skip=True, default=None)
    status = "failed"
    ok = False
