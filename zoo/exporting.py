"""The export pipeline: check → export (atomic) → verify against PyTorch → report.

The core owns everything that is the same for every format: where files go and
when they appear, the generated inputs, the comparison and the report. An
``Exporter`` only turns a module into files and loads them back as a runner.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import __version__
from zoo.errors import (
    CheckFailed,
    ExportFailed,
    OutputPathError,
    ParameterError,
    PluginError,
    UsageError,
    VerificationFailed,
    WeightsError,
    ZooError,
    one_line,
    write_error,
)
from zoo.model import BuiltModel
from zoo.shapes import dynamic_dims, verification_cases
from zoo.spec import DEFAULT_TOLERANCES, Architecture, Dim, Exporter, Output, Tolerance

if TYPE_CHECKING:
    from zoo.check import CheckResult

# zoo.check and zoo.tasks (numpy) are imported where used: the CLI imports this
# module for its help texts, and 'zoo list' must stay fast.
log = logging.getLogger(__name__)

META_PREFIX = "zoo."
# OSErrors inside an exporter that are about the disk, not the model (others stay ExportFailed).
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}
VERIFY_SEED_OFFSET = 1000  # verification inputs differ from the export sample

@dataclass
class ExportJob:
    """What an exporter's ``export`` receives."""

    arch: Architecture
    module: Any  # torch.nn.Module, eval mode, on ``device``
    sample: dict[str, Any]  # input name -> tensor, in the architecture's input order
    dynamic: dict[str, dict[int, Dim]]  # input name -> {axis: Dim} that must stay dynamic
    output_names: list[str]  # in the order forward returns them (a dict's own key order), not declared order
    path: Path  # write the main file here (a temporary folder beside the final path)
    opset: int | None
    metadata: dict[str, str]
    device: str
    options: dict[str, Any] = field(default_factory=dict)  # extra options (``fold_linear``)
    # What the exporter did, for the summary and report. An exporter records each
    # option it applied under the option's name; one left unrecorded was not applied.
    stats: dict[str, Any] = field(default_factory=dict)

    def torch_dynamic_shapes(self) -> tuple[dict[int, Any], ...] | None:
        """``dynamic_shapes`` for ``torch.export.export``/``torch.onnx.export``, one
        dict per input in ``sample`` order; ``None`` when every shape is static.
        One ``torch.export.Dim`` per name, so inputs that share ``batch`` share it."""
        if not any(self.dynamic.values()):
            return None
        import torch

        dims: dict[str, Any] = {}
        return tuple(
            {axis: dims.setdefault(d.name, torch.export.Dim(d.name, min=d.min, max=d.max)) for axis, d in self.dynamic[name].items()}
            for name in self.sample
        )


@dataclass
class CaseResult:
    sizes: dict[str, int]
    outputs: dict[str, dict[str, Any]]  # name -> max_abs, max_rel, ok, agreement, loss...
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def max_abs(self) -> float:
        return max((o["max_abs"] for o in self.outputs.values()), default=0.0)


@dataclass
class Verification:
    runtime: str
    providers: list[str]
    tolerances: dict[str, dict[str, float]]  # output name -> rtol/atol
    cases: list[CaseResult]
    note: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(case.ok for case in self.cases)

    @property
    def failures(self) -> list[str]:
        return [f for case in self.cases for f in case.failures]

    @property
    def max_abs(self) -> float:
        return max((c.max_abs for c in self.cases), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "runtime": self.runtime,
            "execution_providers": self.providers,
            "note": self.note,
            "tolerances": self.tolerances,
            "max_abs_error": self.max_abs,
            "cases": [{"sizes": c.sizes, "ok": c.ok, "outputs": c.outputs, "failures": c.failures} for c in self.cases],
        }


@dataclass
class ExportResult:
    """One record of ``--report``: everything needed to trust or redo an export."""

    built: BuiltModel
    exporter: Exporter
    opset: int | None
    static: bool
    files: list[Path] = field(default_factory=list)
    placed: bool = True  # False: ``files`` are where the export would have gone; nothing was written there
    check: CheckResult | None = None
    verification: Verification | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    export_stats: dict[str, Any] = field(default_factory=dict)  # ExportJob.stats

    @property
    def ok(self) -> bool:
        return self.error is None and self.verification is not None and self.verification.ok

    @functools.cached_property
    def file_records(self) -> list[dict[str, Any]]:
        """Path, size and sha256 of each file, hashed once for the summary and the report.
        An unplaced file has no size or hash: whatever is on disk there is not this export."""
        return [file_record(p) if self.placed else {"path": str(p), "written": False} for p in self.files]

    def to_dict(self) -> dict[str, Any]:
        built = self.built
        return {
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
            "check": self.check.to_dict() if self.check else None,
            "verification": self.verification.to_dict() if self.verification else None,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            "versions": versions(),
        }


def versions() -> dict[str, str]:
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


def file_record(path: Path) -> dict[str, Any]:
    from zoo.weights import sha256

    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256(path)} if path.exists() else {"path": str(path)}


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


# The libraries exporters are built on. torch gives its loggers their own stderr
# handlers and stops propagation, so redirecting stderr alone does not quiet them.
NOISY_LOGGERS = ("torch", "onnxscript", "onnx_ir")


class _Relay(logging.Handler):
    """Hands an exporter library's log records to zoo's log at INFO (shown with -v)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record must not break the export
            message = str(record.msg)
        log.info("exporter: %s: %s", record.name, message)


def _noisy(name: str) -> bool:
    return name.split(".", 1)[0] in NOISY_LOGGERS


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """Around every call into an exporter: its log records, warnings and prints go
    to zoo's log at INFO, so a user sees them with -v and never without.

    With -v (the root logger at INFO or lower) nothing is captured: they speak directly.
    """
    if logging.getLogger().getEffectiveLevel() <= logging.INFO:
        yield
        return
    relay = _Relay()
    saved = []
    # Only loggers with handlers of their own, or that stop propagation, need changing:
    # the rest already hand their records up to the top logger, which gets the relay.
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    loggers += [
        logger
        for name, logger in list(logging.root.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and (logger.handlers or not logger.propagate) and _noisy(name)
        and name not in NOISY_LOGGERS
    ]
    for logger in loggers:
        saved.append((logger, logger.propagate, logger.handlers[:]))
        top = logger.name in NOISY_LOGGERS  # every record of these libraries ends at the relay
        logger.handlers = [relay] if top else []
        logger.propagate = not top
    stderr = sys.stderr
    out, err = io.StringIO(), io.StringIO()
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught, redirect_stdout(out), redirect_stderr(err):
            warnings.simplefilter("always")
            yield
    finally:
        for logger, propagate, handlers in saved:
            logger.propagate = propagate
            logger.handlers = handlers
        # torch imported inside (a reader's first use) bound its new handlers to our buffer
        for logger in list(logging.root.manager.loggerDict.values()):
            for handler in getattr(logger, "handlers", []):
                if isinstance(handler, logging.StreamHandler) and handler.stream in (out, err):
                    handler.setStream(stderr)
        for text in (out.getvalue(), err.getvalue()):
            for line in text.splitlines():
                if line.strip():
                    log.info("exporter: %s", line)
        for warning in caught:
            log.info("exporter warning: %s", warning.message)


def metadata_for(built: BuiltModel, exporter: Exporter, opset: int | None, static: bool) -> dict[str, str]:
    """What goes inside the file, so ``zoo verify`` can rebuild the model from it alone."""
    import torch

    meta = {
        "version": __version__,
        "architecture": built.arch.name,
        "plugin": built.arch.plugin,
        "params": json.dumps(built.params, sort_keys=True),
        "seed": str(built.seed),
        "exporter": exporter.name,
        "opset": str(opset),
        "static": "true" if static else "false",
        "torch_version": torch.__version__,
    }
    if built.weights:
        meta["weights_sha256"] = built.weights["sha256"]
    return {META_PREFIX + k: v for k, v in meta.items()}


def check_output_path(path: Path, force: bool) -> None:
    """Refuse paths that cannot end in a good file, before any work is done."""
    parent = path.parent
    if path.is_dir():
        raise OutputPathError(f"output {str(path)!r} is a directory; give a file name such as {str(path / 'model.onnx')!r}")
    if parent.exists() and not parent.is_dir():
        raise OutputPathError(f"output folder {str(parent)!r} is a file, not a folder; choose another path with -o")
    if not parent.is_dir():
        raise OutputPathError(f"output folder {str(parent)!r} does not exist; create it first")
    if path.exists() and not force:
        raise OutputPathError(f"{str(path)!r} already exists; pass --force to overwrite it")
    probe_writable(parent)


def probe_writable(folder: Path, option: str = "-o") -> None:
    """Prove ``folder`` takes a new file by making (and removing) one.

    ``os.access`` is not enough: root passes it on read-only mounts, and so do
    folders of special file systems (``/proc``, ``/sys``) that refuse new files.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=".zoo-write-test.", dir=folder)
    except OSError as exc:
        raise OutputPathError(
            f"{option} folder {str(folder)!r} is not writable ({exc.strerror or type(exc).__name__}); choose another"
        ) from exc
    os.close(fd)
    Path(name).unlink(missing_ok=True)


def check_tolerances(rtol: float | None, atol: float | None) -> None:
    """``--rtol``/``--atol`` must be finite and not negative: refuse before any work."""
    for flag, value in (("--rtol", rtol), ("--atol", atol)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ParameterError(f"{flag} {value}: a tolerance must be a finite number >= 0")


def validate_request(
    exporter: Exporter,
    *,
    opset: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    options: Mapping[str, Any] | None = None,
) -> int | None:
    """Refuse what ``exporter`` cannot do (a usage error), before a model is built
    or checked; returns the opset to export with."""
    check_tolerances(rtol, atol)
    unsupported = [name for name, value in (options or {}).items() if value and name not in exporter.options]
    if unsupported:
        flags = ", ".join("--" + name.replace("_", "-") for name in unsupported)
        raise UsageError(f"the {exporter.name} exporter (plugin {exporter.plugin!r}) does not support {flags}")
    return exporter.resolve_opset(opset)


@contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` (same file system, so moves are atomic
    renames); removed with whatever is left in it."""
    try:
        temp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except OSError as exc:
        raise write_error(exc, final.parent, "create a staging folder in") from exc
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def check_side_files(written: list[Path], main: Path, final: Path, force: bool) -> None:
    """Refuse side files (``NAME.onnx.data``) that would replace existing files, as
    ``check_output_path`` does for the main file; they are only known after export."""
    for side in written:
        if side == main:
            continue
        target = final.parent / side.name
        if target.is_dir():
            raise OutputPathError(f"the export writes {str(target)!r} beside {final.name}, but that is a directory; choose another -o")
        if target.exists() and not force:
            raise OutputPathError(f"the export writes {str(target)!r} beside {final.name}, which already exists; pass --force to overwrite it")


def place(written: list[Path], main: Path, final: Path, force: bool = False) -> list[Path]:
    """Move the files next to ``final``, the main file last: it refers to the
    others by name, so it only appears once they are all there. Side files that
    would replace existing ones without ``force`` stop it before anything moves."""
    check_side_files(written, main, final, force)
    placed = []
    for side in written:
        if side != main:
            target = final.parent / side.name
            os.replace(side, target)
            placed.append(target)
    os.replace(main, final)
    return [final, *placed]


def old_side_files(exporter: Exporter, path: Path) -> list[Path]:
    """The side files of the file ``--force`` is about to replace, as its exporter
    lists them: only regular files in the same folder, never the main file."""
    if exporter.files is None or not path.is_file():
        return []
    try:
        with quiet_exporter():
            listed = [Path(p) for p in exporter.files(path)]
    except Exception:  # noqa: BLE001 - not a file of this format: there is nothing of ours to clean up
        return []
    folder = path.parent.resolve()
    return [p for p in listed if p.parent.resolve() == folder and p.is_file() and p.resolve() != path.resolve()]


def tolerance_for(arch: Architecture, device: str, dtype: str, rtol: float | None, atol: float | None) -> Tolerance | None:
    """The tolerance to compare an output with; ``None`` means exact (integers, bools)."""
    if not dtype.startswith(("float", "bfloat")):
        return None
    base = (
        arch.tolerances.get(device)
        or arch.tolerances.get("*")
        or DEFAULT_TOLERANCES.get((device, dtype))
        or DEFAULT_TOLERANCES.get(("*", dtype))
        or DEFAULT_TOLERANCES[("cuda" if device == "cuda" else "cpu", "float32")]
    )
    return Tolerance(base.rtol if rtol is None else rtol, base.atol if atol is None else atol)


def verify_files(
    built: BuiltModel,
    exporter: Exporter,
    path: Path,
    static: bool,
    rtol: float | None = None,
    atol: float | None = None,
) -> Verification:
    """Run the exported model and PyTorch on fresh inputs at several sizes and compare every output."""
    import numpy as np
    import torch

    arch = built.arch
    start = time.perf_counter()
    try:
        with quiet_exporter():
            runner = exporter.load(path, built.device)
    except Exception as exc:  # noqa: BLE001
        raise VerificationFailed(f"{exporter.name} could not load {path.name}: {type(exc).__name__}: {exc}") from exc
    cases = [verification_cases(arch, built.params)[0]] if static else verification_cases(arch, built.params)
    tolerances: dict[str, dict[str, float]] = {}
    results = []
    for index, sizes in enumerate(cases):
        seed = built.seed + VERIFY_SEED_OFFSET + index
        inputs = built.sample_inputs(sizes, seed=seed)
        reference = built.forward(inputs)
        feed = {name: as_numpy(t) for name, t in inputs.items()}
        try:
            with quiet_exporter():
                got = runner(feed)
        except Exception as exc:  # noqa: BLE001 - a runtime that rejects a shape is a failed case
            results.append(CaseResult(dict(sizes), {}, [f"{_case(sizes)}: {exporter.name} runtime raised {one_line(exc)}"]))
            continue
        generator = torch.Generator().manual_seed(seed)
        outputs: dict[str, dict[str, Any]] = {}
        failures: list[str] = []
        for spec in arch.outputs:
            ref = reference[spec.name].detach().cpu()
            dtype = str(ref.dtype).removeprefix("torch.")
            tol = tolerance_for(arch, built.device, dtype, rtol, atol)
            tolerances[spec.name] = {"rtol": tol.rtol, "atol": tol.atol} if tol else {"rtol": 0.0, "atol": 0.0}
            if spec.name not in got:
                failures.append(f"{_case(sizes)}: output {spec.name!r} is missing from the exported model")
                continue
            stats, problems = compare_output(spec, ref, np.asarray(got[spec.name]), tol, generator)
            failures.extend(f"{_case(sizes)}: {problem}" for problem in problems)
            if stats is not None:
                outputs[spec.name] = stats
        results.append(CaseResult(dict(sizes), outputs, failures))
    return Verification(
        runtime=getattr(runner, "description", exporter.name),
        providers=list(getattr(runner, "providers", [])),
        tolerances=tolerances,
        cases=results,
        note=getattr(runner, "note", ""),
        seconds=time.perf_counter() - start,
    )


def compare_output(
    spec: Output, ref: Any, cand: Any, tol: Tolerance | None, generator: Any
) -> tuple[dict[str, Any] | None, list[str]]:
    """One output of one case: values, decisions (argmax/threshold) and the loss.
    Returns the stats for the report (``None`` if the shapes differ) and what failed."""
    from zoo.tasks import agreement, closed_form_loss, loss_slack, losses_agree, make_target

    dtype = str(ref.dtype).removeprefix("torch.")
    ref_np = as_numpy(ref)
    if cand.shape != ref_np.shape:
        return None, [f"output {spec.name!r} has shape {list(cand.shape)}, PyTorch gives {list(ref_np.shape)}"]
    failures = []
    rtol, atol = (tol.rtol, tol.atol) if tol else (0.0, 0.0)
    stats = compare(ref_np, cand, tol)
    if not stats["ok"]:
        failures.append(
            f"output {spec.name!r} differs from PyTorch: max abs error {stats['max_abs']:.3g}, "
            f"max rel error {stats['max_rel']:.3g} (rtol {rtol:g}, atol {atol:g})"
        )
    agreed = agreement(spec, ref_np, cand, rtol, atol)
    if agreed is not None:
        stats[agreed[0] + "_agreement"] = agreed[1]
        if agreed[1] < 1.0:
            failures.append(f"output {spec.name!r}: {agreed[0]} agrees on only {agreed[1]:.1%} of rows")
    if spec.task is not None and tol is not None:
        target = make_target(spec, ref, generator).double().numpy()  # numpy has no bfloat16
        loss_ref = closed_form_loss(spec, ref_np, target, dtype)
        loss_got = closed_form_loss(spec, cand, target, dtype)
        stats["loss"] = {"torch": loss_ref, "exported": loss_got}
        # rounding in the loss itself, plus how far outputs within tolerance can move it
        slack = loss_slack(spec, ref_np, target, rtol, atol, dtype)
        if not losses_agree(loss_ref, loss_got, 10 * rtol, 10 * atol + slack):
            failures.append(f"loss on {spec.name!r} is {loss_got:.6g} exported vs {loss_ref:.6g} in PyTorch")
    return stats, failures


def as_numpy(tensor: Any) -> Any:
    """A tensor as a numpy array; bfloat16 as float32 (exact), numpy having no bfloat16."""
    import torch

    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


def compare(reference: Any, candidate: Any, tol: Tolerance | None) -> dict[str, Any]:
    import numpy as np

    if tol is None:
        equal = bool(np.array_equal(reference, candidate))
        diff = 0.0 if equal else float(np.abs(reference.astype(np.float64) - candidate.astype(np.float64)).max())
        return {"max_abs": diff, "max_rel": diff, "ok": equal}
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    if ref.size == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "ok": True}
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is handled just below
        finite = np.isfinite(ref) == np.isfinite(cand)
        diff = np.abs(ref - cand)
        diff = np.where(np.isfinite(ref) & np.isfinite(cand), diff, np.where(ref == cand, 0.0, np.inf))
        max_abs = float(diff.max())
        max_rel = float((diff / np.maximum(np.abs(ref), np.finfo(np.float64).tiny)).max())
        ok = bool(finite.all() and (diff <= tol.atol + tol.rtol * np.abs(ref)).all())
    return {"max_abs": max_abs, "max_rel": max_rel, "ok": ok}


def _case(sizes: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items()) or "static shapes"


def root_cause(exc: BaseException) -> BaseException:
    """The innermost explicit cause: exporters wrap the real reason in their own errors."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def reason(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of the root cause: exporters put their gist first and
    pages of context after it."""
    return one_line(root_cause(exc), limit, first_line=True)


def returned_output_names(built: BuiltModel, sample: Mapping[str, Any]) -> list[str]:
    """Output names in the order ``forward`` returns them. A model may return a dict
    in any key order; exporters that flatten outputs (ONNX) label them by position,
    so they must be given this order, not the declared one."""
    import torch

    with torch.no_grad():
        result = built.module(*sample.values())
    if isinstance(result, Mapping):
        return list(result)
    return [o.name for o in built.arch.outputs]


def export_model(
    built: BuiltModel,
    exporter: Exporter,
    output: Path,
    *,
    opset: int | None = None,
    static: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    force: bool = False,
    options: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Check, export into a staging folder, verify there, then move the files into
    place. Raises on a failed check or export; a failed verification places
    nothing and returns a result whose ``ok`` is False."""
    from zoo.check import check_model

    opset = validate_request(exporter, opset=opset, rtol=rtol, atol=atol, options=options)
    result = ExportResult(built, exporter, opset, static)
    check_output_path(output, force)
    with _timed(result.timings, "check"):
        result.check = check_model(built)
    if not result.check.ok:
        raise CheckFailed(f"{built.arch.name}: " + "; ".join(result.check.failures))
    arch = built.arch
    sample = built.sample_inputs()
    dims = {} if static else dynamic_dims(arch, built.params)
    dynamic = {
        inp.name: {axis: dims[d.name] for axis, d in enumerate(inp.dims) if isinstance(d, Dim) and d.name in dims}
        for inp in arch.inputs
    }
    options = dict(options or {})
    metadata = metadata_for(built, exporter, opset, static)
    if options:  # provenance: a folded graph says so
        metadata[META_PREFIX + "options"] = json.dumps(options, sort_keys=True)
    job = ExportJob(
        arch=arch,
        module=built.module,
        sample=sample,
        dynamic=dynamic,
        output_names=returned_output_names(built, sample),
        path=output,
        opset=opset,
        metadata=metadata,
        device=built.device,
        options=options,
    )
    with staging(output) as temp:
        job.path = temp / output.name
        with _timed(result.timings, "export"):
            try:
                with quiet_exporter():
                    written = [Path(p) for p in (exporter.export(job) or [job.path])]
            except ZooError:
                raise
            except Exception as exc:  # noqa: BLE001
                cause = root_cause(exc)
                if isinstance(cause, OSError) and cause.errno in DISK_ERRNOS:
                    raise write_error(cause, output) from exc  # disk full, quota...: not the exporter's fault
                # -v shows the exporter's own words, -vv its traceback too.
                log.info("exporter %s failed on %s: %s", exporter.name, arch.name, exc)
                log.debug("exporter traceback", exc_info=True)
                raise ExportFailed(
                    f"{exporter.name} could not export {arch.name}: {reason(exc, 200)} (run with -v for the exporter's own reason)"
                ) from exc
        # A format that declares an option but records nothing did not apply it:
        # the file would claim (in zoo.options) what was not done.
        unapplied = [name for name, value in options.items() if value and name not in job.stats]
        if unapplied:
            raise PluginError(
                f"the {exporter.name} exporter (plugin {exporter.plugin!r}) declares {', '.join(unapplied)} "
                "but did not apply it (nothing recorded in job.stats)"
            )
        result.export_stats = job.stats
        check_side_files(written, job.path, output, force)  # fail before verifying; place() checks again
        with _timed(result.timings, "verify"):
            result.verification = verify_files(built, exporter, job.path, static, rtol, atol)
        if result.verification.ok:
            stale = old_side_files(exporter, output) if force else []
            try:
                result.files = place(written, job.path, output, force)
            except OSError as exc:
                for side in written:  # a side file already moved would be an orphan
                    if side != job.path:
                        (output.parent / side.name).unlink(missing_ok=True)
                raise write_error(exc, output, "move the export into") from exc
            keep = {p.resolve() for p in result.files}
            if built.weights:  # the old file may name any file in the folder as its data
                keep.add(Path(built.weights["path"]).resolve())
            for old in stale:  # the replaced file's NAME.onnx.data, which nothing refers to now
                if old.resolve() not in keep:
                    old.unlink(missing_ok=True)
        else:  # nothing is placed: a file that computes the wrong thing must not look good
            result.files = [output.parent / p.name for p in written]
            result.placed = False
            result.error = "verification failed: " + result.verification.failures[0]
    return result


def read_artifact(exporters: Any, path: Path) -> tuple[Exporter, dict[str, str]]:
    """The exporter that wrote ``path`` and the zoo metadata in it.

    The suffix only says which readers to ask first: two formats may share a
    suffix, and ``-o`` may give any name (docs/plugins.md). The first reader that
    parses the file decides; the exporter named in its metadata verifies it.
    """
    matching = [e for e in exporters if path.name.endswith(e.suffix)]
    failures: list[tuple[Exporter, Exception]] = []
    for exporter in [*matching, *(e for e in exporters if e not in matching)]:
        try:
            with quiet_exporter():  # a reader that does not know the file may complain loudly (torch.export.load)
                raw = exporter.read_metadata(path)
        except Exception as exc:  # noqa: BLE001 - not this format: try the next reader
            failures.append((exporter, exc))
            continue
        meta = {k[len(META_PREFIX) :]: v for k, v in dict(raw or {}).items() if k.startswith(META_PREFIX)}
        if "architecture" not in meta:  # a real file of this format, not one zoo wrote: another reader will not change that
            raise UsageError(f"{str(path)!r} has no zoo metadata; only files written by 'zoo export' can be verified")
        name = meta.get("exporter", exporter.name)
        writer = exporters.get(name)
        if writer is None:
            raise UsageError(
                f"{path.name} was written by the {name!r} exporter, which is not installed; "
                "install the plugin that provides it (see 'zoo plugins')"
            )
        return writer, meta
    if matching:  # the suffix says what it should be: that reader's complaint is the useful one
        exporter, exc = failures[0]
        raise UsageError(f"{str(path)!r} is not a readable {exporter.name} file: {one_line(exc, 150)}") from exc
    tried = ", ".join(f"{e.name} ({e.suffix})" for e in exporters)
    raise UsageError(f"{str(path)!r} is not a file any installed exporter reads (tried {tried}); give a file 'zoo export' wrote")


def verify_artifact(
    zoo: Any,
    path: Path,
    *,
    weights: Path | None = None,
    device: str = "cpu",
    rtol: float | None = None,
    atol: float | None = None,
) -> ExportResult:
    """Rebuild the model named in ``path``'s own metadata and verify the file against it."""
    from zoo.model import MAX_SEED, build_model
    from zoo.weights import sha256

    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise UsageError(f"{str(path)!r} {what}; give the file 'zoo export' wrote")
    check_tolerances(rtol, atol)
    if weights is not None and not weights.is_file():
        raise WeightsError(f"weights file {str(weights)!r} does not exist")
    exporter, meta = read_artifact(zoo.exporters, path)
    arch = zoo.architectures.get(meta["architecture"])
    if arch is None:
        plugin = meta.get("plugin", "?")
        raise UsageError(
            f"{path.name} was exported from {meta['architecture']!r} of plugin {plugin!r}, which is not installed; "
            "install that plugin (see 'zoo plugins')"
        )
    expected = meta.get("weights_sha256")
    if expected and weights is None:
        raise UsageError(f"{path.name} was exported with trained weights (sha256 {expected[:12]}…); pass them with --weights FILE")
    if weights is not None and not expected:  # else W would be verified, and a mismatch blamed on the export
        raise UsageError(
            f"{path.name} was exported without weights (seeded initial weights, seed {meta.get('seed', '?')}); leave --weights out"
        )
    if weights is not None and expected and sha256(weights) != expected:
        raise UsageError(f"--weights {weights.name} is not the file {path.name} was exported with (sha256 {expected[:12]}…)")
    try:
        params = json.loads(meta.get("params", "{}"))
        seed = int(meta.get("seed", "0"))
    except ValueError as exc:
        raise UsageError(f"{path.name} has damaged zoo metadata: {exc}") from exc
    # What build_model would blame on --param or --seed is the file's fault here.
    if not isinstance(params, dict):
        raise UsageError(f"{path.name} has damaged zoo metadata: zoo.params is {meta['params'][:60]!r}, not a JSON object")
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"{path.name} has damaged zoo metadata: zoo.seed is {seed}, not a seed zoo export writes (0 to {MAX_SEED})")
    built = build_model(arch, params, seed=seed, device=device, weights=weights)
    static = meta.get("static") == "true"
    opset = int(meta["opset"]) if meta.get("opset", "None").isdigit() else None
    result = ExportResult(built, exporter, opset, static, files=[path])
    with _timed(result.timings, "verify"):
        check_artifact(exporter, path)
        result.files = [path, *side_files(exporter, path)]
        result.verification = verify_files(built, exporter, path, static, rtol, atol)
    if not result.verification.ok:
        result.error = "verification failed: " + result.verification.failures[0]
    return result


def check_artifact(exporter: Exporter, path: Path) -> None:
    """The exporter's own structural check of a file (``onnx.checker``), if it has one."""
    if exporter.check is None:
        return
    try:
        with quiet_exporter():
            exporter.check(path)
    except Exception as exc:  # noqa: BLE001
        raise VerificationFailed(f"{path.name} fails the {exporter.name} check: {reason(exc)}") from exc


def side_files(exporter: Exporter, path: Path) -> list[Path]:
    """The files beside ``path`` that belong to it, as the exporter says."""
    if exporter.files is None:
        return []
    try:
        with quiet_exporter():
            return [Path(p) for p in exporter.files(path)]
    except Exception as exc:  # noqa: BLE001
        raise VerificationFailed(f"{exporter.name} could not list the files of {path.name}: {reason(exc)}") from exc


def export_many(
    archs: list[Architecture],
    exporter: Exporter,
    folder: Path,
    *,
    seed: int = 0,
    device: str = "cpu",
    on_start: Any = None,
    **settings: Any,
) -> list[ExportResult | FailedExport]:
    """Export each architecture with its defaults to ``folder/NAME<suffix>``; a
    failure is recorded and the rest still run. ``settings`` go to ``export_model``."""
    from zoo.model import build_model

    results: list[ExportResult | FailedExport] = []
    for index, arch in enumerate(archs):
        if on_start is not None:
            on_start(index, arch)
        try:
            built = build_model(arch, seed=seed, device=device)
            results.append(export_model(built, exporter, folder / f"{arch.name}{exporter.suffix}", **settings))
        except ZooError as exc:
            results.append(FailedExport(arch.name, str(exc)))
        except Exception as exc:  # noqa: BLE001 - a plugin's bug must not stop the other architectures
            log.debug("exporting %s raised", arch.name, exc_info=True)
            results.append(
                FailedExport(arch.name, f"{arch.name} (plugin {arch.plugin!r}) raised {reason(exc)} (run with -vv for the traceback)")
            )
    return results


class FailedExport:
    """The record of an export that failed before verification (check, build or
    export error), or of a ``zoo verify`` whose file fails its check or does not
    load (``file``; its architecture may be unknown)."""

    def __init__(self, name: str | None, error: str, file: Path | None = None) -> None:
        self.name, self.error, self.file, self.ok = name, error, file, False

    def to_dict(self) -> dict[str, Any]:
        record = {"status": "failed", "architecture": self.name, "error": self.error}
        return record if self.file is None else {**record, "file": str(self.file)}


def check_report_path(path: Path, protected: Iterable[Path | None] = ()) -> None:
    """Refuse a report path that cannot be written, or that is one of the
    ``protected`` files the command reads or writes (the model, its weights, the
    file being verified): the JSON would replace it, and the command still exit 0."""
    if path.is_dir():
        raise OutputPathError(f"--report {str(path)!r} is a directory; give a file name")
    if not path.parent.is_dir():
        raise OutputPathError(f"report folder {str(path.parent)!r} does not exist; create it first")
    resolved = path.resolve()
    for other in protected:
        if other is not None and other.resolve() == resolved:
            raise OutputPathError(
                f"--report {str(path)!r} would overwrite {str(other)!r}, a file this command reads or writes; give the report its own name"
            )
    probe_writable(path.parent, "--report")


def write_report(path: Path, data: Any, protected: Iterable[Path | None] = ()) -> None:
    """Write a JSON report atomically; never over a ``protected`` file (see ``check_report_path``)."""
    check_report_path(path, protected)
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise write_error(exc, path) from exc
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp makes 0600; a report is an ordinary file
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, default=str)
            handle.write("\n")
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise write_error(exc, path) from exc
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
