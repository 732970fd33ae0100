"""The export pipeline, top to bottom: build → check → export → verify → place.

``export_targets`` carries out an ``ExportPlan`` (one target or ``--all``);
``export_model`` exports one already-built model; ``verify_artifact`` rebuilds
the model a file names in its metadata and verifies the file again. The
modules it calls each own one step: ``zoo.checking.checks``, ``zoo.spec.job``,
``zoo.host.plugin_calls``, ``zoo.verification.run``, ``zoo.files.staging``, ``zoo.records``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from zoo import interrupts
from zoo.build.model import BuiltModel, build_model, release_weights
from zoo.build.shapes import dynamic_dims
from zoo.build.sizing import weight_bytes
from zoo.build.trained import WeightsChoice, name_weights
from zoo.errors import CheckFailed, ExportFailed, PluginError, VerificationFailed, ZooError
from zoo.exporting.plan import ExportPlan, Target, resolve_format
from zoo.exporting.update import expected_metadata, stale_reason
from zoo.files.paths import check_output_path
from zoo.files.staging import OldSideFiles, check_side_files, old_side_files, place, side_files, staging
from zoo.host.plugin_calls import call_exporter, code_location, reason
from zoo.progress import stage, timed
from zoo.spec.architecture import Dim
from zoo.spec.exporter import Calibration, Exporter
from zoo.spec.job import META_PREFIX, ExportJob, provenance
from zoo.verification.acceptance import Acceptance
from zoo.verification.artifact import check_artifact
from zoo.verification.claim import score_claim
from zoo.verification.divergence import failure_text
from zoo.verification.results import ExportResult, FailedExport, Verification
from zoo.verification.run import verify_on_runtimes

log = logging.getLogger(__name__)
CALIBRATION_SEED = 2000  # static quantization calibrates on inputs no verification case uses
CALIBRATION_BATCHES = 8
CALIBRATION_BATCH_ROWS = 256  # the user's --calibration rows, fed to the calibrator this many at a time


def export_targets(plan: ExportPlan, on_start: Callable[[int, Target], None] | None = None) -> list[ExportResult | FailedExport]:
    """Export every target of ``plan``; a failure is recorded (with its exit code)
    and the rest still run."""
    results: list[ExportResult | FailedExport] = []
    for index, target in enumerate(plan.targets):
        if on_start is not None:
            on_start(index, target)
        arch = target.arch
        try:
            if target.refused is not None:  # found when the plan was made (an existing file without --force)
                raise target.refused
            built = build_model(arch, plan.overrides, seed=plan.seed, device=plan.device, weights=plan.weights)
            built.sizes = {k: v for k, v in plan.sizes.items() if k in dynamic_dims(arch, built.params)}
            name_weights(built, WeightsChoice(plan.weights, plan.weights_entry) if plan.weights else None)
            if target.recorded is not None:
                results.append(export_or_keep(plan, built, target))
            else:
                results.append(export_built(plan, built, target.path, owned=True))
                if plan.update:
                    results[-1].update = {"status": "exported", "reason": "no file was there"}
        except ZooError as exc:
            text = str(exc)
            if isinstance(exc, PluginError) and text.startswith("task '"):  # a task's function failed on this model's outputs
                text = f"{arch.name} (plugin {arch.plugin!r}): {text}"
            results.append(FailedExport(arch.name, text, exit_code=exc.exit_code, exception=exc))
        except BaseException as exc:  # noqa: BLE001 - a plugin's bug (even sys.exit()) must not stop the other architectures
            if isinstance(exc, KeyboardInterrupt):  # the user's Ctrl-C stops everything
                raise
            log.debug("exporting %s raised", arch.name, exc_info=True)
            results.append(
                FailedExport(arch.name, f"{arch.name} (plugin {arch.plugin!r}) raised {reason(exc)} (run with -vv for the traceback)")
            )
    return results


def export_or_keep(plan: ExportPlan, built: BuiltModel, target: Target) -> ExportResult:
    """``--update`` of a file zoo wrote: kept when it records what this export would
    and still verifies against ``built`` (a verification, no export); otherwise
    exported again, replacing it (the ``--force`` rules)."""
    assert target.recorded is not None
    expected = expected_metadata(built, plan.exporter, plan.opset, plan.static, plan.options, plan.variant, plan.acceptance)
    reason = stale_reason(target.recorded, expected)
    if reason is None:
        kept = verify_kept(plan, built, target.path)
        if kept.ok:
            return kept
        failures = kept.verification.failures if kept.verification is not None else []
        reason = "it no longer verifies against the model: " + (failures[0] if failures else kept.error or "verification failed")
    result = export_built(replace(plan, force=True), built, target.path, owned=True)
    result.update = {"status": "exported", "reason": reason}
    return result


def verify_kept(plan: ExportPlan, built: BuiltModel, path: Path) -> ExportResult:
    """The existing file ``path`` verified against ``built``, as an up-to-date result."""
    result = ExportResult(built, plan.exporter, plan.opset, plan.static, files=[path])
    with timed(result.timings, "verify"):
        try:
            check_artifact(plan.exporter, path)
            result.files = [path, *side_files(plan.exporter, path, error=VerificationFailed)]
            result.verifications = verify_on_runtimes(
                built, plan.exporter, path, plan.runtimes, plan.static, plan.rtol, plan.atol,
                acceptance=plan.acceptance if plan.variant else None, extra=plan.inputs, timeout=plan.timeout,
            )
            result.verification = result.verifications[0]
        except VerificationFailed as exc:
            result.error = str(exc)
            return result
    if not result.ok_on_every_runtime:
        result.error = failure_text(next(v for v in result.verifications if not v.ok), len(result.verifications) > 1)
    result.update = {"status": "up to date", "reason": "verified"}
    return result


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
    options: dict[str, Any] | None = None,
    runtimes: Sequence[Any] = (),
) -> ExportResult:
    """Export an already-built model to ``output`` (the library's entry point; the
    CLI goes through ``plan_export`` and ``export_targets``), proven on ``runtimes``
    (``zoo.verification.runtimes.RuntimeChoice``; none: the format's own runner)."""
    options = dict(options or {})
    opset = resolve_format(exporter, opset=opset, rtol=rtol, atol=atol, options=options)
    plan = ExportPlan(
        exporter=exporter, targets=[Target(built.arch, output)], opset=opset, static=static, rtol=rtol, atol=atol,
        options=options, force=force, seed=built.seed, device=built.device, runtimes=list(runtimes),
    )
    check_output_path(output, force)
    return export_built(plan, built, output)


def export_built(plan: ExportPlan, built: BuiltModel, output: Path, owned: bool = False) -> ExportResult:
    """Check, export into a staging folder, check the file, verify it there, then
    move the files into place. Raises on a failed check or export; a failed
    verification places nothing and returns a result whose ``ok`` is False.
    ``owned``: the pipeline built ``built`` and nothing uses it afterwards, so a
    large model's weights are freed once PyTorch's reference outputs exist."""
    from zoo.checking.checks import check_model

    exporter = plan.exporter
    result = ExportResult(built, exporter, plan.opset, plan.static)
    with timed(result.timings, "check"):
        result.check = check_model(built)
    if not result.check.ok:
        raise CheckFailed(f"{built.arch.name}: " + "; ".join(result.check.failures))
    with staging(output) as temp:
        job = make_job(plan, built, result.check, temp / output.name)
        with timed(result.timings, "export"), built.returning_declared_outputs():
            written = run_exporter(exporter, job, output)
        result.export_stats = job.stats
        with timed(result.timings, "verify"):
            result.verifications = verify_on_runtimes(
                built, exporter, job.path, plan.runtimes, plan.static, plan.rtol, plan.atol, extra=plan.inputs, timeout=plan.timeout,
                before_load=before_load(plan, built, written, job.path, output, owned),
            )
            result.verification = result.verifications[0]
        if not result.ok_on_every_runtime:  # nothing is placed: a file that computes the wrong thing must not look good
            result.files = [output.parent / p.name for p in written]
            result.placed = False
            result.error = failure_text(next(v for v in result.verifications if not v.ok), len(result.verifications) > 1)
            return result
        main = job.path
        if plan.variant is not None:  # built on the verified float32 file, placed instead of it once accepted
            written = make_variant(plan, built, job, temp / "variant", output, result)
            main = written[0]
            refused = result.variant_verification.failures[:1] or variant_speed(plan, built, job.path, main, result)
            if refused:
                result.files = [output.parent / p.name for p in written]
                result.placed = False
                result.error = f"the {plan.variant} variant is not accepted: " + refused[0]
                return result
        if plan.eval_path is not None:  # the weight set's claimed metric, on every runtime, before anything is placed
            files = {exporter.name: job.path, **({plan.variant: main} if plan.variant else {})}
            with timed(result.timings, "score"):
                result.claim = score_claim(built, plan.weights_entry, plan.eval_path, exporter, files, static_batch(plan, job))
            if not result.claim.ok:
                result.files = [output.parent / p.name for p in written]
                result.placed = False
                result.error = result.claim.failures[-1]
                return result
        old = old_side_files(exporter, output) if plan.force else OldSideFiles()
        weights = [Path(built.weights["path"])] if built.weights else []  # the old file may name any file as its data
        interrupts.stop_if_interrupted()  # one a library swallowed stops the export before anything is placed
        with interrupts.signals_deferred():  # all the files or none: a signal now is raised once they are placed
            result.files = place(written, main, output, plan.force, old=old, keep=weights)
    return result


def static_batch(plan: ExportPlan, job: ExportJob) -> int | None:
    """The one batch size a ``--static`` file takes; ``None`` when it is dynamic."""
    if not plan.static:
        return None
    return int(next(iter(job.sample.values())).shape[0])


RELEASE_BYTES = 256 * 2**20  # below this the second copy costs little, and a failure keeps its first divergence


def before_load(plan: ExportPlan, built: BuiltModel, written: list[Path], path: Path, output: Path, owned: bool) -> Callable[[], bool]:
    """What ``verify_files`` calls once PyTorch's outputs exist: frees a large
    model's weights (when the pipeline owns it and no variant still needs it),
    then checks the files, which reads them, before the runtime loads them."""

    def run() -> bool:
        # not with a variant, a second runtime or a claim to score to come: they need PyTorch's weights again
        release = (
            owned and plan.variant is None and len(plan.runtimes) <= 1 and plan.eval_path is None and weight_bytes(built.module) >= RELEASE_BYTES
        )
        if release:
            release_weights(built)  # in place: the job's module is the same object
        check_side_files(written, path, output, plan.force)  # place() checks again
        stage(f"verify: {plan.exporter.name} check of {path.name}")
        check_artifact(plan.exporter, path)
        return release

    return run


def make_variant(plan: ExportPlan, built: BuiltModel, job: ExportJob, folder: Path, output: Path, result: ExportResult) -> list[Path]:
    """The variant of the verified file ``job.path``, checked and verified by the plan's
    acceptance criteria on every case, the user's too (in ``result``); the files it
    wrote, the main file first."""
    with timed(result.timings, plan.variant):
        target, result.variant, result.variant_verification = variant_of(
            plan.exporter, built, job.path, job.metadata, plan.variant, plan.acceptance, folder, output, plan.static,
            extra=plan.inputs, calibration=calibration_of(built, plan.calibration, plan.static), runtimes=plan.runtimes,
        )
    return [target]


def variant_speed(plan: ExportPlan, built: BuiltModel, source: Path, variant: Path, result: ExportResult) -> list[str]:
    """Time the accepted variant against the float32 file (``result.variant["speed"]``);
    the refusal under ``--min-speedup``, else warnings where it is slower or larger."""
    from zoo.bench.speed import speed_verdict, time_against

    with timed(result.timings, "timing"):
        result.variant["speed"] = time_against(plan.exporter, built, source, variant, result.variant_verification)
    refused, warnings = speed_verdict(result.variant, plan.variant, plan.min_speedup)
    result.variant["warnings"] = warnings
    return refused


def calibration_of(built: BuiltModel, cases: list[Any], static: bool) -> Calibration:
    """The user's ``--calibration`` rows in batches, else zoo's own inputs (unlike any verification case)."""
    import numpy as np

    if cases:
        feeds = [feed for case in cases for feed in row_batches(case.inputs, None if static else CALIBRATION_BATCH_ROWS)]
        source = ", ".join(case.source for case in cases)
        return Calibration(feeds, source, sum(case.rows for case in cases), representative=True)
    feeds = [
        {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in built.sample_inputs(seed=built.seed + CALIBRATION_SEED + i).items()}
        for i in range(CALIBRATION_BATCHES)
    ]
    return Calibration(feeds, "generated inputs", sum(len(next(iter(f.values()))) for f in feeds if f))


def row_batches(inputs: dict[str, Any], rows: int | None) -> list[dict[str, Any]]:
    """``inputs`` split along the batch axis into batches of at most ``rows`` (``None``: one batch)."""
    total = len(next(iter(inputs.values())))
    step = rows or max(total, 1)
    return [{name: array[start : start + step] for name, array in inputs.items()} for start in range(0, total, step)]


def variant_of(
    exporter: Exporter, built: BuiltModel, source: Path, metadata: dict[str, str], variant: str, acceptance: Acceptance,
    folder: Path, disk_path: Path, static: bool = False, extra: list[Any] | None = None, calibration: Calibration | None = None,
    runtimes: Sequence[Any] = (),
) -> tuple[Path, dict[str, Any], Verification]:
    """Make ``variant`` of the verified file ``source`` in ``folder`` (same file name),
    check it, and verify it against ``built`` by ``acceptance`` on every case (``extra``:
    the user's): the file, what was made (name, method, criteria, sizes, calibration)
    and the verification."""
    folder.mkdir()
    target = folder / source.name
    metadata = {
        **metadata,
        META_PREFIX + "variant": variant,
        META_PREFIX + "acceptance": json.dumps(acceptance.to_dict(), sort_keys=True),
    }
    calibration = calibration or calibration_of(built, [], static)
    how = call_exporter(
        exporter.make_variant, source, target, variant, metadata, calibration, error=ExportFailed,
        what=f"{exporter.name} could not make the {variant} variant of {built.arch.name}", disk_path=disk_path,
    )
    check_artifact(exporter, target)
    # judged on every runtime, on every case (the user's too): the first one that does not accept it is the verdict
    verifications = verify_on_runtimes(built, exporter, target, runtimes, static, acceptance=acceptance, extra=list(extra or ()))
    verification = next((v for v in verifications if not v.ok), verifications[0])
    made = {"name": variant, **(how or {}), "criteria": acceptance, "float32_bytes": source.stat().st_size, "bytes": target.stat().st_size}
    if made.get("method") == "static":
        made["calibration"] = {
            "source": calibration.source, "rows": calibration.rows, "batches": len(calibration.feeds),
            "representative": calibration.representative, "text": calibration.text(),
        }
    if len(verifications) > 1:  # the verdict of each runtime
        made["runtimes"] = [{"runtime": v.runner, "accepted": v.ok, "failure": v.failures[0] if v.failures else None} for v in verifications]
    return target, made, verification


def make_job(plan: ExportPlan, built: BuiltModel, check: Any, path: Path) -> ExportJob:
    """The job for ``built``, traced on the sample inputs its check ran (``CheckResult``)."""
    dims = {} if plan.static else dynamic_dims(built.arch, built.params)
    dynamic = {
        inp.name: {axis: dims[d.name] for axis, d in enumerate(inp.dims) if isinstance(d, Dim) and d.name in dims}
        for inp in built.arch.inputs
    }
    return ExportJob(
        arch=built.arch,
        module=built.module,
        sample=check.inputs,
        dynamic=dynamic,
        output_names=check.output_order,
        path=path,
        opset=plan.opset,
        metadata=provenance(
            built, plan.exporter.name, plan.opset, plan.static, plan.options, [c.to_dict() for c in plan.runtimes if c.runtime is not None]
        ),
        device=built.device,
        options=dict(plan.options),
    )


def run_exporter(exporter: Exporter, job: ExportJob, output: Path) -> list[Path]:
    """The exporter's ``export``; the paths it wrote (the main file first)."""
    written = call_exporter(
        exporter.export,
        job,
        error=ExportFailed,
        what=f"{exporter.name} could not export {job.arch.name}",
        disk_path=output,
        limit=200,
        hint=" (run with -v for the exporter's own reason)",
        user_code=code_location(job.arch.build),
    )
    # A format that declares an option but records nothing did not apply it:
    # the file would claim (in zoo.options) what was not done.
    unapplied = [name for name, value in job.options.items() if value and name not in job.stats]
    if unapplied:
        raise PluginError(
            f"the {exporter.name} exporter (plugin {exporter.plugin!r}) declares {', '.join(unapplied)} "
            "but did not apply it (nothing recorded in job.stats)"
        )
    return [Path(p) for p in (written or [job.path])]


