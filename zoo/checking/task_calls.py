"""Losses per task: PyTorch's loss, and the same loss in closed form with numpy.

The tasks themselves are ``zoo.Task`` objects plugins register (the built-in
ones in ``zoo.plugins.tasks``); the functions here find an output's task and
call it, with the clipping rules and head checks every task shares.

Every task function is plugin code: it runs through ``call_plugin`` (its prints on
stderr, its exceptions and ``sys.exit()`` one line naming the task and its plugin),
and what it returns is checked before zoo uses it.

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
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.host.plugin_calls import call_plugin
from zoo.spec.architecture import DEFAULT_TOLERANCES, FLOAT_DTYPES, Tolerance
from zoo.spec.registry import Registry
from zoo.spec.task import TINY, HeadCheck
from zoo.text import shorten

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
    import torch

    shape = tuple(prediction.shape)
    target = call_task(
        output, "make_target", output, prediction.detach().cpu(), generator,
        check=lambda t: None if isinstance(t, torch.Tensor) and tuple(t.shape) == shape else f"{described(t)}, not a tensor of shape {list(shape)}",
    )
    return target.to(device=prediction.device, dtype=prediction.dtype)


def torch_loss(output: Output, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The framework loss for the task, applied without a second activation."""
    import torch

    return call_task(
        output, "torch_loss", output, prediction, target,
        check=lambda loss: None if isinstance(loss, torch.Tensor) and loss.numel() == 1 else f"{described(loss)}, not a one-element tensor",
    )


def closed_form_loss(output: Output, prediction: np.ndarray, target: np.ndarray, dtype: str | None = None) -> float:
    """The same loss written out with numpy in float64, clipping logs as ``torch_loss``
    does. ``dtype`` is the dtype the model computed in (default: ``prediction``'s)."""
    name = dtype_name(prediction, dtype)
    y = np.asarray(prediction, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    # Saturated outputs take log(0): clipped, and never a RuntimeWarning on the terminal.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return float(call_task(output, "closed_form_loss", output, y, t, name, check=not_a_number))


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
        return float(call_task(output, "loss_slack", output, y, t, rtol, atol, dtype_name(reference, dtype), check=not_a_number))


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
            checks.extend(call_task(output, "head_checks", output, y, dtype_name(prediction, dtype), check=not_head_checks))
    return checks


def agreement(output: Output, reference: np.ndarray, candidate: np.ndarray, rtol: float, atol: float) -> tuple[str, float] | None:
    """Fraction of decisions two runtimes agree on, by the task (argmax for
    multiclass, threshold for binary and multilabel); ``None`` if it has none.

    Decisions within ``2*(atol + rtol*|ref|)`` of flipping are left out: a
    difference inside the tolerance may legitimately flip them.
    """
    counted = decision_counts(output, reference, candidate, rtol, atol)
    return None if counted is None else (counted[0], counted[1])


def decision_counts(
    output: Output, reference: np.ndarray, candidate: np.ndarray, rtol: float, atol: float
) -> tuple[str, float, int | None, int | None] | None:
    """``agreement``, with how many decisions it counted of all where the task says
    (``None, None`` where it does not): the rest were within the margin, ties."""
    measure = task_of(output).agreement if output.task is not None else None
    if measure is None:
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        ref, cand = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
        got = call_task(output, "agreement", output, ref, cand, rtol, atol, check=not_an_agreement)
    if got is None:
        return None
    return (got[0], got[1], *(tuple(got[2:4]) if len(got) >= 4 else (None, None)))


def task_stats(output: Output, reference: np.ndarray, candidate: np.ndarray, rtol: float, atol: float) -> dict[str, float]:
    """The task's further report numbers (multilabel: ``exact_match``)."""
    stats = task_of(output).stats if output.task is not None else None
    if stats is None:
        return {}
    with np.errstate(invalid="ignore", over="ignore"):
        ref, cand = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
        return dict(call_task(output, "stats", output, ref, cand, rtol, atol, check=not_stats))


def call_task(output: Output, name: str, *args: Any, check: Callable[[Any], str | None]) -> Any:
    """The task function ``name`` of ``output``'s task, as guarded plugin code."""
    task = task_of(output)
    return call_plugin(getattr(task, name), *args, what=f"task {task.name!r} (plugin {task.plugin!r}): {name}", check=check)


def described(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {list(shape)}" if shape is not None else shorten(repr(value), 60)


def _real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def not_a_number(value: Any) -> str | None:
    """A loss or a slack: one real number (NaN and infinity are results the checks judge)."""
    return None if _real(value) or (isinstance(value, np.ndarray) and value.size == 1 and _real(value.item())) else f"{described(value)}, not a number"


def not_an_agreement(value: Any) -> str | None:
    """``None``, ``(kind, fraction)`` with a fraction from 0 to 1 (NaN agrees with nothing and is
    refused), or that with the decisions counted and the rows (``(kind, fraction, counted, rows)``)."""
    if value is None:
        return None
    if (
        isinstance(value, tuple) and len(value) in (2, 4) and isinstance(value[0], str) and _real(value[1])
        and 0 <= float(value[1]) <= 1
        and all(n is None or isinstance(n, (int, np.integer)) and n >= 0 for n in value[2:])
    ):
        return None
    return f"{described(value)}, not None, (kind, fraction) with a fraction from 0 to 1, or (kind, fraction, counted, rows)"


def not_stats(value: Any) -> str | None:
    if isinstance(value, Mapping) and all(isinstance(k, str) and _real(v) for k, v in value.items()):
        return None
    return f"{described(value)}, not a dict of names to numbers"


def not_head_checks(value: Any) -> str | None:
    if isinstance(value, (list, tuple)) and all(isinstance(item, HeadCheck) for item in value):
        return None
    return f"{described(value)}, not a list of zoo.HeadCheck"
