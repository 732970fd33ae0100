"""The task spec plugins register: what an ``Output(task=NAME)`` is trained for, and how zoo checks it.

Plain data, listable without torch: the callables import torch or numpy when called.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from zoo.records import Record
from zoo.spec.architecture import HEADS, Architecture, check_name

if TYPE_CHECKING:
    from zoo.spec.registry import Registry


LABEL_KINDS = ("class", "binary", "value")


@dataclass(frozen=True)
class Metric:
    """How well an output does its job on labelled rows, for ``Task(metrics=...)``.

    ``compute(output, prediction, labels) -> float``: the metric over rows, on
    float64 ``prediction`` (rows first: every dimension but the output's last is
    flattened into rows) and ``labels`` (the task's ``labels`` kind, rows first
    too). zoo calls it on resampled rows for the interval of a change, so it must
    take any subset of rows.

    ``higher_is_better``: accuracy yes, RMSE no. ``max_drop``: the default for how
    far a deployable variant may fall below PyTorch (``--max-metric-drop``), in the
    metric's own units, or as a fraction of PyTorch's value when ``relative``;
    ``None``: reported, never judged. ``percent``: shown as a percentage
    (a fraction from 0 to 1). ``correct(output, prediction, labels) -> bool array``
    (optional): which rows are decided right, so zoo counts right→wrong and
    wrong→right flips and the accuracy per label class.
    """

    name: str
    compute: Callable[..., float]
    higher_is_better: bool = True
    max_drop: float | None = 0.01
    relative: bool = False
    percent: bool = False
    correct: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "metric")
        if not callable(self.compute) or (self.correct is not None and not callable(self.correct)):
            raise ValueError(f"metric {self.name!r}: compute (and correct) must be callable")
        if self.max_drop is not None and not (isinstance(self.max_drop, (int, float)) and math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise ValueError(f"metric {self.name!r}: max_drop {self.max_drop!r} must be a number >= 0, or None")

    def drop(self, reference: float, candidate: float) -> float:
        """How far ``candidate`` falls below ``reference`` (negative: it did better), as ``max_drop`` counts it."""
        worse = reference - candidate if self.higher_is_better else candidate - reference
        if self.relative:
            return worse / abs(reference) if reference != 0 else (0.0 if worse == 0 else math.copysign(math.inf, worse))
        return worse


@dataclass(frozen=True)
class Task:
    """A task, passed to ``register`` in ``register_tasks``.

    Every callable takes the ``zoo.Output`` it runs for first (its ``head`` and
    ``name``); arrays are numpy float64, tensors are torch tensors:

    - ``heads``: the heads an output of this task may have (``None``: raw values
      or logits), each with the name of its loss, shown by ``zoo check``.
    - ``torch_loss(output, prediction, target) -> tensor``: the loss in PyTorch,
      on the output as the model returns it (no second activation); ``zoo check``
      runs ``backward`` through it.
    - ``closed_form_loss(output, prediction, target, dtype) -> float``: the same
      loss written independently in numpy float64; ``dtype`` is the dtype the
      model computed in. ``zoo check`` requires the two to agree, and ``zoo
      export`` compares this loss on PyTorch's and on the exported outputs.
    - ``make_target(output, prediction, generator) -> tensor``: a random target
      shaped like ``prediction`` (CPU), drawn with ``generator``.
    - ``agreement(output, reference, candidate, rtol, atol) -> (kind, fraction) | None``:
      the fraction of decisions (argmax, threshold) the exported model makes as
      PyTorch does, leaving out decisions within tolerance of flipping; below 1,
      verification fails. ``kind`` names it in reports (``kind_agreement``).
      It may return ``(kind, fraction, decided, total)``: how many decisions
      were counted of all, so a variant's near-ties are reported apart.
    - ``stats(output, reference, candidate, rtol, atol) -> dict[str, float]``:
      more fractions for the report (``exact_match``); shown, never failing.
    - ``loss_slack(output, reference, target, rtol, atol, dtype) -> float``: how
      far the loss can move when every output moves within ``atol + rtol*|ref|``
      (default 0: only rounding is allowed); supply one for ill-conditioned losses.
    - ``head_checks(output, prediction, dtype) -> list[zoo.checking.task_calls.HeadCheck]``:
      checks beyond the head's own (sigmoid in [0, 1], softmax rows sum to 1).
    - ``labels``: what a user's labels for this output hold (``LABEL_KINDS``):
      ``"class"`` (integer class indices, the output's shape without its last
      dimension, each ``< `` that dimension), ``"binary"`` (0/1, the output's
      shape) or ``"value"`` (real numbers, the output's shape).
    - ``metrics``: the ``Metric`` objects zoo scores on labelled data, the first
      one foremost (shown first, and the one a classifier's flips are counted by).
    """

    name: str
    heads: Mapping[str | None, str]
    torch_loss: Callable[..., Any]
    closed_form_loss: Callable[..., float]
    make_target: Callable[..., Any]
    agreement: Callable[..., tuple[str, float] | None] | None = None
    stats: Callable[..., dict[str, float]] | None = None
    loss_slack: Callable[..., float] | None = None
    head_checks: Callable[..., list[Any]] | None = None
    labels: str = "value"
    metrics: tuple[Metric, ...] = ()
    summary: str = ""
    plugin: str = ""  # filled in by zoo when the plugin registers it

    def __post_init__(self) -> None:
        check_name(self.name, "task")
        object.__setattr__(self, "heads", dict(self.heads))
        if not self.heads:
            raise ValueError(f"task {self.name!r}: give at least one head (None for raw values)")
        unknown = [head for head in self.heads if head is not None and head not in HEADS]
        if unknown:
            raise ValueError(f"task {self.name!r}: head {unknown[0]!r} is not one of {', '.join(HEADS)} or None")
        for field_name in ("torch_loss", "closed_form_loss", "make_target"):
            if not callable(getattr(self, field_name)):
                raise ValueError(f"task {self.name!r}: {field_name} must be callable")
        if self.labels not in LABEL_KINDS:
            raise ValueError(f"task {self.name!r}: labels {self.labels!r} is not one of {', '.join(LABEL_KINDS)}")
        object.__setattr__(self, "metrics", tuple(self.metrics))
        if not all(isinstance(m, Metric) for m in self.metrics):
            raise ValueError(f"task {self.name!r}: metrics must be zoo.Metric objects")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"task {self.name!r}: two metrics are named alike ({', '.join(names)})")

    def with_plugin(self, plugin: str) -> Task:
        return dataclasses.replace(self, plugin=plugin)

    def head_names(self) -> list[str]:
        return [head or "none" for head in self.heads]


def resolve_tasks(arch: Architecture, tasks: Registry[Task]) -> Architecture:
    """``arch`` with each output's task looked up in ``tasks``; ``ValueError``
    for a task no plugin registered, or a head the task does not take."""
    outputs = []
    for output in arch.outputs:
        if output.task is not None:
            task = tasks.get(output.task)
            if task is None:
                known = ", ".join(t.name for t in tasks) or "none"
                raise ValueError(
                    f"architecture {arch.name!r}: output {output.name!r} has task {output.task!r}, which no loaded plugin "
                    f"registers (tasks: {known})"
                )
            if output.head not in task.heads:
                heads = " or ".join(repr(head) if head else "None (raw values)" for head in task.heads)
                raise ValueError(
                    f"architecture {arch.name!r}: output {output.name!r}: task {output.task!r} does not take head "
                    f"{output.head!r}; use {heads}"
                )
            output = dataclasses.replace(output)
            object.__setattr__(output, "resolved_task", task)
        outputs.append(output)
    return dataclasses.replace(arch, outputs=tuple(outputs))


LOG_FLOOR = -100.0  # PyTorch's binary_cross_entropy clamps log terms here


# Smallest normal number per float dtype (numpy has no bfloat16, so a table).
TINY = MappingProxyType({"float16": 2.0**-14, "bfloat16": 2.0**-126, "float32": 2.0**-126, "float64": 2.0**-1022})


def log_floor(dtype: str) -> float:
    """The lowest log-probability of a softmax head in ``dtype`` (see the module docstring)."""
    return max(math.log(TINY.get(dtype, TINY["float32"])), LOG_FLOOR)


@dataclass
class HeadCheck(Record):
    output: str
    check: str
    ok: bool
    detail: str
