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
from dataclasses import dataclass, field
from typing import Any

from zoo import interrupts
from zoo.build.model import BuiltModel
from zoo.build.shapes import VERIFY_SEED_OFFSET, verification_cases
from zoo.errors import ParameterError, VerificationFailed, one_line
from zoo.host.plugin_calls import quiet_exporter
from zoo.progress import stage
from zoo.spec.exporter import Exporter
from zoo.spec.runner import Runner
from zoo.text import dtype_text
from zoo.verification.acceptance import Acceptance, accept_output
from zoo.verification.compare import as_numpy, case_label, compare_output
from zoo.verification.divergence import first_divergence
from zoo.verification.file_io import RenamedRunner, check_static, file_cases, fixed_sizes, renamed_io
from zoo.verification.results import CaseResult, Verification
from zoo.verification.runtimes import RuntimeChoice, diagnose, intermediates_of, load_runner
from zoo.verification.tolerances import ToleranceOption, tolerance_for

log = logging.getLogger(__name__)



def check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ParameterError(f"--timeout {timeout}: give a number of seconds above 0")


@dataclass
class InputCase:
    """Inputs to verify on that zoo did not generate: a user's file (``--inputs``)."""

    sizes: dict[str, int]
    inputs: dict[str, Any]  # input name -> numpy array, in declared order
    source: str
    labels: dict[str, Any] = field(default_factory=dict)  # output name -> its targets (zoo.verification.metrics)

    @property
    def rows(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0]) if self.inputs else 0


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
    runtime: RuntimeChoice | None = None,
    before_load: Callable[[], bool] | None = None,
) -> Verification:
    """Run the exported model and PyTorch on fresh inputs at several sizes (and on
    ``extra``, the user's own) and compare every output: against tolerances, or
    for a variant (int8, fp16), by its ``acceptance`` criteria. ``match_io``: the
    file's inputs and outputs may have other names (a file zoo did not write).
    Past ``timeout`` seconds (``--timeout``) the running call, or the file's
    loading, is stopped. ``runtime``: which runtime and settings run the file
    (default: the format's own runner).

    PyTorch's outputs for every case are computed before the runtime loads the
    file; then ``before_load`` runs: it may free PyTorch's weights (it returns
    whether it did), so two copies of a large model's weights never coexist."""
    arch = built.arch
    start = time.perf_counter()
    deadline = None if timeout is None else time.monotonic() + timeout
    generated = verification_cases(arch, built.params, built.sizes)[: 1 if static else None]
    cases = case_inputs(built, generated, extra)
    feeds, references = pytorch_side(built, cases)
    released = before_load() if before_load is not None else False
    choice = runtime or RuntimeChoice(None)
    runner = loaded_runner(built, exporter, path, choice, static, match_io, deadline, timeout)
    fixed = fixed_sizes(runner, arch, built.params)  # a static file (zoo's or foreign) takes only its own sizes
    at_fixed = file_cases(generated, fixed)
    if at_fixed != generated:
        if released:  # zoo's own files take the sizes it generates: only a foreign one gets here
            raise VerificationFailed(f"{path.name} fixes {fixed}, and PyTorch's weights were freed; run 'zoo verify' on it")
        cases = case_inputs(built, at_fixed, extra)
        feeds, references = pytorch_side(built, cases)
    labelled = frozenset(name for case in extra for name in case.labels)  # outputs whose metrics judge a variant
    info = runner.info
    verification = Verification(runtime=info.description, providers=list(info.providers), note=info.note, runner=info.to_dict())
    verification.fixed = fixed
    first_failed = None
    for number, ((sizes, inputs, source, seed, labels), feed, reference) in enumerate(zip(cases, feeds, references), 1):
        stage(f"verify: case {number} of {len(cases)} ({case_label(sizes)})")
        result = run_case(
            built, exporter, runner, sizes, feed, reference, seed, rtol, atol, verification.tolerances, acceptance, deadline, timeout,
            Labelled(labels, labelled, source or ""),
        )
        result.source = source
        verification.cases.append(result)
        if not result.ok and result.outputs and first_failed is None and not torch_nan_only(result):
            first_failed = inputs
    if acceptance is not None:
        verification.tolerances = {}
    elif first_failed is not None:
        locate_divergence(verification, built, exporter, runner, choice, path, first_failed, rtol, atol, released)
    verification.seconds = time.perf_counter() - start
    return verification


def loaded_runner(
    built: BuiltModel, exporter: Exporter, path: Any, choice: RuntimeChoice, static: bool, match_io: bool,
    deadline: float | None, timeout: float | None,
) -> Runner:
    """``path`` loaded into ``choice``'s runtime, under ``--timeout`` (session creation
    folds constants: a hostile graph can make that the slow part)."""
    stage(f"verify: loading {path.name} into " + (choice.name if choice.name else f"{exporter.name}'s runtime"))
    runner = run_stoppable(Loading(lambda: load_runner(exporter, choice, path, built.device)), {}, deadline, timeout)
    if static:
        check_static(runner, path)
    return renamed_io(runner, built.arch, path.name) if match_io else runner


def locate_divergence(
    verification: Verification, built: BuiltModel, exporter: Exporter, runner: Runner, choice: RuntimeChoice, path: Any,
    inputs: dict[str, Any], rtol: ToleranceOption, atol: ToleranceOption, released: bool,
) -> None:
    """The first node whose value leaves tolerance on the first failed case's ``inputs``,
    where the runtime can expose intermediates and PyTorch's weights are still held."""
    if released:
        verification.note = "PyTorch's weights were freed to fit memory: run 'zoo verify' on the file for the first divergence"
    elif (expose := intermediates_of(exporter, choice)) is not None:
        feed_names = runner.feed_names if isinstance(runner, RenamedRunner) else None
        verification.first_divergence = first_divergence(built, expose, path, inputs, rtol, atol, feed_names)


Case = tuple[dict[str, int], dict[str, Any], "str | None", int, dict[str, Any]]  # sizes, inputs, source, seed, labels


def case_inputs(built: BuiltModel, generated: list[dict[str, int]], extra: Sequence[InputCase]) -> list[Case]:
    """The generated cases' inputs (seeded apart from the export sample), then the user's."""
    import torch

    arch = built.arch
    cases: list[Case] = []
    for index, sizes in enumerate(generated):
        seed = built.seed + VERIFY_SEED_OFFSET + index
        cases.append((dict(sizes), built.sample_inputs(sizes, seed=seed), None, seed, {}))
    for index, case in enumerate(extra):
        dtypes = {inp.name: getattr(torch, inp.dtype) for inp in arch.inputs}
        tensors = {name: torch.from_numpy(array.copy()).to(built.device, dtypes[name]) for name, array in case.inputs.items()}
        cases.append((case.sizes, tensors, case.source, built.seed + VERIFY_SEED_OFFSET + len(cases) + index, case.labels))
    return cases


def pytorch_side(built: BuiltModel, cases: list[Case]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each case's feed for the runtime (copied before forward: a model may change its
    inputs) and PyTorch's outputs on it."""
    feeds = [{name: as_numpy(t) for name, t in inputs.items()} for _, inputs, _, _, _ in cases]
    stage("verify: PyTorch's outputs")
    references = [{k: v.detach().cpu() for k, v in built.forward(inputs).items()} for _, inputs, _, _, _ in cases]
    return feeds, references


@dataclass(frozen=True)
class Labelled:
    """A case's labels (output name -> targets), and which outputs have labels in any case."""

    labels: dict[str, Any] = field(default_factory=dict)
    outputs: frozenset[str] = frozenset()
    source: str = ""


def run_case(
    built: BuiltModel, exporter: Exporter, runner: Runner, sizes: dict[str, int], feed: dict[str, Any], reference: dict[str, Any],
    seed: int, rtol: ToleranceOption, atol: ToleranceOption, tolerances: dict[str, dict[str, float]],
    acceptance: Acceptance | None = None, deadline: float | None = None, timeout: float | None = None,
    labelled: Labelled = Labelled(),
) -> CaseResult:
    """One case: the exported model on ``feed`` against PyTorch's ``reference`` outputs, every
    output compared. ``labelled.source``: the user's file the inputs came from (named in every
    failure), else generated."""
    import numpy as np
    import torch

    arch = built.arch
    source = labelled.source or None
    label = f"{source} ({case_label(sizes)})" if source else case_label(sizes)
    log.debug("running %s on %s", exporter.name, case_label(sizes))
    try:
        with quiet_exporter():
            got = run_stoppable(runner, feed, deadline, timeout)
    except VerificationFailed:  # timed out: no later case may run either
        raise
    except Exception as exc:  # noqa: BLE001 - a runtime that rejects a shape is a failed case

        return CaseResult(dict(sizes), {}, [f"{label}: {runner.info.runtime or exporter.name} raised {one_line(exc)}"])
    generator = torch.Generator().manual_seed(seed)
    outputs: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for spec in arch.outputs:
        ref = reference[spec.name]
        dtype = dtype_text(ref.dtype)
        tol = tolerance_for(arch, built.device, dtype, rtol, atol, spec.name)
        tolerances[spec.name] = {"rtol": tol.rtol, "atol": tol.atol} if tol else {"rtol": 0.0, "atol": 0.0}
        if spec.name not in got:
            failures.append(f"{label}: output {spec.name!r} is missing from the exported model")
            continue
        cand = np.asarray(got[spec.name])
        nan_rows = torch_nan_rows(ref)
        target, metrics, problems = labelled_scores(spec, ref, cand, labelled, acceptance)
        if acceptance is not None and tol is not None:
            stats, found = accept_output(spec, ref, cand, acceptance, generator, target, spec.name not in labelled.outputs)
        else:
            stats, found = compare_output(spec, ref, cand, tol, generator, target, loss=not nan_rows)
        if nan_rows:  # the model's own NaN: no loss or divergence can blame the export for it
            found.insert(0, torch_nan_failure(spec.name, nan_rows, len(ref) if ref.dim() else 1, source))
            if stats is not None:
                stats["torch_nan_rows"] = nan_rows[:100]
        failures.extend(f"{label}: {problem}" for problem in [*found, *problems])
        if stats is not None:
            outputs[spec.name] = {**stats, **({"metrics": metrics} if metrics else {})}
    return CaseResult(dict(sizes), outputs, failures)


SAMPLE_INPUTS_GUIDE = "docs/plugins.md#realistic-inputs-sample_inputs"


def torch_nan_rows(reference: Any) -> list[int]:
    """Rows (first axis) where PyTorch's own output has a NaN."""
    import torch

    if not reference.is_floating_point() or not bool(torch.isnan(reference).any()):
        return []
    if reference.dim() == 0:
        return [0]
    return [int(i) for i in torch.isnan(reference).reshape(len(reference), -1).any(dim=1).nonzero().flatten()]


def torch_nan_failure(output: str, rows: list[int], total: int, source: str | None) -> str:
    shown = ", ".join(map(str, rows[:8])) + (f" (+{len(rows) - 8} more)" if len(rows) > 8 else "")
    remedy = (
        "check the file's values (a padding mask with no real token, say)" if source else
        f"the generated inputs are not realistic there: give the architecture sample_inputs that make realistic ones ({SAMPLE_INPUTS_GUIDE})"
    )
    return (f"PyTorch itself returns NaN in {output!r} on row(s) {shown} of {total}: the model, not the export, "
            f"gives NaN on these inputs; {remedy}")


def torch_nan_only(case: CaseResult) -> bool:
    """Every failing output is NaN in PyTorch itself: nothing for a divergence search to find."""
    failing = [stats for stats in case.outputs.values() if not stats.get("ok", True) or stats.get("torch_nan_rows")]
    return bool(failing) and all(stats.get("torch_nan_rows") for stats in failing)


def labelled_scores(
    spec: Any, ref: Any, cand: Any, labelled: Labelled, acceptance: Acceptance | None
) -> tuple[Any, dict[str, Any], list[str]]:
    """With labels for ``spec`` in this case: the loss target, the metrics of both sides
    (``zoo.verification.metrics``) and, for a variant, the metrics that fell too far."""
    from zoo.verification.acceptance import accept_metrics
    from zoo.verification.metrics import compare_scores, label_target, task_metrics

    if spec.name not in labelled.labels or cand.shape != tuple(ref.shape):  # a shape mismatch fails on its own
        return None, {}, []
    labels = labelled.labels[spec.name]
    try:
        target = label_target(spec, labels, ref)
        drops = acceptance.metric_drops([m.name for m in task_metrics(spec)[1]]) if acceptance is not None else None
        metrics = compare_scores(spec, ref, cand, labels, drops)
    except (ValueError, RuntimeError) as exc:  # labels that do not fit an output whose shape only the forward pass knew
        return None, {}, [f"labels {spec.name!r} do not fit the output of shape {list(ref.shape)}: {exc}"]
    return target, metrics, accept_metrics(spec, metrics, labelled.source) if acceptance is not None else []














def run_stoppable(runner: Runner, feed: dict[str, Any], deadline: float | None, timeout: float | None) -> Any:
    """``runner(feed)`` in a worker thread, so that a deadline or Ctrl-C can stop it:
    while onnxruntime runs, the main thread would not even see Ctrl-C. Stopping
    calls the runner's ``abort()`` (onnxruntime's ``RunOptions.terminate``), if it
    has one; a runner without one is left behind in its daemon thread."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = runner.run(feed)
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


STOP_WAIT_S = 5.0  # how long a stopped runtime call may take to notice


def _stop(runner: Runner, thread: threading.Thread) -> None:
    runner.abort()
    if runner.abortable:
        thread.join(STOP_WAIT_S)  # onnxruntime checks the flag between kernels (a Loop's body may not)
    if thread.is_alive():  # still in native code: the program ends without tearing it down
        interrupts.abandoned_native_call()
        return
    runner.close()


class Loading:
    """Loading a file (session creation, with its constant folding) as a call
    ``run_stoppable`` can put under ``--timeout``: it cannot be aborted, only left."""

    abortable = False

    def __init__(self, load: Callable[[], Runner]) -> None:
        self.load = load

    def run(self, _feed: Any) -> Runner:
        return self.load()

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


def verify_on_runtimes(
    built: BuiltModel, exporter: Exporter, path: Any, runtimes: Sequence[RuntimeChoice], static: bool,
    rtol: ToleranceOption = None, atol: ToleranceOption = None, **options: Any,
) -> list[Verification]:
    """``verify_files`` once per runtime, in order; a runtime that fails at tolerance
    is rerun under its precise settings and its verification says what that showed."""
    verifications = []
    before_load = options.pop("before_load", None)  # once: the file's checks, and maybe freeing PyTorch's weights
    for index, choice in enumerate(runtimes or [RuntimeChoice(None)]):
        verification = verify_files(
            built, exporter, path, static, rtol, atol, runtime=choice, before_load=before_load if index == 0 else None, **options
        )
        if options.get("acceptance") is None and not built.released:  # a rerun needs PyTorch's weights
            verification.diagnosis = diagnose(
                choice, verification, lambda precise: verify_files(built, exporter, path, static, rtol, atol, runtime=precise, **options)
            )
        verifications.append(verification)
    return verifications
