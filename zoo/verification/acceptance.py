"""Deployable variants (int8, fp16) and their task-aware acceptance.

A quantized or half-precision graph cannot meet float32 tolerances, and need
not: it must still do the model's job. A variant is accepted against PyTorch
(float32, the reference) on every verification case by what its outputs are for:

- a decision (binary threshold, multiclass argmax): the fraction of rows whose
  decision agrees with PyTorch's, at least ``min_agreement``;
- a loss (every output with a task): the loss on the variant's outputs within
  ``max_loss_change`` (relative) of the loss on PyTorch's;
- values (regression, or outputs without a task): the 99th percentile of the
  absolute error at most ``max_error`` times the reference's root mean square.

Every case also requires finite outputs where PyTorch's are finite.

With labels (keys of an ``--inputs`` file named after outputs), the job itself
decides: on each labelled case, each of the output's task metrics (accuracy,
RMSE) may fall at most its allowed drop below PyTorch's (``max_metric_drop``,
else the metric's default). The three criteria above stand in for labels: for an
output that has labels in any case they are measured and reported on every
case, but do not refuse the variant (on real rows agreement is stricter than
the job needs: two flips that cancel fail it, an accuracy change of 0 does not).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from zoo.errors import ParameterError
from zoo.records import Record
from zoo.text import dtype_text


@dataclass(frozen=True)
class Acceptance(Record):
    """What a variant must meet on every verification case (defaults stated in the README)."""

    min_agreement: float = 0.99
    max_loss_change: float = 0.05
    max_error: float = 0.05
    # metric name -> largest allowed drop below PyTorch ("*": every metric); others use the metric's default
    max_metric_drop: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "max_metric_drop":
                continue
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1):
                raise ParameterError(f"--{f.name.replace('_', '-')} {value!r}: give a number from 0 to 1")
        if not isinstance(self.max_metric_drop, Mapping):
            raise ParameterError(f"--max-metric-drop {self.max_metric_drop!r}: give METRIC=NUMBER or NUMBER")
        for name, value in self.max_metric_drop.items():
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
                raise ParameterError(f"--max-metric-drop {name}={value!r}: give a number of at least 0")
        object.__setattr__(self, "max_metric_drop", dict(self.max_metric_drop))

    def metric_drops(self, metric_names: list[str]) -> dict[str, float]:
        """The allowed drop for each named metric that the command line or the file sets."""
        every = self.max_metric_drop.get("*")
        return {n: self.max_metric_drop.get(n, every) for n in metric_names if n in self.max_metric_drop or every is not None}

    @classmethod
    def from_metadata(cls, text: str) -> Acceptance:
        if len(text) > 1000:  # three numbers: a longer text is not criteria (and may nest deep enough to break json)
            raise ValueError(f"not acceptance criteria: {len(text):,} characters")
        values = json.loads(text)
        if not isinstance(values, dict) or set(values) - {f.name for f in fields(cls)}:
            raise ValueError(f"not acceptance criteria: {text[:80]!r}")
        return cls(**values)


MIN_ROWS_FOR_TIES = 8  # below this many decisions, ties are reported but cannot fail a case alone
MIN_DECIDED_SHARE = 0.25  # fewer decided rows than this share: the variant's agreement proves nothing


def variant_name(quantize: str | None, precision: str | None) -> str | None:
    """``--quantize int8`` / ``--precision fp16`` as one variant name (at most one)."""
    if quantize and precision:
        raise ParameterError("--quantize and --precision make different variants: give one of them")
    return quantize or precision


def parse_metric_drops(values: Any) -> dict[str, float]:
    """``--max-metric-drop 0.02`` (every metric) or ``accuracy=0.005`` (one, repeatable) as a mapping."""
    found: dict[str, float] = {}
    for text in [values] if isinstance(values, (str, int, float)) else list(values or ()):
        name, _, number = str(text).rpartition("=")
        try:
            value = float(number)
        except ValueError:
            raise ParameterError(f"--max-metric-drop {text!r}: give NUMBER (every metric) or METRIC=NUMBER, such as accuracy=0.01") from None
        found[name.strip() or "*"] = value
    return found


def accept_metrics(spec: Any, metrics: Mapping[str, Any], source: str) -> list[str]:
    """What failed of an output's metrics on one labelled case (``zoo.verification.metrics.compare_scores``)."""
    failures = []
    for name, found in metrics.items():
        if not found["ok"]:
            failures.append(
                f"output {spec.name!r} on {source}: {name} {metric_text(found['candidate'], found)} vs {metric_text(found['torch'], found)} "
                f"in PyTorch, {drop_text(found['drop'], found)} below it (at most {drop_text(found['max_drop'], found)} allowed, --max-metric-drop)"
            )
    return failures


def metric_text(value: float, found: Mapping[str, Any]) -> str:
    return f"{value:.2%}" if found["percent"] else f"{value:.4g}"


def drop_text(drop: float, found: Mapping[str, Any]) -> str:
    if found["relative"]:
        return f"{drop:.1%}"
    return f"{drop * 100:.2f} pp" if found["percent"] else f"{drop:.4g}"


def accept_output(
    spec: Any, ref: Any, cand: Any, criteria: Acceptance, generator: Any, target: Any = None, judged: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """One output of one case, judged by ``criteria``: the numbers and what failed.
    ``target``: the loss target from the user's labels (else a random one);
    ``judged`` False: the output has labels, so its metrics decide and the
    stand-in criteria are only reported."""
    import numpy as np

    from zoo.checking.task_calls import task_stats

    ref64 = np.asarray(ref.detach().cpu().double().numpy() if hasattr(ref, "detach") else ref, dtype=np.float64)
    cand64 = np.asarray(cand, dtype=np.float64)
    if cand64.shape != ref64.shape:
        return {}, [f"output {spec.name!r} has shape {list(cand64.shape)}, PyTorch gives {list(ref64.shape)}"]
    stats, broken = error_stats(ref64, cand64)
    failures = [f"output {spec.name!r}: {broken} values are NaN or infinite where PyTorch's are finite"] if broken else []
    stats.update(task_stats(spec, ref64, cand64, 0.0, 0.0))  # reported, not judged (multilabel's exact label sets)
    stand_ins = decision_stand_ins(spec, ref64, cand64, criteria, stats)  # refuse the variant only where no labels judge the output
    if spec.task is not None:
        stand_ins += loss_stand_ins(spec, ref, ref64, cand64, criteria, generator, target, stats)
    if judged:
        failures.extend(stand_ins)
    elif stand_ins:
        stats["not_judged"] = stand_ins  # the labels decide this output
    return stats, failures


def error_stats(ref64: Any, cand64: Any) -> tuple[dict[str, Any], int]:
    """The variant's absolute error percentiles and PyTorch's RMS, over finite values;
    and how many values are NaN or infinite where PyTorch's are finite."""
    import numpy as np

    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(ref64 - cand64)
        broken = int((np.isfinite(ref64) & ~np.isfinite(cand64)).sum())
        finite = error[np.isfinite(error)]
        rms = float(np.sqrt(np.mean(np.square(ref64[np.isfinite(ref64)])))) if np.isfinite(ref64).any() else 0.0
    p50, p90, p99, top = np.percentile(finite, [50, 90, 99, 100]).tolist() if finite.size else [0.0] * 4
    return {"p50_abs": p50, "p90_abs": p90, "p99_abs": p99, "max_abs": top, "reference_rms": rms}, broken


def decision_stand_ins(spec: Any, ref64: Any, cand64: Any, criteria: Acceptance, stats: dict[str, Any]) -> list[str]:
    """Agreement of decisions (a task's argmax or threshold), else the p99 error
    against the output's RMS (regression); what falls short of ``criteria``."""
    from zoo.checking.task_calls import decision_counts

    # A near-tie: a decision whose reference margin (top-2 gap, distance to the
    # threshold) lies within twice the variant's measured p99 error can flip by
    # that error alone; it is counted apart, not as a disagreement.
    agreed = decision_counts(spec, ref64, cand64, 0.0, stats["p99_abs"])
    if agreed is None:
        rms = stats["reference_rms"]
        relative = stats["p99_abs"] / rms if rms > 0 else (0.0 if stats["p99_abs"] == 0 else math.inf)
        stats["p99_relative_to_rms"] = relative
        if relative > criteria.max_error:
            return [f"output {spec.name!r}: 99% of errors are within {relative:.3g}× the output's RMS (at most {criteria.max_error:g} required)"]
        return []
    kind, fraction, decided, total = agreed
    stats[f"{kind}_agreement"] = fraction
    if total:
        stats[f"{kind}_ties"], stats[f"{kind}_rows"] = total - decided, total
    if total and total >= MIN_ROWS_FOR_TIES and decided < MIN_DECIDED_SHARE * total:  # nearly all ties
        return [
            f"output {spec.name!r}: only {decided} of {total} rows decide beyond the variant's error "
            f"(p99 abs {stats['p99_abs']:.2g}); the rest are ties it cannot be shown to keep"
        ]
    if fraction < criteria.min_agreement:
        return [
            f"output {spec.name!r}: {kind} agrees with PyTorch on {fraction:.1%} of {decided if total else 'the'} decided rows "
            f"(at least {criteria.min_agreement:.1%} required)"
        ]
    return []


def loss_stand_ins(
    spec: Any, ref: Any, ref64: Any, cand64: Any, criteria: Acceptance, generator: Any, target: Any, stats: dict[str, Any]
) -> list[str]:
    """The task's loss on both sides, on ``target`` (the user's labels) or a random
    one; a change past ``criteria.max_loss_change`` falls short."""
    from zoo.checking.task_calls import closed_form_loss, make_target

    dtype = dtype_text(ref.dtype) if hasattr(ref, "dtype") else "float32"
    target = (target if target is not None else make_target(spec, ref.detach().cpu().float(), generator)).double().cpu().numpy()
    loss_ref = closed_form_loss(spec, ref64, target, dtype)
    loss_got = closed_form_loss(spec, cand64, target, dtype)
    change = abs(loss_got - loss_ref) / max(abs(loss_ref), 1e-12) if math.isfinite(loss_got) else math.inf
    stats["loss"] = {"torch": loss_ref, "variant": loss_got, "relative_change": change}
    if change <= criteria.max_loss_change:
        return []
    return [
        f"loss on {spec.name!r} is {loss_got:.6g} for the variant vs {loss_ref:.6g} in PyTorch "
        f"({change:.1%} change, at most {criteria.max_loss_change:.0%} allowed)"
    ]


# For each criterion, whether a value is looser than another (lets more through).
_LOOSER = {"min_agreement": lambda a, b: a < b, "max_loss_change": lambda a, b: a > b, "max_error": lambda a, b: a > b}


def judged_criteria(recorded: Acceptance, given: dict[str, float | None], accept_recorded: bool) -> tuple[Acceptance, dict[str, str], list[str]]:
    """The criteria ``zoo verify`` judges a variant file by: an option given now, else
    the file's own value, unless that is looser than zoo's default and the user did not
    confirm it (the same option again, or ``--accept-recorded``): a file must not choose
    its own verdict. Returns the criteria, where each came from (option, file, default)
    and a note for each recorded value not applied."""
    default = Acceptance()
    chosen: dict[str, float] = {}
    source: dict[str, str] = {}
    notes: list[str] = []
    for name, looser in _LOOSER.items():
        mine, theirs, usual = given.get(name), getattr(recorded, name), getattr(default, name)
        if mine is not None:
            chosen[name], source[name] = mine, "option"
        elif looser(theirs, usual) and not accept_recorded:
            chosen[name], source[name] = usual, "default"
            flag = "--" + name.replace("_", "-")
            notes.append(f"the file records {name} {theirs:g}, looser than zoo's {usual:g}: judged by {usual:g} (confirm with {flag} {theirs:g} or --accept-recorded)")
        else:
            chosen[name], source[name] = theirs, "file"
    return Acceptance(**chosen), source, notes
