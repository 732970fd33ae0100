"""What a verification and an export produce: per-case results, the verification, the export's result or failure."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from zoo.files.staging import file_record
from zoo.records import Record, json_field, to_json, versions
from zoo.verification.compare import worst


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
        return worst(o["max_abs"] for o in self.outputs.values())


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
    # on failure: the first node whose output differs from its module's (zoo.verification.divergence)
    first_divergence: dict[str, Any] | None = json_field(omit_none=True, default=None)
    fixed: dict[str, int] = dataclasses.field(default_factory=dict)  # dimensions the file takes at one size only
    runner: dict[str, Any] | None = json_field(name="runtime_info", omit_none=True, default=None)  # zoo.RunnerInfo.to_dict()
    # on failure at tolerance: the rerun under the runtime's precise settings (zoo.verification.runtimes.diagnose)
    diagnosis: dict[str, Any] | None = json_field(omit_none=True, default=None)

    @property
    def ok(self) -> bool:
        return all(case.ok for case in self.cases)

    @property
    def failures(self) -> list[str]:
        return [f for case in self.cases for f in case.failures]

    @property
    def max_abs(self) -> float:
        return worst(c.max_abs for c in self.cases)

    @property
    def needed_atol(self) -> float | None:
        """The smallest --atol every case passes at its rtol; None where none does (NaN on one side)."""
        needed = [o.get("needed_atol") for c in self.cases for o in c.outputs.values()]
        return None if not needed or None in needed else max(needed)


class Outcome(Record):
    """What ``zoo export`` and ``zoo verify`` give for one architecture or file:
    its name, whether it passed, and why not; the summary row the CLI prints."""

    def summary_row(self) -> tuple[str, ...]:
        raise NotImplementedError


@dataclasses.dataclass
class ExportResult(Outcome):
    """One record of ``--report``: everything needed to trust or redo an export."""

    built: Any  # zoo.build.model.BuiltModel
    exporter: Any  # zoo.spec.exporter.Exporter
    opset: int | None
    static: bool
    files: list[Path] = dataclasses.field(default_factory=list)
    placed: bool = True  # False: ``files`` are where the export would have gone; nothing was written there
    check: Any = None  # zoo.checking.checks.CheckResult
    verification: Verification | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    error: str | None = None
    export_stats: dict[str, Any] = dataclasses.field(default_factory=dict)  # ExportJob.stats
    variant: dict[str, Any] | None = None  # name, how it was made, criteria, sizes (``zoo.verification.acceptance``)
    variant_verification: Verification | None = None  # the variant against PyTorch, by its criteria
    claim: Any = None  # zoo.verification.claim.ClaimResult: the weight set's claimed metric, re-scored
    verifications: list[Verification] = dataclasses.field(default_factory=list)  # one per runtime (--runtime); the first is ``verification``
    update: dict[str, str] | None = None  # --update: {"status": "up to date" | "exported", "reason": ...}

    @property
    def ok_on_every_runtime(self) -> bool:
        return all(v.ok for v in self.verifications or [self.verification] if v is not None)

    @property
    def up_to_date(self) -> bool:
        return self.ok and self.update is not None and self.update["status"] == "up to date"

    @property
    def ok(self) -> bool:
        return self.error is None and self.verification is not None and self.ok_on_every_runtime

    @property
    def name(self) -> str:
        return self.built.arch.name

    @functools.cached_property
    def file_records(self) -> list[dict[str, Any]]:
        """Path, size and sha256 of each file, hashed once for the summary and the report.
        An unplaced file has no size or hash: whatever is on disk there is not this export."""
        return [file_record(p) if self.placed else {"path": str(p), "written": False} for p in self.files]

    def summary_row(self) -> tuple[str, ...]:
        if self.verification is None:
            return (self.name, "FAILED", "-", "-", self.error or "")
        seconds = sum(self.timings.values())
        shown = str(self.files[0]) if self.ok else (self.error or "")
        status = "up to date (verified)" if self.up_to_date else "ok" if self.ok else "FAILED"
        return (self.name, status, f"{self.verification.max_abs:.2e}", f"{seconds:.1f}s", shown)

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
                **({"runtimes": [runtime_verdict(v) for v in self.verifications]} if len(self.verifications) > 1 else {}),
                "variant": None if self.variant is None else {**self.variant, "verification": self.variant_verification},
                "claim": self.claim,
                "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
                "versions": versions(),
                **({} if self.update is None else {"update": self.update}),
            }
        )


def runtime_verdict(verification: Verification) -> dict[str, Any]:
    """One runtime's line of the verdict table: which runtime, its verdict, its whole verification."""
    return {"runtime": verification.runner, "ok": verification.ok, "max_abs_error": verification.max_abs, "verification": verification}


@dataclasses.dataclass
class FailedExport(Outcome):
    """The record of an export that failed before verification (check, build or export error)."""

    JSON_EXTRA = (("status", "status"),)

    name: str | None = json_field(name="architecture")
    error: str = ""
    file: Path | None = json_field(omit_none=True, default=None)
    exit_code: int = 1
    exception: Exception | None = json_field(skip=True, default=None)
    status = "failed"
    ok = False

    def summary_row(self) -> tuple[str, ...]:
        return (self.name, "FAILED", "-", "-", self.error)


@dataclasses.dataclass
class VerifyResult(ExportResult):
    """``zoo verify``: a file verified again against its rebuilt model (nothing exported)."""


@dataclasses.dataclass
class FailedVerify(FailedExport):
    """A ``zoo verify`` whose file fails its check or does not load (its architecture may be unknown)."""


def summary_row(result: Outcome) -> tuple[str, ...]:
    return result.summary_row()
