"""Verification: run an exported file and PyTorch on the same fresh inputs and compare.

Cases are every dynamic dimension at the export size, small and large
(``zoo.build.shapes.verification_cases``). Each output is compared elementwise
against a tolerance, its decisions (argmax, threshold) must agree, and the loss
on the exported outputs must match the loss on PyTorch's.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from zoo.build.model import BuiltModel
from zoo.build.shapes import verification_cases
from zoo.errors import ParameterError, UsageError, VerificationFailed, one_line
from zoo.host.plugin_calls import call_exporter, quiet_exporter
from zoo.progress import stage
from zoo.spec.architecture import Architecture
from zoo.spec.exporter import Exporter
from zoo.text import dtype_text
from zoo.verify.acceptance import Acceptance, accept_output
from zoo.verify.compare import as_numpy, case_label, compare_output
from zoo.verify.divergence import first_divergence
from zoo.verify.results import CaseResult, Verification
from zoo.verify.tolerances import ToleranceOption, tolerance_for

log = logging.getLogger(__name__)

VERIFY_SEED_OFFSET = 1000  # verification inputs differ from the export sample


def check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ParameterError(f"--timeout {timeout}: give a number of seconds above 0")


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
    before_load: Callable[[], bool] | None = None,
) -> Verification:
    """Run the exported model and PyTorch on fresh inputs at several sizes (and on
    ``extra``, the user's own) and compare every output: against tolerances, or
    for a variant (int8, fp16), by its ``acceptance`` criteria. ``match_io``: the
    file's inputs and outputs may have other names (a file zoo did not write).
    Past ``timeout`` seconds (``--timeout``) the running call is stopped.

    PyTorch's outputs for every case are computed before the runtime loads the
    file; then ``before_load`` runs: it may free PyTorch's weights (it returns
    whether it did), so two copies of a large model's weights never coexist."""
    import torch

    arch = built.arch
    start = time.perf_counter()
    deadline = None if timeout is None else time.monotonic() + timeout
    cases: list[tuple[dict[str, int], dict[str, Any], str | None, int]] = []
    for index, sizes in enumerate(verification_cases(arch, built.params)[: 1 if static else None]):
        seed = built.seed + VERIFY_SEED_OFFSET + index
        cases.append((dict(sizes), built.sample_inputs(sizes, seed=seed), None, seed))
    for index, case in enumerate(extra):
        dtypes = {inp.name: getattr(torch, inp.dtype) for inp in arch.inputs}
        tensors = {name: torch.from_numpy(array.copy()).to(built.device, dtypes[name]) for name, array in case.inputs.items()}
        cases.append((case.sizes, tensors, case.source, built.seed + VERIFY_SEED_OFFSET + len(cases) + index))
    feeds = [{name: as_numpy(t) for name, t in inputs.items()} for _, inputs, _, _ in cases]  # before forward: a model may change its inputs
    stage("verify: PyTorch's outputs")
    references = [{k: v.detach().cpu() for k, v in built.forward(inputs).items()} for _, inputs, _, _ in cases]
    released = before_load() if before_load is not None else False
    stage(f"verify: loading {path.name} into {exporter.name}'s runtime")
    runner = call_exporter(
        exporter.load, path, built.device, error=VerificationFailed, what=f"{exporter.name} could not load {path.name}", limit=10_000
    )
    if static:
        check_static(runner, path)
    if match_io:
        runner = renamed_io(runner, arch, path.name)
    verification = Verification(runtime=getattr(runner, "description", exporter.name), providers=list(getattr(runner, "providers", [])))
    verification.note = getattr(runner, "note", "")
    first_failed = None
    for number, ((sizes, inputs, source, seed), feed, reference) in enumerate(zip(cases, feeds, references), 1):
        stage(f"verify: case {number} of {len(cases)} ({case_label(sizes)})")
        result = run_case(
            built, exporter, runner, sizes, feed, reference, seed, rtol, atol, verification.tolerances, acceptance, deadline, timeout
        )
        result.source = source
        verification.cases.append(result)
        if not result.ok and result.outputs and first_failed is None:
            first_failed = inputs
    if acceptance is not None:
        verification.tolerances = {}
    elif released and first_failed is not None:
        verification.note = "PyTorch's weights were freed to fit memory: run 'zoo verify' on the file for the first divergence"
    elif first_failed is not None and exporter.intermediates is not None:
        feed_names = getattr(runner, "feed_names", None)
        verification.first_divergence = first_divergence(built, exporter, path, first_failed, rtol, atol, feed_names)
    verification.seconds = time.perf_counter() - start
    return verification


def run_case(
    built: BuiltModel, exporter: Exporter, runner: Any, sizes: dict[str, int], feed: dict[str, Any], reference: dict[str, Any], seed: int,
    rtol: ToleranceOption, atol: ToleranceOption, tolerances: dict[str, dict[str, float]], acceptance: Acceptance | None = None,
    deadline: float | None = None, timeout: float | None = None,
) -> CaseResult:
    """One case: the exported model on ``feed`` against PyTorch's ``reference`` outputs, every output compared."""
    import numpy as np
    import torch

    arch = built.arch
    log.debug("running %s on %s", exporter.name, case_label(sizes))
    try:
        with quiet_exporter():
            got = run_stoppable(runner, feed, deadline, timeout)
    except VerificationFailed:  # timed out: no later case may run either
        raise
    except Exception as exc:  # noqa: BLE001 - a runtime that rejects a shape is a failed case

        return CaseResult(dict(sizes), {}, [f"{case_label(sizes)}: {exporter.name} runtime raised {one_line(exc)}"])
    generator = torch.Generator().manual_seed(seed)
    outputs: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for spec in arch.outputs:
        ref = reference[spec.name]
        dtype = dtype_text(ref.dtype)
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


