"""A weight set's claimed metric, re-scored on PyTorch, the exported file and any variant.

The evaluation set is an ``.npz`` pinned by sha256: one key per model input and
``labels``. It is read with ``allow_pickle=False`` and refused past
``MAX_EVAL_BYTES`` unpacked. The claim names one of its
output's task metrics (``Task.metrics``: accuracy, RMSE...), scored by
``zoo.verification.metrics`` as every labelled comparison is.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.build.model import BuiltModel
from zoo.errors import UsageError
from zoo.host.plugin_calls import quiet_exporter
from zoo.records import Record
from zoo.spec.architecture import Output
from zoo.spec.task import Metric
from zoo.spec.weights import MetricClaim, Weights
from zoo.verification.metrics import metric_scores, task_metrics
from zoo.verification.runtimes import RuntimeChoice, load_runner

MAX_EVAL_BYTES = 256 << 20
CHUNK_ROWS = 64  # a batch size every verification already ran


@dataclass
class ClaimResult(Record):
    """The claim and what each runtime scored (``scores``: runtime -> value)."""

    weights: str
    metric: str
    claimed: float
    tolerance: float
    eval_set: str
    eval_sha256: str
    output: str
    rows: int
    higher_is_better: bool = True
    percent: bool = False  # shown as a percentage
    scores: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def met_by(self, value: float) -> bool:
        if self.higher_is_better:
            return value >= self.claimed - self.tolerance
        return value <= self.claimed + self.tolerance

    def show(self, value: float) -> str:
        """``96.1%`` for an accuracy, ``0.412`` for an error."""
        return f"{value:.1%}" if self.percent else f"{value:.4g}"


def load_eval_set(path: Path, built: BuiltModel, what: str) -> tuple[dict[str, Any], Any]:
    """The inputs (numpy, in declared order and dtype) and labels of an evaluation set."""
    import numpy as np

    arch = built.arch
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > MAX_EVAL_BYTES:
            raise UsageError(f"{what} unpacks to {unpacked:,} bytes, over the {MAX_EVAL_BYTES:,} zoo scores on")
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UsageError(f"{what} is not an .npz of plain arrays ({exc})") from exc
    declared = [inp.name for inp in arch.inputs]
    if sorted(arrays) != sorted([*declared, "labels"]):
        raise UsageError(f"{what} has keys {', '.join(sorted(arrays))}; it needs {', '.join(declared)} and labels")
    rows = {len(a) if a.ndim else -1 for a in arrays.values()}
    if len(rows) != 1 or rows == {0} or rows == {-1}:
        raise UsageError(f"{what}: its arrays must have the same number of rows (at least one)")
    if any(a.dtype.kind not in "biuf" for a in arrays.values()):
        raise UsageError(f"{what}: its arrays must hold numbers (bool, integer or float)")
    inputs = {inp.name: np.ascontiguousarray(arrays[inp.name], dtype=inp.dtype) for inp in arch.inputs}
    return inputs, arrays["labels"]


def claimed_metric(output: Output, claim: MetricClaim, what: str) -> Metric:
    """The task metric ``claim`` names on ``output`` (its direction and how it is shown)."""
    _, metrics = task_metrics(output)
    found = next((m for m in metrics if m.name == claim.metric), None)
    if found is None:
        scored = ", ".join(m.name for m in metrics) or "no metric"
        raise UsageError(f"{what} claims {claim.metric}, but output {output.name!r} ({output.task or 'no task'}) scores {scored}; tell the plugin's authors")
    return found


def score(metric: Metric, output: Output, prediction: Any, labels: Any) -> float:
    """``metric`` of ``prediction`` (numpy, batch first) against ``labels``, by the task's own metric."""
    import numpy as np

    rows, labelled = len(prediction), len(np.asarray(labels))
    if rows != labelled:
        raise UsageError(f"labels hold {labelled:,} rows for {rows:,} of output {output.name!r}")
    return metric_scores(output, prediction, labels)[metric.name]


def chunks(inputs: dict[str, Any], rows: int, size: int) -> Any:
    """``inputs`` in batches of ``size`` rows, the last padded with its last row (static files)."""
    import numpy as np

    for start in range(0, rows, size):
        part = {k: v[start : start + size] for k, v in inputs.items()}
        short = size - len(next(iter(part.values())))
        if short:
            part = {k: np.concatenate([v, np.repeat(v[-1:], short, axis=0)]) for k, v in part.items()}
        yield part, size - short


def predictions(run: Any, inputs: dict[str, Any], name: str, rows: int, size: int) -> Any:
    import numpy as np

    parts = []
    for part, keep in chunks(inputs, rows, size):
        parts.append(np.asarray(run(part)[name])[:keep])
    return np.concatenate(parts)


def score_claim(
    built: BuiltModel, entry: Weights, eval_path: Path, exporter: Any, files: dict[str, Path], batch: int | None = None
) -> ClaimResult:
    """Score ``entry``'s claim on PyTorch and on each of ``files`` (runtime label -> file)."""
    import torch

    claim: MetricClaim = entry.claim  # type: ignore[assignment]
    what = f"evaluation set {claim.eval_set.name!r} of weight set {entry.name!r}"
    inputs, labels = load_eval_set(eval_path, built, what)
    output = next((o for o in built.arch.outputs if o.name == claim.output), built.arch.outputs[0])
    metric = claimed_metric(output, claim, what)
    rows, size = len(labels), batch or CHUNK_ROWS
    result = ClaimResult(
        entry.name, claim.metric, claim.value, claim.tolerance, claim.eval_set.name, claim.eval_set.sha256, output.name, rows,
        metric.higher_is_better, metric.percent,
    )
    dtypes = {inp.name: getattr(torch, inp.dtype) for inp in built.arch.inputs}

    def run_torch(feed: dict[str, Any]) -> dict[str, Any]:
        tensors = {k: torch.from_numpy(v.copy()).to(built.device, dtypes[k]) for k, v in feed.items()}
        return {k: t.detach().cpu().float().numpy() for k, t in built.forward(tensors).items()}

    try:
        result.scores["torch"] = score(metric, output, predictions(run_torch, inputs, output.name, rows, size), labels)
    except UsageError as exc:
        raise UsageError(f"{what}: {exc}; tell the plugin's authors") from None
    for label, path in files.items():
        runner = load_runner(exporter, RuntimeChoice(None), path, built.device)
        try:
            with quiet_exporter():
                result.scores[label] = score(metric, output, predictions(runner, inputs, output.name, rows, size), labels)
        finally:
            runner.close()
    for label, value in result.scores.items():
        if not result.met_by(value):
            result.failures.append(
                f"weight set {entry.name!r} claims {claim.metric} {result.show(claim.value)} on the {claim.eval_set.name}, "
                f"but {'PyTorch' if label == 'torch' else f'the {label} file'} reaches {result.show(value)} "
                f"(tolerance {result.show(claim.tolerance)})"
            )
    return result
