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
from collections.abc import Mapping
from typing import Any

from zoo.errors import ParameterError, VerificationFailed
from zoo.exporter_calls import call_exporter, quiet_exporter
from zoo.model import BuiltModel
from zoo.records import CaseResult, Verification
from zoo.shapes import verification_cases
from zoo.spec import DEFAULT_TOLERANCES, Architecture, Exporter, Output, Tolerance

log = logging.getLogger(__name__)

VERIFY_SEED_OFFSET = 1000  # verification inputs differ from the export sample


def check_tolerances(rtol: float | None, atol: float | None) -> None:
    """``--rtol``/``--atol`` must be finite, not negative and below 1 (a tolerance
    of 1 or more passes any output of the right sign): refuse before any work."""
    for flag, value in (("--rtol", rtol), ("--atol", atol)):
        if value is not None and not (math.isfinite(value) and 0 <= value < 1):
            raise ParameterError(f"{flag} {value}: a tolerance must be a finite number >= 0 and below 1")


def check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ParameterError(f"--timeout {timeout}: give a number of seconds above 0")


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
    path: Any,
    static: bool,
    rtol: float | None = None,
    atol: float | None = None,
    timeout: float | None = None,
) -> Verification:
    """Run the exported model and PyTorch on fresh inputs at several sizes and compare
    every output; past ``timeout`` seconds (``--timeout``) the running call is stopped."""
    import numpy as np
    import torch

    arch = built.arch
    start = time.perf_counter()
    deadline = None if timeout is None else time.monotonic() + timeout
    runner = call_exporter(
        exporter.load, path, built.device, error=VerificationFailed, what=f"{exporter.name} could not load {path.name}", limit=10_000
    )
    if static:
        check_static(runner, path)
    cases = verification_cases(arch, built.params)
    tolerances: dict[str, dict[str, float]] = {}
    results = []
    for index, sizes in enumerate(cases[:1] if static else cases):
        seed = built.seed + VERIFY_SEED_OFFSET + index
        inputs = built.sample_inputs(sizes, seed=seed)
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

            results.append(CaseResult(dict(sizes), {}, [f"{case_label(sizes)}: {exporter.name} runtime raised {one_line(exc)}"]))
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
                failures.append(f"{case_label(sizes)}: output {spec.name!r} is missing from the exported model")
                continue
            stats, problems = compare_output(spec, ref, np.asarray(got[spec.name]), tol, generator)
            failures.extend(f"{case_label(sizes)}: {problem}" for problem in problems)
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
    """A tensor as a numpy array (a copy); bfloat16 as float32 (exact), numpy having no bfloat16."""
    import torch

    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy().copy()


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
        # a NaN on either side is reported as NaN (max propagates it), never as inf
        mismatch = np.where(np.isnan(ref) | np.isnan(cand), np.nan, np.inf)
        diff = np.where(np.isfinite(ref) & np.isfinite(cand), diff, np.where(ref == cand, 0.0, mismatch))
        max_abs = float(diff.max())
        max_rel = float((diff / np.maximum(np.abs(ref), np.finfo(np.float64).tiny)).max())
        ok = bool(finite.all() and (diff <= tol.atol + tol.rtol * np.abs(ref)).all())
    return {"max_abs": max_abs, "max_rel": max_rel, "ok": ok}


def case_label(sizes: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items()) or "static shapes"
