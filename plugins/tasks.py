"""The built-in tasks, registered through ``register_tasks`` like any plugin's.

Each loss is written twice: in PyTorch (``torch_loss``) and independently in
numpy float64 (``closed_form``), clipping logarithms as PyTorch does (see
``zoo.checking.task_calls``). The closed forms take float64 arrays; errors such as log(0)
are silenced by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import zoo
from zoo import LOG_FLOOR, Metric, Task, log_floor

if TYPE_CHECKING:
    import numpy as np

# numpy and torch are imported inside the functions: loading this plugin (every
# command, 'zoo list' too) imports neither.

# -- losses as a sum of per-element terms ------------------------------------------------------


def bce_terms(output: Any, y: np.ndarray, t: np.ndarray, floor: float) -> np.ndarray:
    import numpy as np

    if output.head == "sigmoid":
        log_y = np.maximum(np.log(y), LOG_FLOOR)
        log_1my = np.maximum(np.log1p(-y), LOG_FLOOR)
        return -(t * log_y + (1 - t) * log_1my)
    # log sigmoid(z) = -log(1 + e^-z), written stably
    return t * np.logaddexp(0, -y) + (1 - t) * np.logaddexp(0, y)


def nll_terms(output: Any, y: np.ndarray, t: np.ndarray, floor: float) -> np.ndarray:
    import numpy as np

    log_p = np.maximum(np.log(y), floor) if output.head == "softmax" else y
    return picked(t, -log_p)


def squared_terms(output: Any, y: np.ndarray, t: np.ndarray, floor: float) -> np.ndarray:
    return (y - t) ** 2


def picked(t: np.ndarray, minus_log_p: np.ndarray) -> np.ndarray:
    import numpy as np

    # 0 * inf is NaN: classes the target does not pick contribute nothing
    return np.where(t != 0, t * minus_log_p, 0.0)


def mean(terms: np.ndarray) -> float:
    import numpy as np

    return float(np.mean(terms))


def row_mean(terms: np.ndarray) -> float:
    """Cross-entropy: the mean over rows of the sum over classes."""
    import numpy as np

    return float(np.mean(np.sum(terms, axis=-1)))


Terms = Callable[..., Any]  # (output, y, t, floor) -> per-element terms


def closed_form(terms: Terms, reduce: Callable[[np.ndarray], float]) -> Callable[..., float]:
    def loss(output: Any, y: np.ndarray, t: np.ndarray, dtype: str) -> float:

        return reduce(terms(output, y, t, log_floor(dtype)))

    return loss


def band_slack(terms: Terms, reduce: Callable[[np.ndarray], float], at_target: bool = False) -> Callable[..., float]:
    """Exact for element-wise terms, each monotonic or convex in its own output:
    the worst change is at the band's ends (or, for MSE, at the target)."""

    def slack(output: Any, y: np.ndarray, t: np.ndarray, rtol: float, atol: float, dtype: str) -> float:
        import numpy as np


        floor = log_floor(dtype)
        band = atol + rtol * np.abs(y)
        low, high = y - band, y + band
        if output.head in ("sigmoid", "softmax"):  # probabilities stay in [0, 1]
            low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
        here = terms(output, y, t, floor)
        ends = [terms(output, low, t, floor), terms(output, high, t, floor)]
        if at_target:
            ends.append(terms(output, np.clip(t, low, high), t, floor))
        return reduce(np.maximum.reduce([np.abs(end - here) for end in ends]))

    return slack


# -- agreement -------------------------------------------------------------------------------


def threshold_decisions(output: Any, ref: np.ndarray, cand: np.ndarray, rtol: float, atol: float) -> tuple[np.ndarray, np.ndarray]:
    """Which elements are decisive (further than twice the tolerance from the
    threshold), and where both runtimes fall on the same side."""
    import numpy as np

    threshold = 0.5 if output.head == "sigmoid" else 0.0
    one_nan = np.isnan(ref) != np.isnan(cand)  # NaN on one side is a decision lost, never an agreement
    with np.errstate(invalid="ignore"):
        decisive = (np.abs(ref - threshold) > 2 * (atol + rtol * np.abs(ref))) | one_nan
        return decisive, ((ref > threshold) == (cand > threshold)) & ~one_nan


def threshold_agreement(output: Any, ref: np.ndarray, cand: np.ndarray, rtol: float, atol: float) -> tuple[str, float, int, int]:

    decisive, same = threshold_decisions(output, ref, cand, rtol, atol)
    return "threshold", float(same[decisive].mean()) if decisive.any() else 1.0, int(decisive.sum()), int(decisive.size)


def argmax_agreement(output: Any, ref: np.ndarray, cand: np.ndarray, rtol: float, atol: float) -> tuple[str, float, int, int] | None:
    """The margin is per row: with logits of 1e4, float32 rounding alone moves
    values by 1e-3, far past an absolute margin."""
    import numpy as np

    if ref.shape[-1] < 2:
        return None
    one_nan = np.isnan(ref).any(-1) != np.isnan(cand).any(-1)  # a row with NaN on one side lost its decision
    top2 = np.sort(ref, axis=-1)[..., -2:]
    with np.errstate(invalid="ignore"):
        decisive = ((top2[..., 1] - top2[..., 0]) > 2 * (atol + rtol * np.abs(top2).max(axis=-1))) | one_nan
    same = (ref.argmax(-1) == cand.argmax(-1)) & ~one_nan
    return "argmax", float(same[decisive].mean()) if decisive.any() else 1.0, int(decisive.sum()), int(decisive.size)


def exact_match(output: Any, ref: np.ndarray, cand: np.ndarray, rtol: float, atol: float) -> dict[str, float]:
    """The fraction of rows whose whole label set is the same on both runtimes
    (labels near the threshold included: reported, not a failure)."""

    _, same = threshold_decisions(output, ref, cand, rtol, atol)
    rows = same.reshape(-1, ref.shape[-1]) if ref.ndim else same.reshape(1, 1)
    return {"exact_match": float(rows.all(axis=-1).mean()) if rows.size else 1.0}


# -- PyTorch losses and targets ----------------------------------------------------------------


def bce_loss(output: Any, prediction: Any, target: Any) -> Any:
    import torch.nn.functional as F

    if output.head == "sigmoid":
        return F.binary_cross_entropy(prediction, target)
    return F.binary_cross_entropy_with_logits(prediction, target)


def cross_entropy_loss(output: Any, prediction: Any, target: Any) -> Any:
    import torch.nn.functional as F

    classes = prediction.shape[-1]
    if output.head in ("softmax", "log_softmax"):
        # The model already normalised: take log-probabilities, never a second softmax.
        if output.head == "softmax":
            import torch

            log_p = prediction.clamp_min(torch.finfo(prediction.dtype).tiny).log().clamp_min(LOG_FLOOR)
        else:
            log_p = prediction
        return F.nll_loss(log_p.reshape(-1, classes), target.reshape(-1, classes).argmax(-1))
    return F.cross_entropy(prediction.reshape(-1, classes), target.reshape(-1, classes))


def mse_loss(output: Any, prediction: Any, target: Any) -> Any:
    import torch.nn.functional as F

    return F.mse_loss(prediction, target)


def zero_one_target(output: Any, prediction: Any, generator: Any) -> Any:
    import torch

    return torch.randint(0, 2, prediction.shape, generator=generator).to(torch.float32)


def one_hot_target(output: Any, prediction: Any, generator: Any) -> Any:
    import torch

    shape = prediction.shape
    labels = torch.randint(0, shape[-1], shape[:-1], generator=generator)
    return torch.nn.functional.one_hot(labels, shape[-1]).to(torch.float32)


def normal_target(output: Any, prediction: Any, generator: Any) -> Any:
    import torch

    return torch.randn(prediction.shape, generator=generator)


def cross_entropy_closed_form(output: Any, y: np.ndarray, t: np.ndarray, dtype: str) -> float:
    import numpy as np

    if output.head is None:  # logits: log-softmax, stably
        m = y.max(axis=-1, keepdims=True)
        log_p = y - m - np.log(np.exp(y - m).sum(axis=-1, keepdims=True))
        return row_mean(picked(t, -log_p))

    return row_mean(nll_terms(output, y, t, log_floor(dtype)))


def cross_entropy_slack(output: Any, y: np.ndarray, t: np.ndarray, rtol: float, atol: float, dtype: str) -> float:
    import numpy as np

    if output.head is None:
        # a row's loss = logsumexp(z) - z[target]: each moves at most by the band (a Lipschitz bound)
        band = atol + rtol * np.abs(y)
        return float(np.mean(band.max(axis=-1) + np.sum(t * band, axis=-1)))
    return band_slack(nll_terms, row_mean)(output, y, t, rtol, atol, dtype)


# -- metrics on labelled rows (prediction: rows × last dimension, float64) ------------------------


def threshold_of(output: Any) -> float:
    return 0.5 if output.head == "sigmoid" else 0.0


def threshold_right(output: Any, y: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row and label: the decision at the threshold matches the 0/1 label."""
    return (y > threshold_of(output)) == (labels > 0.5)


def rows_right(output: Any, y: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return threshold_right(output, y, labels).all(axis=-1)


def argmax_right(output: Any, y: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return y.argmax(axis=-1) == labels


def fraction(right: Callable[..., Any]) -> Callable[..., float]:
    def compute(output: Any, y: np.ndarray, labels: np.ndarray) -> float:
        decided = right(output, y, labels)
        return float(decided.mean()) if decided.size else 0.0

    return compute


def rmse(output: Any, y: np.ndarray, labels: np.ndarray) -> float:
    import numpy as np

    return float(np.sqrt(np.mean((y - labels) ** 2))) if y.size else 0.0


def r_squared(output: Any, y: np.ndarray, labels: np.ndarray) -> float:
    """1 - residual / total sum of squares, per column, averaged (scikit-learn's r2_score)."""
    import numpy as np

    total = ((labels - labels.mean(axis=0)) ** 2).sum(axis=0)
    residual = ((labels - y) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(total > 0, 1 - residual / total, np.where(residual == 0, 1.0, 0.0))
    return float(scores.mean()) if scores.size else 0.0


ACCURACY_BY_THRESHOLD = Metric("accuracy", fraction(rows_right), max_drop=0.01, percent=True, correct=rows_right)
ACCURACY_BY_ARGMAX = Metric("accuracy", fraction(argmax_right), max_drop=0.01, percent=True, correct=argmax_right)
EXACT_MATCH = Metric("exact_match", fraction(rows_right), max_drop=0.01, percent=True, correct=rows_right)
PER_LABEL_ACCURACY = Metric("per_label_accuracy", fraction(threshold_right), max_drop=0.01, percent=True)
RMSE = Metric("rmse", rmse, higher_is_better=False, max_drop=0.05, relative=True)
R_SQUARED = Metric("r2", r_squared, max_drop=None)


BINARY = Task(
    name="binary",
    heads={"sigmoid": "binary cross-entropy", None: "binary cross-entropy with logits"},
    torch_loss=bce_loss,
    closed_form_loss=closed_form(bce_terms, mean),
    make_target=zero_one_target,
    agreement=threshold_agreement,
    loss_slack=band_slack(bce_terms, mean),
    labels="binary",
    metrics=(ACCURACY_BY_THRESHOLD,),
    summary="0/1 labels: binary cross-entropy; decisions at the threshold (0.5, or 0 for logits)",
)
MULTICLASS = Task(
    name="multiclass",
    heads={
        "softmax": "cross-entropy (one-hot) on log-probabilities",
        "log_softmax": "cross-entropy (one-hot) on log-probabilities",
        None: "cross-entropy (one-hot) on logits",
    },
    torch_loss=cross_entropy_loss,
    closed_form_loss=cross_entropy_closed_form,
    make_target=one_hot_target,
    agreement=argmax_agreement,
    loss_slack=cross_entropy_slack,
    labels="class",
    metrics=(ACCURACY_BY_ARGMAX,),
    summary="one class per row (last dimension): cross-entropy; decisions by argmax",
)
MULTILABEL = Task(
    name="multilabel",
    heads={"sigmoid": "binary cross-entropy per label", None: "binary cross-entropy with logits per label"},
    torch_loss=bce_loss,
    closed_form_loss=closed_form(bce_terms, mean),
    make_target=zero_one_target,
    agreement=threshold_agreement,
    stats=exact_match,
    loss_slack=band_slack(bce_terms, mean),
    labels="binary",
    metrics=(EXACT_MATCH, PER_LABEL_ACCURACY),
    summary="independent 0/1 labels (last dimension): BCE per label; per-label threshold, and exact label sets",
)
REGRESSION = Task(
    name="regression",
    heads={None: "mean squared error"},
    torch_loss=mse_loss,
    closed_form_loss=closed_form(squared_terms, mean),
    make_target=normal_target,
    loss_slack=band_slack(squared_terms, mean, at_target=True),
    labels="value",
    metrics=(RMSE, R_SQUARED),
    summary="real values: mean squared error",
)
BUILTIN_TASKS = MappingProxyType({task.name: task for task in (BINARY, MULTICLASS, MULTILABEL, REGRESSION)})


@zoo.hookimpl
def register_tasks(register):
    for task in BUILTIN_TASKS.values():
        register(task)
