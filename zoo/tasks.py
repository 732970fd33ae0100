"""Losses per task: PyTorch's loss, and the same loss in closed form with numpy.

The closed form is computed independently in float64 from the outputs, so a
check that the two agree catches a wrong loss wiring (a second softmax on
probabilities, BCE on logits) as well as numerical trouble.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from zoo.spec import Output

LOSS_NAMES = {
    ("binary", "sigmoid"): "binary cross-entropy",
    ("binary", None): "binary cross-entropy with logits",
    ("multiclass", "softmax"): "cross-entropy (one-hot) on log-probabilities",
    ("multiclass", "log_softmax"): "cross-entropy (one-hot) on log-probabilities",
    ("multiclass", None): "cross-entropy (one-hot) on logits",
    ("regression", None): "mean squared error",
}


def loss_name(output: Output) -> str:
    try:
        return LOSS_NAMES[(output.task, output.head)]
    except KeyError:
        raise ValueError(f"output {output.name!r}: task {output.task!r} does not take head {output.head!r}") from None


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
            log_p = prediction.clamp_min(1e-45).log() if head == "softmax" else prediction
            return F.nll_loss(log_p.reshape(-1, classes), target.reshape(-1, classes).argmax(-1))
        return F.cross_entropy(prediction.reshape(-1, classes), target.reshape(-1, classes))
    if output.task == "regression":
        return F.mse_loss(prediction, target)
    raise ValueError(f"output {output.name!r} has no task")


def closed_form_loss(output: Output, prediction: np.ndarray, target: np.ndarray) -> float:
    """The same loss written out with numpy in float64."""
    y = np.asarray(prediction, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if output.task == "binary":
        if output.head == "sigmoid":
            return float(-np.mean(t * np.log(y) + (1 - t) * np.log1p(-y)))
        # log sigmoid(z) = -log(1 + e^-z), written stably
        return float(np.mean(t * np.logaddexp(0, -y) + (1 - t) * np.logaddexp(0, y)))
    if output.task == "multiclass":
        if output.head == "softmax":
            log_p = np.log(y)
        elif output.head == "log_softmax":
            log_p = y
        else:
            m = y.max(axis=-1, keepdims=True)
            log_p = y - m - np.log(np.exp(y - m).sum(axis=-1, keepdims=True))
        return float(-np.mean(np.sum(t * log_p, axis=-1)))
    if output.task == "regression":
        return float(np.mean((y - t) ** 2))
    raise ValueError(f"output {output.name!r} has no task")


@dataclass
class HeadCheck:
    output: str
    check: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, object]:
        return {"output": self.output, "check": self.check, "ok": self.ok, "detail": self.detail}


def head_checks(output: Output, prediction: np.ndarray) -> list[HeadCheck]:
    """What the head promises: sigmoid in (0, 1), softmax rows on the simplex."""
    y = np.asarray(prediction, dtype=np.float64)
    checks = []
    if output.head == "sigmoid":
        low, high = float(y.min()), float(y.max())
        checks.append(HeadCheck(output.name, "sigmoid in (0,1)", 0.0 < low and high < 1.0, f"min {low:.4g}, max {high:.4g}"))
    elif output.head in ("softmax", "log_softmax"):
        p = np.exp(y) if output.head == "log_softmax" else y
        sums = p.sum(axis=-1)
        worst = float(np.abs(sums - 1).max()) if sums.size else 0.0
        in_range = bool((p >= 0).all() and (p <= 1).all())
        checks.append(
            HeadCheck(output.name, f"{output.head} rows sum to 1", worst < 1e-4 and in_range, f"max |sum-1| {worst:.2g}")
        )
    return checks


def agreement(output: Output, reference: np.ndarray, candidate: np.ndarray, margin: float) -> tuple[str, float] | None:
    """Fraction of decisions two runtimes agree on: argmax (multiclass), threshold (binary).

    Rows whose reference decision is within ``margin`` of flipping are left out:
    a difference inside the tolerance may legitimately flip them.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if output.task == "multiclass" and ref.shape[-1] > 1:
        top2 = np.sort(ref, axis=-1)[..., -2:]
        decisive = (top2[..., 1] - top2[..., 0]) > margin
        same = ref.argmax(-1) == cand.argmax(-1)
        kind = "argmax"
    elif output.task == "binary":
        threshold = 0.5 if output.head == "sigmoid" else 0.0
        decisive = np.abs(ref - threshold) > margin
        same = (ref > threshold) == (cand > threshold)
        kind = "threshold"
    else:
        return None
    return kind, float(same[decisive].mean()) if decisive.any() else 1.0
