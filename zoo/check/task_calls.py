"""Losses per task: PyTorch's loss, and the same loss in closed form with numpy.

The tasks themselves are ``zoo.Task`` objects plugins register (the built-in
ones in ``zoo.plugins.tasks``); the functions here find an output's task and
call it, with the clipping rules and head checks every task shares.

The closed form is computed independently in float64 from the outputs, so a
check that the two agree catches a wrong loss wiring (a second softmax on
probabilities, BCE on logits) as well as numerical trouble.

Saturated outputs are normal for a confident trained model: a float32 sigmoid
or softmax rounds to exactly 0 or 1. Both forms clip logarithms the way
PyTorch's own losses do, so such a model has a finite loss on both sides:

- ``binary_cross_entropy`` clamps each log term at -100 (PyTorch's rule);
- a softmax head's probabilities are floored at the smallest normal number of
  the output dtype before the log (its reciprocal, the gradient, stays finite),
  and the log-probability at -100 like BCE.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from zoo.spec.architecture import DEFAULT_TOLERANCES, FLOAT_DTYPES, Tolerance
from zoo.spec.registry import Registry
from zoo.spec.task import TINY, HeadCheck

if TYPE_CHECKING:
    import torch

    from zoo.spec.architecture import Output
    from zoo.spec.task import Task

# The framework's loss (computed in the output's dtype) against the float64 closed
# form: the rounding of one dtype, as DEFAULT_TOLERANCES bounds it, so its values.
# CPU rows on every device: the closed form is the same float64 reference there.
LOSS_TOLERANCES: Mapping[str, Tolerance] = MappingProxyType({
    dtype: DEFAULT_TOLERANCES.get(("cpu", dtype)) or DEFAULT_TOLERANCES[("*", dtype)] for dtype in FLOAT_DTYPES
})
# Softmax rows' |sum - 1| by the output's dtype: a bound of its own (a sum of many terms).
SUM_TOLERANCES = MappingProxyType({"float64": 1e-4, "float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2})


def dtype_name(array: np.ndarray | None = None, dtype: str | None = None) -> str:
    """``dtype`` when given, else the array's (float32 for non-float arrays)."""
    if dtype is not None:
        return dtype.removeprefix("torch.")
    name = str(np.asarray(array).dtype)
    return name if name in TINY else "float32"


def losses_agree(a: float, b: float, rtol: float, atol: float) -> bool:
    """Two losses agree when both are finite and close, or both the same infinity; NaN never agrees."""
    if math.isnan(a) or math.isnan(b):
        return False
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(a)


@functools.cache
def builtin_tasks() -> Registry[Task]:
    """The tasks zoo's own task plugin registers, loaded by name like any plugin."""
    from zoo.host.manager import BUILTIN_TASK_PLUGIN, load_zoo  # a plugin load: only for an Output made outside a zoo

    return load_zoo(builtins=(BUILTIN_TASK_PLUGIN,), entry_points=False).tasks


def task_of(output: Output) -> Task:
    """The task of ``output``: the one resolved when its architecture was
    registered, else (an ``Output`` made outside a zoo) a built-in task."""
    task = output.resolved_task
    if task is None:
        task = builtin_tasks().get(output.task or "")
        if task is None:
            raise ValueError(f"output {output.name!r} has task {output.task!r}, which is not registered; register its architecture")
    return task


def loss_name(output: Output) -> str:
    return task_of(output).heads[output.head]  # registration refused any other head


def make_target(output: Output, prediction: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random target for ``prediction`` (the task's: 0/1 labels, one-hot classes, normal values...)."""
    target = task_of(output).make_target(output, prediction.detach().cpu(), generator)
    return target.to(device=prediction.device, dtype=prediction.dtype)


def torch_loss(output: Output, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The framework loss for the task, applied without a second activation."""
    return task_of(output).torch_loss(output, prediction, target)


def closed_form_loss(output: Output, prediction: np.ndarray, target: np.ndarray, dtype: str | None = None) -> float:
    """The same loss written out with numpy in float64, clipping logs as ``torch_loss``
    does. ``dtype`` is the dtype the model computed in (default: ``prediction``'s)."""
    name = dtype_name(prediction, dtype)
    y = np.asarray(prediction, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    # Saturated outputs take log(0): clipped, and never a RuntimeWarning on the terminal.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return float(task_of(output).closed_form_loss(output, y, t, name))


def loss_slack(output: Output, reference: np.ndarray, target: np.ndarray, rtol: float, atol: float, dtype: str | None = None) -> float:
    """How far the loss can move when every output moves within ``atol + rtol*|ref|``.

    Near saturation the loss is ill-conditioned: a probability of 1 - 6e-8 and one
    of exactly 1 agree within any float32 tolerance, yet their BCE terms are 16.6
    and 100. Comparing the losses of two runtimes needs this allowance on top of
    rounding. A task without a ``loss_slack`` gets none.
    """
    slack = task_of(output).loss_slack
    if slack is None:
        return 0.0
    y = np.asarray(reference, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return float(slack(output, y, t, rtol, atol, dtype_name(reference, dtype)))


def head_checks(output: Output, prediction: np.ndarray, dtype: str | None = None) -> list[HeadCheck]:
    """What the head promises: sigmoid in [0, 1], softmax rows on the simplex.

    A sigmoid output of exactly 0 or 1 is float rounding of a confident model,
    not a bug: it is counted in the detail. NaN or values outside [0, 1] fail.
    ``dtype`` is the dtype the model computed in (default: ``prediction``'s).
    """
    tolerance = SUM_TOLERANCES.get(dtype_name(prediction, dtype), SUM_TOLERANCES["float32"])
    y = np.asarray(prediction, dtype=np.float64)
    checks = []
    with np.errstate(over="ignore", invalid="ignore"):
        if output.head == "sigmoid":
            low, high = (float(y.min()), float(y.max())) if y.size else (0.5, 0.5)
            ok = bool(((y >= 0) & (y <= 1)).all())  # NaN compares False: fails
            detail = f"min {low:.4g}, max {high:.4g}"
            saturated = int(((y == 0) | (y == 1)).sum())
            if saturated:
                detail += f", {saturated} of {y.size} saturated to exactly 0 or 1"
            checks.append(HeadCheck(output.name, "sigmoid in [0,1]", ok, detail))
        elif output.head in ("softmax", "log_softmax"):
            p = np.exp(y) if output.head == "log_softmax" else y
            sums = p.sum(axis=-1)
            worst = float(np.abs(sums - 1).max()) if sums.size else 0.0
            in_range = bool((p >= 0).all() and (p <= 1).all())
            checks.append(
                HeadCheck(output.name, f"{output.head} rows sum to 1", worst < tolerance and in_range, f"max |sum-1| {worst:.2g}")
            )
    extra = task_of(output).head_checks if output.task is not None else None
    if extra is not None:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            checks.extend(extra(output, y, dtype_name(prediction, dtype)))
    return checks


def agreement(output: Output, reference: np.ndarray, candidate: np.ndarray, rtol: float, atol: float) -> tuple[str, float] | None:
    """Fraction of decisions two runtimes agree on, by the task (argmax for
    multiclass, threshold for binary and multilabel); ``None`` if it has none.

    Decisions within ``2*(atol + rtol*|ref|)`` of flipping are left out: a
    difference inside the tolerance may legitimately flip them.
    """
    measure = task_of(output).agreement if output.task is not None else None
    if measure is None:
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        return measure(output, np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64), rtol, atol)


def task_stats(output: Output, reference: np.ndarray, candidate: np.ndarray, rtol: float, atol: float) -> dict[str, float]:
    """The task's further report numbers (multilabel: ``exact_match``)."""
    stats = task_of(output).stats if output.task is not None else None
    if stats is None:
        return {}
    with np.errstate(invalid="ignore", over="ignore"):
        return dict(stats(output, np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64), rtol, atol))
