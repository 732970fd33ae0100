"""Losses per task: PyTorch's loss, and the same loss in closed form with numpy.

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

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from zoo.records import Record
from zoo.spec import DEFAULT_TOLERANCES, FLOAT_DTYPES, TASK_HEADS, Tolerance

if TYPE_CHECKING:
    import torch

    from zoo.spec import Output

LOG_FLOOR = -100.0  # PyTorch's binary_cross_entropy clamps log terms here
# Smallest normal number per float dtype (numpy has no bfloat16, so a table).
TINY = {"float16": 2.0**-14, "bfloat16": 2.0**-126, "float32": 2.0**-126, "float64": 2.0**-1022}
# The framework's loss (computed in the output's dtype) against the float64 closed
# form: the rounding of one dtype, as DEFAULT_TOLERANCES bounds it, so its values.
# CPU rows on every device: the closed form is the same float64 reference there.
LOSS_TOLERANCES: dict[str, Tolerance] = {
    dtype: DEFAULT_TOLERANCES.get(("cpu", dtype)) or DEFAULT_TOLERANCES[("*", dtype)] for dtype in FLOAT_DTYPES
}
# Softmax rows' |sum - 1| by the output's dtype: a bound of its own (a sum of many terms).
SUM_TOLERANCES = {"float64": 1e-4, "float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}


def dtype_name(array: np.ndarray | None = None, dtype: str | None = None) -> str:
    """``dtype`` when given, else the array's (float32 for non-float arrays)."""
    if dtype is not None:
        return dtype.removeprefix("torch.")
    name = str(np.asarray(array).dtype)
    return name if name in TINY else "float32"


def log_floor(dtype: str) -> float:
    """The lowest log-probability of a softmax head in ``dtype`` (see the module docstring)."""
    return max(float(np.log(TINY.get(dtype, TINY["float32"]))), LOG_FLOOR)


def losses_agree(a: float, b: float, rtol: float, atol: float) -> bool:
    """Two losses agree when both are finite and close, or both the same infinity; NaN never agrees."""
    if math.isnan(a) or math.isnan(b):
        return False
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(a)


def loss_name(output: Output) -> str:
    return TASK_HEADS[(output.task, output.head)]  # Output refused any other pair


def make_target(output: Output, prediction: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random target for ``prediction``: 0/1 labels, one-hot classes, or normal values."""
    import torch

    shape = prediction.shape
    if output.task == "binary":
        target = torch.randint(0, 2, shape, generator=generator).to(torch.float32)
    elif output.task == "multiclass":
        labels = torch.randint(0, shape[-1], shape[:-1], generator=generator)
        target = torch.nn.functional.one_hot(labels, shape[-1]).to(torch.float32)
    else:
        target = torch.randn(shape, generator=generator)
    return target.to(device=prediction.device, dtype=prediction.dtype)


def torch_loss(output: Output, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The framework loss for the task, applied without a second activation."""
    import torch
    import torch.nn.functional as F

    head = output.head
    if output.task == "binary":
        if head == "sigmoid":
            return F.binary_cross_entropy(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)
    if output.task == "multiclass":
        classes = prediction.shape[-1]
        if head in ("softmax", "log_softmax"):
            # The model already normalised: take log-probabilities, never a second softmax.
            if head == "softmax":
                tiny = torch.finfo(prediction.dtype).tiny
                log_p = prediction.clamp_min(tiny).log().clamp_min(LOG_FLOOR)
            else:
                log_p = prediction
            return F.nll_loss(log_p.reshape(-1, classes), target.reshape(-1, classes).argmax(-1))
        return F.cross_entropy(prediction.reshape(-1, classes), target.reshape(-1, classes))
    assert output.task == "regression", f"output {output.name!r} has no task, so no loss"  # callers skip those
    return F.mse_loss(prediction, target)


def closed_form_loss(output: Output, prediction: np.ndarray, target: np.ndarray, dtype: str | None = None) -> float:
    """The same loss written out with numpy in float64, clipping logs as ``torch_loss``
    does. ``dtype`` is the dtype the model computed in (default: ``prediction``'s)."""
    floor = log_floor(dtype_name(prediction, dtype))
    y = np.asarray(prediction, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    # Saturated outputs take log(0): clipped, and never a RuntimeWarning on the terminal.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if output.task == "multiclass" and output.head is None:
            m = y.max(axis=-1, keepdims=True)
            log_p = y - m - np.log(np.exp(y - m).sum(axis=-1, keepdims=True))
            return _reduce(output, _picked(t, -log_p))
        return _reduce(output, _terms(output, y, t, floor))


def _terms(output: Output, y: np.ndarray, t: np.ndarray, floor: float) -> np.ndarray:
    """Per-element loss terms of the losses that are a sum over elements (all but
    cross-entropy on logits); each term is monotonic or convex in its own output."""
    if output.task == "binary":
        if output.head == "sigmoid":
            log_y = np.maximum(np.log(y), LOG_FLOOR)
            log_1my = np.maximum(np.log1p(-y), LOG_FLOOR)
            return -(t * log_y + (1 - t) * log_1my)
        # log sigmoid(z) = -log(1 + e^-z), written stably
        return t * np.logaddexp(0, -y) + (1 - t) * np.logaddexp(0, y)
    if output.task == "multiclass":
        log_p = np.maximum(np.log(y), floor) if output.head == "softmax" else y
        return _picked(t, -log_p)
    assert output.task == "regression", f"output {output.name!r} has no task, so no loss"  # callers skip those
    return (y - t) ** 2


def _picked(t: np.ndarray, minus_log_p: np.ndarray) -> np.ndarray:
    # 0 * inf is NaN: classes the target does not pick contribute nothing
    return np.where(t != 0, t * minus_log_p, 0.0)


def _reduce(output: Output, terms: np.ndarray) -> float:
    """Mean over elements; for cross-entropy, the mean over rows of the sum over classes."""
    if output.task == "multiclass":
        return float(np.mean(np.sum(terms, axis=-1)))
    return float(np.mean(terms))


def loss_slack(output: Output, reference: np.ndarray, target: np.ndarray, rtol: float, atol: float, dtype: str | None = None) -> float:
    """How far the loss can move when every output moves within ``atol + rtol*|ref|``.

    Near saturation the loss is ill-conditioned: a probability of 1 - 6e-8 and one
    of exactly 1 agree within any float32 tolerance, yet their BCE terms are 16.6
    and 100. Comparing the losses of two runtimes needs this allowance on top of
    rounding; it is exact for element-wise terms (evaluated at the band's ends, and
    at the target for MSE), and a Lipschitz bound for cross-entropy on logits.
    """
    floor = log_floor(dtype_name(reference, dtype))
    y = np.asarray(reference, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    band = atol + rtol * np.abs(y)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if output.task == "multiclass" and output.head is None:
            # loss of a row = logsumexp(z) - z[target]: each moves at most by the band
            return float(np.mean(band.max(axis=-1) + np.sum(t * band, axis=-1)))
        low, high = y - band, y + band
        if output.head in ("sigmoid", "softmax"):  # probabilities stay in [0, 1]
            low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
        here = _terms(output, y, t, floor)
        ends = [_terms(output, low, t, floor), _terms(output, high, t, floor)]
        if output.task == "regression":
            ends.append(_terms(output, np.clip(t, low, high), t, floor))
        worst = np.maximum.reduce([np.abs(end - here) for end in ends])
        return _reduce(output, worst)


@dataclass
class HeadCheck(Record):
    output: str
    check: str
    ok: bool
    detail: str


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
    return checks


def agreement(output: Output, reference: np.ndarray, candidate: np.ndarray, rtol: float, atol: float) -> tuple[str, float] | None:
    """Fraction of decisions two runtimes agree on: argmax (multiclass), threshold (binary).

    Decisions within ``2*(atol + rtol*|ref|)`` of flipping are left out: a
    difference inside the tolerance may legitimately flip them. The margin is per
    row (per element for thresholds): with logits of 1e4, float32 rounding alone
    moves values by 1e-3, far past an absolute margin.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if output.task == "multiclass" and ref.shape[-1] > 1:
            top2 = np.sort(ref, axis=-1)[..., -2:]
            margin = 2 * (atol + rtol * np.abs(top2).max(axis=-1))
            decisive = (top2[..., 1] - top2[..., 0]) > margin
            same = ref.argmax(-1) == cand.argmax(-1)
            kind = "argmax"
        elif output.task == "binary":
            threshold = 0.5 if output.head == "sigmoid" else 0.0
            decisive = np.abs(ref - threshold) > 2 * (atol + rtol * np.abs(ref))
            same = (ref > threshold) == (cand > threshold)
            kind = "threshold"
        else:
            return None
    return kind, float(same[decisive].mean()) if decisive.any() else 1.0
