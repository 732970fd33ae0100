"""The export pipeline, top to bottom: build → check → export → verify → place.

``export_targets`` carries out an ``ExportPlan`` (one target or ``--all``);
``export_model`` exports one already-built model; ``verify_artifact`` rebuilds
the model a file names in its metadata and verifies the file again. The
modules it calls each own one step: ``zoo.check``, ``zoo.job``,
``zoo.exporter_calls``, ``zoo.verification``, ``zoo.artifacts``, ``zoo.records``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zoo import interrupts, progress
from zoo.artifacts import (
    OldSideFiles,
    check_input_file,
    check_output_path,
    check_side_files,
    old_side_files,
    place,
    side_files,
    staging,
)
from zoo.errors import CheckFailed, ExportFailed, PluginError, UsageError, VerificationFailed, ZooError, one_line
from zoo.exporter_calls import call_exporter, code_location, reason
from zoo.job import META_PREFIX, ExportJob, provenance
from zoo.model import BuiltModel
from zoo.plan import ExportPlan, Target, resolve_format
from zoo.records import ExportResult, FailedExport, Verification
from zoo.shapes import dynamic_dims
from zoo.spec import Dim, Exporter
from zoo.variants import Acceptance
from zoo.verification import ToleranceOption, check_timeout, check_tolerances, failure_text, parse_tolerance, verify_files

log = logging.getLogger(__name__)
CALIBRATION_SEED = 2000  # static quantization calibrates on inputs no verification case uses
CALIBRATION_BATCHES = 8


def export_targets(plan: ExportPlan, on_start: Callable[[int, Target], None] | None = None) -> list[ExportResult | FailedExport]:
    """Export every target of ``plan``; a failure is recorded (with its exit code)
    and the rest still run."""
    from zoo.model import build_model

    results: list[ExportResult | FailedExport] = []
    for index, target in enumerate(plan.targets):
        if on_start is not None:
            on_start(index, target)
        arch = target.arch
        try:
            if target.refused is not None:  # found when the plan was made (an existing file without --force)
                raise target.refused
            built = build_model(arch, plan.overrides, seed=plan.seed, device=plan.device, weights=plan.weights)
            results.append(export_built(plan, built, target.path))
        except ZooError as exc:
            results.append(FailedExport(arch.name, str(exc), exit_code=exc.exit_code, exception=exc))
        except BaseException as exc:  # noqa: BLE001 - a plugin's bug (even sys.exit()) must not stop the other architectures
            if isinstance(exc, KeyboardInterrupt):  # the user's Ctrl-C stops everything
                raise
            log.debug("exporting %s raised", arch.name, exc_info=True)
            results.append(
                FailedExport(arch.name, f"{arch.name} (plugin {arch.plugin!r}) raised {reason(exc)} (run with -vv for the traceback)")
            )
    return results


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
) -> ExportResult:
    """Export an already-built model to ``output`` (the library's entry point; the
    CLI goes through ``plan_export`` and ``export_targets``)."""
    options = dict(options or {})
    opset = resolve_format(exporter, opset=opset, rtol=rtol, atol=atol, options=options)
    plan = ExportPlan(exporter, [Target(built.arch, output)], opset, static, rtol, atol, options, force, built.seed, built.device)
    check_output_path(output, force)
    return export_built(plan, built, output)


def export_built(plan: ExportPlan, built: BuiltModel, output: Path) -> ExportResult:
    """Check, export into a staging folder, check the file, verify it there, then
    move the files into place. Raises on a failed check or export; a failed
    verification places nothing and returns a result whose ``ok`` is False."""
    from zoo.check import check_model

    exporter = plan.exporter
    result = ExportResult(built, exporter, plan.opset, plan.static)
    with timed(result.timings, "check"):
        result.check = check_model(built)
    if not result.check.ok:
        raise CheckFailed(f"{built.arch.name}: " + "; ".join(result.check.failures))
    with staging(output) as temp:
        job = make_job(plan, built, result.check, temp / output.name)
        with timed(result.timings, "export"):
            written = run_exporter(exporter, job, output)
        result.export_stats = job.stats
        check_side_files(written, job.path, output, plan.force)  # fail before verifying; place() checks again
        with timed(result.timings, "verify"):
            check_artifact(exporter, job.path)
            result.verification = verify_files(
                built, exporter, job.path, plan.static, plan.rtol, plan.atol, extra=plan.inputs, timeout=plan.timeout
            )
        if not result.verification.ok:  # nothing is placed: a file that computes the wrong thing must not look good
            result.files = [output.parent / p.name for p in written]
            result.placed = False
            result.error = failure_text(result.verification)
            return result
        main = job.path
        if plan.variant is not None:  # built on the verified float32 file, placed instead of it once accepted
            written = make_variant(plan, built, job, temp / "variant", output, result)
            main = written[0]
            if not result.variant_verification.ok:
                result.files = [output.parent / p.name for p in written]
                result.placed = False
                result.error = f"the {plan.variant} variant is not accepted: " + result.variant_verification.failures[0]
                return result
        old = old_side_files(exporter, output) if plan.force else OldSideFiles()
        weights = [Path(built.weights["path"])] if built.weights else []  # the old file may name any file as its data
        interrupts.stop_if_interrupted()  # one a library swallowed stops the export before anything is placed
        with interrupts.uncut():  # all the files or none: a signal now is raised once they are placed
            result.files = place(written, main, output, plan.force, old=old, keep=weights)
    return result


def make_variant(plan: ExportPlan, built: BuiltModel, job: ExportJob, folder: Path, output: Path, result: ExportResult) -> list[Path]:
    """The variant of the verified file ``job.path``, checked and verified by the plan's
    acceptance criteria (in ``result``); the files it wrote, the main file first."""
    with timed(result.timings, plan.variant):
        target, result.variant, result.variant_verification = variant_of(
            plan.exporter, built, job.path, job.metadata, plan.variant, plan.acceptance, folder, output, plan.static
        )
    return [target]


def variant_of(
    exporter: Exporter, built: BuiltModel, source: Path, metadata: dict[str, str], variant: str, acceptance: Acceptance,
    folder: Path, disk_path: Path, static: bool = False,
) -> tuple[Path, dict[str, Any], Verification]:
    """Make ``variant`` of the verified file ``source`` in ``folder`` (same file name),
    check it, and verify it against ``built`` by ``acceptance``: the file, what was
    made (name, method, criteria, sizes) and the verification."""
    import numpy as np

    folder.mkdir()
    target = folder / source.name
    metadata = {
        **metadata,
        META_PREFIX + "variant": variant,
        META_PREFIX + "acceptance": json.dumps(acceptance.to_dict(), sort_keys=True),
    }
    calibration = [  # for static quantization: zoo's own inputs, unlike any verification case
        {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in built.sample_inputs(seed=built.seed + CALIBRATION_SEED + i).items()}
        for i in range(CALIBRATION_BATCHES)
    ]
    how = call_exporter(
        exporter.make_variant, source, target, variant, metadata, calibration, error=ExportFailed,
        what=f"{exporter.name} could not make the {variant} variant of {built.arch.name}", disk_path=disk_path,
    )
    check_artifact(exporter, target)
    verification = verify_files(built, exporter, target, static, acceptance=acceptance)
    made = {"name": variant, **(how or {}), "criteria": acceptance, "float32_bytes": source.stat().st_size, "bytes": target.stat().st_size}
    return target, made, verification


def exported_metadata(exporter: Exporter, path: Path) -> dict[str, str]:
    """The ``zoo.*`` metadata of a file zoo just wrote, as its exporter reads it back."""
    raw = call_exporter(exporter.read_metadata, path, error=VerificationFailed, what=f"{exporter.name} could not read {path.name}")
    return {k: v for k, v in dict(raw or {}).items() if k.startswith(META_PREFIX)}


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
        metadata=provenance(built, plan.exporter.name, plan.opset, plan.static, plan.options),
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


def check_artifact(exporter: Exporter, path: Path) -> None:
    """The format's own structural check of a file (``onnx.checker``), if it has one."""
    if exporter.check is not None:
        call_exporter(exporter.check, path, error=VerificationFailed, what=f"{path.name} fails the {exporter.name} check")


def read_artifact(exporters: Any, path: Path, arch_given: bool = False) -> tuple[Exporter, dict[str, str]]:
    """The exporter that wrote ``path`` and the zoo metadata in it.

    The suffix only says which readers to ask first: two formats may share a
    suffix, and ``-o`` may give any name (docs/plugins.md). The first reader that
    parses the file decides; the exporter named in its metadata verifies it.
    """
    matching = [e for e in exporters if path.name.endswith(e.suffix)]
    failures: list[tuple[Exporter, ZooError]] = []
    for exporter in [*matching, *(e for e in exporters if e not in matching)]:
        try:
            raw = call_exporter(exporter.read_metadata, path, error=UsageError, what=f"not a readable {exporter.name} file", limit=150)
        except UsageError as exc:  # not this format: try the next reader
            failures.append((exporter, exc))
            continue
        meta = {k[len(META_PREFIX) :]: v for k, v in dict(raw or {}).items() if k.startswith(META_PREFIX)}
        if "architecture" not in meta:  # a real file of this format, not one zoo wrote: another reader will not change that
            if arch_given:
                return exporter, {}
            raise UsageError(
                f"{str(path)!r} has no zoo metadata ('zoo export' did not write it); "
                "pass --arch NAME (see 'zoo list') and its --param values to verify it against that architecture"
            )
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
        raise UsageError(f"{str(path)!r} is {exc}") from exc
    tried = ", ".join(f"{e.name} ({e.suffix})" for e in exporters)
    raise UsageError(f"{str(path)!r} is not a file any installed exporter reads (tried {tried}); give a file 'zoo export' wrote")


def verify_artifact(
    zoo: Any,
    path: Path,
    *,
    weights: Path | None = None,
    device: str = "cpu",
    rtol: ToleranceOption = None,
    atol: ToleranceOption = None,
    inputs: Sequence[Path] = (),
    arch_name: str | None = None,
    params: Sequence[str] = (),
    seed: int | None = None,
    timeout: float | None = None,
) -> ExportResult:
    """Rebuild the model named in ``path``'s own metadata and verify the file against it;
    with ``arch_name``, build that architecture (``params``, ``seed``) instead, for
    any file of a known format, zoo's metadata or not. The file is untrusted: what
    its metadata asks to build is checked against the weights it holds before
    anything is allocated."""
    from zoo.input_files import load_input_files
    from zoo.model import build_model, check_seed
    from zoo.params import coerce_params, parse_params
    from zoo.weights import check_regular_file

    check_input_file(path, "give the file 'zoo export' wrote")
    rtol, atol = parse_tolerance("--rtol", rtol), parse_tolerance("--atol", atol)  # text from the command line, or numbers
    check_tolerances(rtol, atol)
    if arch_name is None and (params or seed is not None):
        raise UsageError("--param and --seed say how to build --arch NAME; without --arch, the file's own metadata does")
    check_timeout(timeout)
    if weights is not None:
        check_regular_file(weights)
    exporter, meta = read_artifact(zoo.exporters, path, arch_given=arch_name is not None)
    if arch_name is not None:
        arch = zoo.architecture(arch_name)
        overrides: dict[str, Any] = parse_params(params, arch.parameters, arch.name)
        seed = 0 if seed is None else seed
        check_seed(seed)
    else:
        arch = zoo.architectures.get(meta["architecture"])
        if arch is None:
            plugin = meta.get("plugin", "?")
            raise UsageError(
                f"{path.name} was exported from {meta['architecture']!r} of plugin {plugin!r}, which is not installed; "
                "install that plugin (see 'zoo plugins')"
            )
        overrides, seed = recorded_build(path, meta, weights)
        overrides = coerce_params(overrides, arch.parameters, arch.name)
    check_recorded_size(exporter, arch, path, meta, overrides)  # before anything is allocated
    check_tolerances(rtol, atol, [o.name for o in arch.outputs])
    acceptance = recorded_acceptance(path, meta, rtol, atol)
    static = meta.get("static") == "true"
    cases = load_input_files(inputs, arch, {**arch.defaults, **overrides}, static, param_hint=arch_name is not None)
    built = build_model(arch, overrides, seed=seed, device=device, weights=weights)
    opset = int(meta["opset"]) if meta.get("opset", "None").isdigit() else None
    result = ExportResult(built, exporter, opset, static, files=[path])
    with timed(result.timings, "verify"):
        check_artifact(exporter, path)
        result.files = [path, *side_files(exporter, path, error=VerificationFailed)]
        result.verification = verify_files(
            built, exporter, path, static, rtol, atol, acceptance=acceptance, extra=cases, match_io=arch_name is not None,
            timeout=timeout,
        )
    interrupts.stop_if_interrupted()  # one a library swallowed: no verdict, no report
    if acceptance is not None:
        result.variant = {"name": meta["variant"], "criteria": acceptance}
    if not result.verification.ok:
        result.error = failure_text(result.verification)
        if arch_name is not None and weights is None:
            result.error += f" (built {arch.name} with seeded weights, seed {seed}: if the file holds trained weights, pass them with --weights)"
    return result


def recorded_acceptance(path: Path, meta: dict[str, str], rtol: float | None, atol: float | None) -> Acceptance | None:
    """A variant's acceptance criteria, as its file records them; ``None`` for a float file."""
    if "variant" not in meta:
        return None
    if rtol is not None or atol is not None:
        raise UsageError(f"{path.name} is a {meta['variant']} variant, judged by its acceptance criteria, not --rtol/--atol")
    try:
        return Acceptance.from_metadata(meta.get("acceptance", "{}"))
    except (ValueError, TypeError, ZooError) as exc:
        raise UsageError(f"{path.name} has damaged zoo metadata: zoo.acceptance: {exc}") from exc
def read_paths(zoo: Any, path: Path, weights: Path | None = None) -> list[Path]:
    """The files ``zoo verify`` reads: ``path``, its side files as its exporter
    lists them, and the weights. No report may replace them; known before any work
    (the parse is cached for the verification). A file that does not parse has
    no side files to protect: verifying it fails on its own."""
    paths = [p for p in (path, weights) if p is not None]
    try:
        check_input_file(path, "")
        exporter, _ = read_artifact(zoo.exporters, path)
        return [*paths, *side_files(exporter, path, error=UsageError)]
    except ZooError:
        return paths


def recorded_build(path: Path, meta: dict[str, str], weights: Path | None) -> tuple[dict[str, Any], int]:
    """The parameters and seed ``path`` was exported with; ``weights`` must be the
    file it was exported with (by sha256), or absent when it had none."""
    from zoo.model import MAX_SEED
    from zoo.weights import sha256

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
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested 100,000 deep
        raise UsageError(f"{path.name} has damaged zoo metadata: {one_line(exc, 120)}") from None
    # What build_model would blame on --param or --seed is the file's fault here.
    if not isinstance(params, dict):
        raise UsageError(f"{path.name} has damaged zoo metadata: zoo.params is {meta['params'][:60]!r}, not a JSON object")
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"{path.name} has damaged zoo metadata: zoo.seed is {seed}, not a seed zoo export writes (0 to {MAX_SEED})")
    return params, seed


def check_recorded_size(exporter: Exporter, arch: Any, path: Path, meta: dict[str, str], params: dict[str, Any]) -> None:
    """Refuse metadata that would build far more weights than the file holds (a 6 kB
    file saying ``width: 20000``), from a build on torch's ``meta`` device stopped
    at twice what the file holds. A ``--fold-linear`` file legitimately holds fewer
    weights than its module: there only ``build_model``'s memory bound applies."""
    from zoo.model import dry_build

    if exporter.count_weights is None:
        return
    elements, nbytes = call_exporter(exporter.count_weights, path, error=UsageError, what=f"{path.name} is not a readable {exporter.name} file")
    try:
        folded = bool(json.loads(meta.get("options", "{}")).get("fold_linear"))
    except (ValueError, RecursionError, AttributeError):
        raise UsageError(f"{path.name} has damaged zoo metadata: zoo.options is not a JSON object") from None
    if folded:
        return
    size = dry_build(arch, params, limit_bytes=2 * nbytes + 2**16)
    if size is not None and size.over:
        raise UsageError(
            f"zoo.params would build at least {size.elements:.3g} parameters but {path.name} holds {elements:,}; "
            "the metadata does not describe this file"
        )


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Time a stage (summed into ``timings``), announcing it to a terminal (``zoo.progress``)."""
    progress.stage(stage)
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start
