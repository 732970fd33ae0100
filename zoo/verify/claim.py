"""A weight set's claimed metric, re-scored on PyTorch, the exported file and any variant.

The evaluation set is an ``.npz`` pinned by sha256: one key per model input and
``labels``. It is read with ``allow_pickle=False`` and refused past
``MAX_EVAL_BYTES`` unpacked. This module is also zoo's scorer (accuracy, RMSE,
MAE), the smallest one the claim needs: accuracy is argmax against class
indices for a multiclass output, else the 0/1 decision at the head's threshold
(0.5 after a sigmoid, 0 for logits) against 0/1 labels, per value.
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
from zoo.spec.weights import MetricClaim, Weights
from zoo.verify.runtimes import RuntimeChoice, load_runner

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
    scores: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


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


def score(metric: str, output: Output, prediction: Any, labels: Any) -> float:
    """``metric`` of ``prediction`` (numpy) against ``labels``."""
    import numpy as np

    prediction = np.asarray(prediction, dtype=np.float64)
    if metric == "accuracy":
        if output.task == "multiclass":
            decided = prediction.argmax(axis=-1)
        else:
            decided = (prediction > (0.5 if output.head == "sigmoid" else 0.0)).astype(np.int64)
        labels = np.asarray(labels)
        if labels.size != decided.size:
            raise UsageError(f"labels hold {labels.size:,} values for {decided.size:,} decisions of output {output.name!r}")
        return float((decided == labels.reshape(decided.shape)).mean())
    labels = np.asarray(labels, dtype=np.float64)
    if labels.size != prediction.size:
        raise UsageError(f"labels hold {labels.size:,} values for {prediction.size:,} of output {output.name!r}")
    error = prediction - labels.reshape(prediction.shape)
    return float(np.sqrt(np.mean(error**2))) if metric == "rmse" else float(np.mean(np.abs(error)))


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
    rows, size = len(labels), batch or CHUNK_ROWS
    result = ClaimResult(
        entry.name, claim.metric, claim.value, claim.tolerance, claim.eval_set.name, claim.eval_set.sha256, output.name, rows
    )
    dtypes = {inp.name: getattr(torch, inp.dtype) for inp in built.arch.inputs}

    def run_torch(feed: dict[str, Any]) -> dict[str, Any]:
        tensors = {k: torch.from_numpy(v.copy()).to(built.device, dtypes[k]) for k, v in feed.items()}
        return {k: t.detach().cpu().float().numpy() for k, t in built.forward(tensors).items()}

    try:
        result.scores["torch"] = score(claim.metric, output, predictions(run_torch, inputs, output.name, rows, size), labels)
    except UsageError as exc:
        raise UsageError(f"{what}: {exc}; tell the plugin's authors") from None
    for label, path in files.items():
        runner = load_runner(exporter, RuntimeChoice(None), path, built.device)
        try:
            with quiet_exporter():
                result.scores[label] = score(claim.metric, output, predictions(runner, inputs, output.name, rows, size), labels)
        finally:
            runner.close()
    for label, value in result.scores.items():
        if not claim.met_by(value):
            result.failures.append(
                f"weight set {entry.name!r} claims {claim.metric} {claim.show(claim.value)} on the {claim.eval_set.name}, "
                f"but {'PyTorch' if label == 'torch' else f'the {label} file'} reaches {claim.show(value)} "
                f"(tolerance {claim.show(claim.tolerance)})"
            )
    return result
