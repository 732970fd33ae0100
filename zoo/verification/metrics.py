"""Task metrics on labelled rows: scoring one model's outputs, and how a candidate's score moved from PyTorch's.

The metrics are the tasks' own (``zoo.Metric`` in ``Task.metrics``: accuracy,
RMSE...); this module flattens outputs and labels into rows, calls them, and
compares two runtimes on the same rows: the change, the decisions that flipped
(right→wrong, wrong→right), the label class whose accuracy moved most, and a
95% interval of the change from a paired bootstrap over rows (the same resampled
rows for both sides, so the interval is that of the change, not of each score).

``score`` is the entry point for code that only wants the numbers (a weight
set's claimed accuracy, re-scored)::

    from zoo.verification.metrics import score
    results = score(arch, {"probabilities": probs}, {"probabilities": classes})
    results["probabilities"].values["accuracy"]  # 0.961
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zoo.records import Record
from zoo.spec.architecture import Architecture, Output
from zoo.spec.task import Metric, Task

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0  # the interval is reproducible: the same rows give the same interval
INTERVAL = 0.95


@dataclass
class MetricResult(Record):
    """One output's metrics on labelled rows: ``values`` by metric name (``accuracy``: 0.961)."""

    output: str
    rows: int
    values: dict[str, float] = field(default_factory=dict)


def task_metrics(spec: Output) -> tuple[Task | None, tuple[Metric, ...]]:
    """The task of ``spec`` and its metrics (none for an output without a task)."""
    if spec.task is None:
        return None, ()
    from zoo.checking.task_calls import task_of

    task = task_of(spec)
    return task, task.metrics


def as_rows(spec: Output, prediction: Any, labels: Any) -> tuple[Any, Any]:
    """``prediction`` as float64 rows × its last dimension, ``labels`` as rows of the task's kind."""
    import numpy as np

    y = np.asarray(prediction, dtype=np.float64)
    y = y.reshape(-1, 1) if y.ndim <= 1 else y.reshape(-1, y.shape[-1])
    task, _ = task_metrics(spec)
    t = np.asarray(labels)
    if task is not None and task.labels == "class":
        return y, t.reshape(-1).astype(np.int64)
    return y, t.astype(np.float64).reshape(y.shape)


def score(arch: Architecture, outputs_by_name: Mapping[str, Any], labels_by_name: Mapping[str, Any]) -> dict[str, MetricResult]:
    """Every metric of every output that has labels: ``{output name: MetricResult}``.
    ``outputs_by_name``: arrays (or tensors) as the model returns them, batch first;
    ``labels_by_name``: the labels, as ``--inputs`` files hold them (see the README)."""
    results = {}
    for spec in arch.outputs:
        if spec.name not in labels_by_name or spec.name not in outputs_by_name:
            continue
        y, t = as_rows(spec, to_numpy(outputs_by_name[spec.name]), labels_by_name[spec.name])
        results[spec.name] = MetricResult(spec.name, len(t), _compute_all(spec, y, t))
    return results


def metric_scores(spec: Output, prediction: Any, labels: Any) -> dict[str, float]:
    """Every metric of ``spec``'s task on one output's ``prediction`` against ``labels``."""
    return _compute_all(spec, *as_rows(spec, to_numpy(prediction), labels))


def _compute_all(spec: Output, y: Any, t: Any) -> dict[str, float]:
    _, metrics = task_metrics(spec)
    with _quiet():
        return {m.name: float(m.compute(spec, y, t)) for m in metrics}


def compare_scores(spec: Output, reference: Any, candidate: Any, labels: Any, max_drop: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Each metric of ``spec`` on PyTorch's outputs (``reference``) and the candidate's,
    with the change, its interval, the flips and the class that moved most; ``ok``
    False where a metric fell further below PyTorch's than its allowed drop
    (``max_drop`` by metric name, else the metric's own default; ``None``: not judged)."""
    _, metrics = task_metrics(spec)
    ref, t = as_rows(spec, to_numpy(reference), labels)
    cand, _ = as_rows(spec, to_numpy(candidate), labels)
    allowed = dict(max_drop or {})
    found: dict[str, Any] = {}
    with _quiet():
        for metric in metrics:
            found[metric.name] = metric_change(spec, metric, ref, cand, t, allowed.get(metric.name, metric.max_drop))
    return found


def metric_change(spec: Output, metric: Metric, ref: Any, cand: Any, labels: Any, allowed: float | None) -> dict[str, Any]:
    torch_value = float(metric.compute(spec, ref, labels))
    value = float(metric.compute(spec, cand, labels))
    drop = metric.drop(torch_value, value)
    low, high = bootstrap_change(spec, metric, ref, cand, labels)
    record: dict[str, Any] = {
        "torch": torch_value, "candidate": value, "change": value - torch_value, "interval": [low, high],
        "rows": int(len(labels)), "higher_is_better": metric.higher_is_better, "relative": metric.relative,
        "percent": metric.percent, "drop": drop, "max_drop": allowed, "ok": allowed is None or drop <= allowed + 1e-12,
    }
    if metric.correct is not None:
        record.update(flips(spec, metric, ref, cand, labels))
    return record


def flips(spec: Output, metric: Metric, ref: Any, cand: Any, labels: Any) -> dict[str, Any]:
    """Rows decided right by PyTorch and wrong by the candidate, and the reverse;
    with class labels, the class whose accuracy changed most."""
    import numpy as np

    right_ref = np.asarray(metric.correct(spec, ref, labels), dtype=bool).reshape(-1)
    right_cand = np.asarray(metric.correct(spec, cand, labels), dtype=bool).reshape(-1)
    found: dict[str, Any] = {
        "right_to_wrong": int((right_ref & ~right_cand).sum()),
        "wrong_to_right": int((~right_ref & right_cand).sum()),
    }
    classes = labels.reshape(-1) if labels.ndim == 1 or labels.shape[-1] == 1 else None
    if classes is not None and classes.size == right_ref.size:
        worst = None
        for value in np.unique(classes):
            rows = classes == value
            change = float(right_cand[rows].mean() - right_ref[rows].mean())
            if worst is None or abs(change) > abs(worst["change"]):
                label = int(value) if float(value).is_integer() else float(value)
                worst = {"class": label, "torch": float(right_ref[rows].mean()), "candidate": float(right_cand[rows].mean()),
                         "change": change, "rows": int(rows.sum())}
        found["most_changed_class"] = worst
    return found


def bootstrap_change(spec: Output, metric: Metric, ref: Any, cand: Any, labels: Any) -> tuple[float, float]:
    """The 95% percentile interval of (candidate - PyTorch) over rows resampled with replacement, paired."""
    import numpy as np

    rows = len(labels)
    if rows < 2:
        change = float(metric.compute(spec, cand, labels) - metric.compute(spec, ref, labels))
        return change, change
    generator = np.random.default_rng(BOOTSTRAP_SEED)
    changes = np.empty(BOOTSTRAP_RESAMPLES)
    for i in range(BOOTSTRAP_RESAMPLES):
        pick = generator.integers(0, rows, rows)
        changes[i] = metric.compute(spec, cand[pick], labels[pick]) - metric.compute(spec, ref[pick], labels[pick])
    finite = changes[np.isfinite(changes)]
    if not finite.size:
        return math.nan, math.nan
    tail = (1 - INTERVAL) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def label_target(spec: Output, labels: Any, like: Any) -> Any:
    """The loss target for ``labels`` (a tensor shaped and typed like ``like``, PyTorch's
    output): class indices one-hot, 0/1 labels and values as they are."""
    import numpy as np
    import torch

    task, _ = task_metrics(spec)
    values = torch.from_numpy(np.ascontiguousarray(labels))
    if task is not None and task.labels == "class":
        target = torch.nn.functional.one_hot(values.long(), like.shape[-1])
    else:
        target = values.reshape(like.shape)
    return target.to(device=like.device, dtype=like.dtype)


def to_numpy(value: Any) -> Any:
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = value.float() if str(value.dtype) == "torch.bfloat16" else value
        value = value.numpy()
    return np.asarray(value)


class _quiet:
    """A metric over saturated or empty rows may divide by zero: the value says so, no warning on the terminal."""

    def __enter__(self) -> None:
        import numpy as np

        self._state = np.seterr(all="ignore")

    def __exit__(self, *exc: Any) -> None:
        import numpy as np

        np.seterr(**self._state)
