"""Verification: run an exported file and PyTorch on the same fresh inputs and compare.

Cases are every dynamic dimension at the export size, small and large
(``zoo.shapes.verification_cases``). Each output is compared elementwise
against a tolerance, its decisions (argmax, threshold) must agree, and the loss
on the exported outputs must match the loss on PyTorch's.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zoo.errors import ParameterError, UsageError, VerificationFailed
from zoo.exporter_calls import call_exporter, quiet_exporter
from zoo.model import BuiltModel
from zoo.records import CaseResult, Verification
from zoo.shapes import verification_cases
from zoo.spec import DEFAULT_TOLERANCES, Architecture, Exporter, Output, Tolerance
from zoo.variants import Acceptance, accept_output

log = logging.getLogger(__name__)

VERIFY_SEED_OFFSET = 1000  # verification inputs differ from the export sample


# A tolerance option: one number for every output, or per output name ("*": the rest).
ToleranceOption = float | Mapping[str, float] | None


def check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ParameterError(f"--timeout {timeout}: give a number of seconds above 0")


def parse_tolerance(flag: str, values: Sequence[str] | ToleranceOption) -> ToleranceOption:
    """``--atol 1e-4`` and ``--atol logits=1e-4`` (repeatable) as a ``ToleranceOption``;
    a number or a mapping (a library caller's) is one already."""
    if values is None or isinstance(values, (int, float, Mapping)):
        return values
    if not values:
        return None
    parsed: dict[str, float] = {}
    for text in values:
        name, _, number = text.rpartition("=")
        try:
            value = float(number)
        except ValueError:
            raise ParameterError(f"{flag} {text!r}: give a number, or OUTPUT=NUMBER for one output") from None
        parsed[name or "*"] = value
    return parsed["*"] if list(parsed) == ["*"] else parsed


def check_tolerances(rtol: ToleranceOption, atol: ToleranceOption, outputs: Sequence[str] | None = None) -> None:
    """``--rtol``/``--atol`` must be finite, not negative and below 1 (a tolerance of
    1 or more passes any output of the right sign), and name outputs the model has
    (when ``outputs`` is known): refuse before any work."""
    for flag, option in (("--rtol", rtol), ("--atol", atol)):
        per_output = dict(option) if isinstance(option, Mapping) else {"*": option}
        for name, value in per_output.items():
            where = "" if name == "*" else f"{name}="
            if value is not None and not (math.isfinite(value) and 0 <= value < 1):
                raise ParameterError(f"{flag} {where}{value}: a tolerance must be a finite number >= 0 and below 1")
            if outputs is not None and name != "*" and name not in outputs:
                raise ParameterError(f"{flag} {name}=...: the model has no output {name!r}; its outputs are {', '.join(outputs)}")


def option_for(option: ToleranceOption, output: str) -> float | None:
    if isinstance(option, Mapping):
        return option.get(output, option.get("*"))
    return option


def tolerance_for(
    arch: Architecture, device: str, dtype: str, rtol: ToleranceOption, atol: ToleranceOption, output: str = ""
) -> Tolerance | None:
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
    rtol_value, atol_value = option_for(rtol, output), option_for(atol, output)
    return Tolerance(base.rtol if rtol_value is None else rtol_value, base.atol if atol_value is None else atol_value)


@dataclass
class InputCase:
    """Inputs to verify on that zoo did not generate: a user's file (``--inputs``)."""

    sizes: dict[str, int]
    inputs: dict[str, Any]  # input name -> numpy array, in declared order
    source: str


def verify_files(
    built: BuiltModel,
    exporter: Exporter,
    path: Any,
    static: bool,
    rtol: ToleranceOption = None,
    atol: ToleranceOption = None,
    acceptance: Acceptance | None = None,
    extra: Sequence[InputCase] = (),
    match_io: bool = False,
    timeout: float | None = None,
) -> Verification:
    """Run the exported model and PyTorch on fresh inputs at several sizes (and on
    ``extra``, the user's own) and compare every output: against tolerances, or
    for a variant (int8, fp16), by its ``acceptance`` criteria. ``match_io``: the
    file's inputs and outputs may have other names (a file zoo did not write).
    Past ``timeout`` seconds (``--timeout``) the running call is stopped."""
    import torch

    arch = built.arch
    start = time.perf_counter()
    deadline = None if timeout is None else time.monotonic() + timeout
    runner = call_exporter(
        exporter.load, path, built.device, error=VerificationFailed, what=f"{exporter.name} could not load {path.name}", limit=10_000
    )
    if static:
        check_static(runner, path)
    if match_io:
        runner = renamed_io(runner, arch, path.name)
    cases: list[tuple[dict[str, int], dict[str, Any], str | None, int]] = []
    for index, sizes in enumerate(verification_cases(arch, built.params)[: 1 if static else None]):
        seed = built.seed + VERIFY_SEED_OFFSET + index
        cases.append((dict(sizes), built.sample_inputs(sizes, seed=seed), None, seed))
    for index, case in enumerate(extra):
        dtypes = {inp.name: getattr(torch, inp.dtype) for inp in arch.inputs}
        tensors = {name: torch.from_numpy(array.copy()).to(built.device, dtypes[name]) for name, array in case.inputs.items()}
        cases.append((case.sizes, tensors, case.source, built.seed + VERIFY_SEED_OFFSET + len(cases) + index))
    verification = Verification(runtime=getattr(runner, "description", exporter.name), providers=list(getattr(runner, "providers", [])))
    verification.note = getattr(runner, "note", "")
    first_failed = None
    for sizes, inputs, source, seed in cases:
        result = run_case(
            built, exporter, runner, sizes, inputs, seed, rtol, atol, verification.tolerances, acceptance, deadline, timeout
        )
        result.source = source
        verification.cases.append(result)
        if not result.ok and result.outputs and first_failed is None:
            first_failed = inputs
    if acceptance is not None:
        verification.tolerances = {}
    elif first_failed is not None and exporter.intermediates is not None:
        from zoo.divergence import first_divergence

        feed_names = getattr(runner, "feed_names", None)
        verification.first_divergence = first_divergence(built, exporter, path, first_failed, rtol, atol, feed_names)
    verification.seconds = time.perf_counter() - start
    return verification


def run_case(
    built: BuiltModel, exporter: Exporter, runner: Any, sizes: dict[str, int], inputs: dict[str, Any], seed: int,
    rtol: ToleranceOption, atol: ToleranceOption, tolerances: dict[str, dict[str, float]], acceptance: Acceptance | None = None,
    deadline: float | None = None, timeout: float | None = None,
) -> CaseResult:
    """One case: the exported model and PyTorch on the same inputs, every output compared."""
    import numpy as np
    import torch

    arch = built.arch
    feed = {name: as_numpy(t) for name, t in inputs.items()}  # copied before forward: a model may change its inputs
    reference = built.forward(inputs)
    log.debug("running %s on %s", exporter.name, case_label(sizes))
    try:
        with quiet_exporter():
            got = run_stoppable(runner, feed, deadline, timeout)
    except VerificationFailed:  # timed out: no later case may run either
        raise
    except Exception as exc:  # noqa: BLE001 - a runtime that rejects a shape is a failed case
        from zoo.errors import one_line

        return CaseResult(dict(sizes), {}, [f"{case_label(sizes)}: {exporter.name} runtime raised {one_line(exc)}"])
    generator = torch.Generator().manual_seed(seed)
    outputs: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for spec in arch.outputs:
        ref = reference[spec.name].detach().cpu()
        dtype = str(ref.dtype).removeprefix("torch.")
        tol = tolerance_for(arch, built.device, dtype, rtol, atol, spec.name)
        tolerances[spec.name] = {"rtol": tol.rtol, "atol": tol.atol} if tol else {"rtol": 0.0, "atol": 0.0}
        if spec.name not in got:
            failures.append(f"{case_label(sizes)}: output {spec.name!r} is missing from the exported model")
            continue
        if acceptance is not None and tol is not None:
            stats, problems = accept_output(spec, ref, np.asarray(got[spec.name]), acceptance, generator)
        else:
            stats, problems = compare_output(spec, ref, np.asarray(got[spec.name]), tol, generator)
        failures.extend(f"{case_label(sizes)}: {problem}" for problem in problems)
        if stats is not None:
            outputs[spec.name] = stats
    return CaseResult(dict(sizes), outputs, failures)


def renamed_io(runner: Any, arch: Architecture, file_name: str) -> Any:
    """``runner`` taking and giving the architecture's names, for a file whose inputs
    and outputs are named otherwise: matched by name, else by position."""
    file_inputs = list(getattr(runner, "input_names", []))
    file_outputs = list(getattr(runner, "output_names", []))
    declared_in = [i.name for i in arch.inputs]
    declared_out = [o.name for o in arch.outputs]
    to_file = match_names(declared_in, file_inputs, "inputs", arch.name, file_name)
    from_file = {v: k for k, v in match_names(declared_out, file_outputs, "outputs", arch.name, file_name).items()}

    def run(feed: dict[str, Any]) -> dict[str, Any]:
        got = runner({to_file[name]: value for name, value in feed.items()})
        return {from_file[name]: value for name, value in got.items() if name in from_file}

    run.feed_names = to_file  # type: ignore[attr-defined]
    for attr in ("description", "providers", "note"):
        if hasattr(runner, attr):
            setattr(run, attr, getattr(runner, attr))
    return run


def match_names(declared: list[str], found: list[str], kind: str, arch: str, file_name: str) -> dict[str, str]:
    """Declared name -> the file's name: the same names, else the same count by position."""
    if sorted(declared) == sorted(found):
        return {name: name for name in declared}
    if len(declared) == len(found):
        return dict(zip(declared, found))
    raise UsageError(
        f"{file_name} has {len(found)} {kind} ({', '.join(found) or '-'}) but {arch} declares {len(declared)} "
        f"({', '.join(declared)}); they match neither by name nor by position: pick the architecture the file was exported from"
    )


def check_static(runner: Any, path: Any) -> None:
    """A file whose metadata says static shapes must have them: otherwise verifying
    one case would silently skip the sizes the file accepts."""
    session = getattr(runner, "session", None)
    for inp in session.get_inputs() if session is not None else []:
        symbolic = [d for d in inp.shape if not isinstance(d, int)]
        if symbolic:
            raise VerificationFailed(
                f"{path.name} says it was exported with static shapes (zoo.static), but its input {inp.name!r} has "
                f"dynamic dimensions ({', '.join(map(str, symbolic))}); the metadata does not describe this file"
            )


def run_stoppable(runner: Any, feed: dict[str, Any], deadline: float | None, timeout: float | None) -> Any:
    """``runner(feed)`` in a worker thread, so that a deadline or Ctrl-C can stop it:
    while onnxruntime runs, the main thread would not even see Ctrl-C. Stopping
    calls the runner's ``abort()`` (onnxruntime's ``RunOptions.terminate``), if it
    has one; a runner without one is left behind in its daemon thread."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = runner(feed)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            box["error"] = exc

    thread = threading.Thread(target=work, name="zoo-verify-run", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                _stop(runner, thread)
                raise VerificationFailed(f"verification timed out after {timeout:g} s (--timeout)")
            thread.join(0.05)
    except KeyboardInterrupt:
        _stop(runner, thread)
        raise
    if "error" in box:
        raise box["error"]
    return box["result"]


def _stop(runner: Any, thread: threading.Thread) -> None:
    abort = getattr(runner, "abort", None)
    if abort is not None:
        abort()
        thread.join()  # onnxruntime checks the flag between kernels; a process leaving while it runs aborts
    close = getattr(runner, "close", None)
    if close is not None:
        close()


def compare_output(
    spec: Output, ref: Any, cand: Any, tol: Tolerance | None, generator: Any
) -> tuple[dict[str, Any] | None, list[str]]:
    """One output of one case: values, decisions (argmax/threshold) and the loss.
    Returns the stats for the report (``None`` if the shapes differ) and what failed."""
    from zoo.tasks import agreement, closed_form_loss, loss_slack, losses_agree, make_target, task_stats

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
            f"max rel error {stats['max_rel']:.3g} (rtol {rtol:g}, atol {atol:g}) in {stats['out_of_tolerance']:.1%} "
            f"of {stats['elements']} values; atol {stats['needed_atol']:.3g} would pass"
        )
    agreed = agreement(spec, ref_np, cand, rtol, atol)
    if agreed is not None:
        stats[agreed[0] + "_agreement"] = agreed[1]
        if agreed[1] < 1.0:
            failures.append(f"output {spec.name!r}: {agreed[0]} agrees on only {agreed[1]:.1%} of rows")
    stats.update(task_stats(spec, ref_np, cand, rtol, atol))  # reported, never failing (multilabel's exact_match)
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
    """A tensor as a numpy array (a copy); bfloat16 as float32 (exact), numpy having no bfloat16."""
    import torch

    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy().copy()


def compare(reference: Any, candidate: Any, tol: Tolerance | None) -> dict[str, Any]:
    """``error_stats`` with the tolerance (exact when ``None``), plus ``max_abs``/``max_rel``."""
    stats = error_stats(reference, candidate, tol.rtol if tol else 0.0, tol.atol if tol else 0.0)
    return {"max_abs": stats["abs_error"]["max"], "max_rel": stats["rel_error"]["max"], **stats}


PERCENTILES = (50, 90, 99)


def error_stats(reference: Any, candidate: Any, rtol: float, atol: float) -> dict[str, Any]:
    """How far ``candidate`` is from ``reference``, elementwise, against ``|a-b| <= atol + rtol*|ref|``.

    NaN matches NaN and an infinity the same infinity; any other element where a
    side is not finite is an infinite error. Returns ``ok``, ``elements``,
    ``out_of_tolerance`` (the fraction failing), ``abs_error`` and ``rel_error``
    (``p50``, ``p90``, ``p99``, ``max``), ``nan`` and ``inf`` counts per side, and
    ``needed_atol``: the smallest atol that passes at this rtol (inf when a side
    is not finite where the other is).
    """
    import numpy as np

    ref = np.asarray(reference).astype(np.float64)
    cand = np.asarray(candidate).astype(np.float64)
    finite = np.isfinite(ref) & np.isfinite(cand)
    same_special = (np.isnan(ref) & np.isnan(cand)) | (np.isinf(ref) & (ref == cand))
    mismatch = ~finite & ~same_special
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(finite, np.abs(np.where(finite, ref, 0.0) - np.where(finite, cand, 0.0)), 0.0)
    diff[mismatch] = np.inf
    diff[mismatch & (np.isnan(ref) | np.isnan(cand))] = np.nan  # NaN against a number is reported as NaN, never inf
    scale = np.abs(np.where(finite, ref, 0.0))
    with np.errstate(invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.maximum(scale, np.finfo(np.float64).tiny))
    bad = mismatch | (diff > atol + rtol * scale)
    slack = np.where(finite, diff - rtol * scale, 0.0)
    needed = math.inf if mismatch.any() else max(0.0, float(slack.max(initial=0.0)))
    return {
        "ok": not bool(bad.any()),
        "elements": int(ref.size),
        "out_of_tolerance": float(bad.mean()) if ref.size else 0.0,
        "abs_error": percentiles(diff),
        "rel_error": percentiles(rel),
        "nan": {"reference": int(np.isnan(ref).sum()), "candidate": int(np.isnan(cand).sum())},
        "inf": {"reference": int(np.isinf(ref).sum()), "candidate": int(np.isinf(cand).sum())},
        "needed_atol": needed,
    }


def percentiles(values: Any) -> dict[str, float]:
    import numpy as np

    numbers = values[~np.isnan(values)]
    if numbers.size == 0:
        empty = float("nan") if values.size else 0.0
        return {**{f"p{q}": empty for q in PERCENTILES}, "max": empty}
    # "higher": an element's own error, never a mix of two (inf with a number would give NaN)
    found = np.percentile(numbers, PERCENTILES, method="higher")
    top = float("nan") if numbers.size < values.size else float(numbers.max())  # any NaN makes the max NaN
    return {**{f"p{q}": float(v) for q, v in zip(PERCENTILES, found)}, "max": top}


def failure_text(verification: Verification) -> str:
    """The one line of a failed verification: its first failure, and where it diverges when known."""
    from zoo.divergence import divergence_text

    text = "verification failed: " + verification.failures[0]
    if verification.first_divergence:
        text += "; " + divergence_text(verification.first_divergence)
    return text


def case_label(sizes: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items()) or "static shapes"
