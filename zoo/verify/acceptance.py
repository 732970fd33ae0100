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
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
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

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1):
                raise ParameterError(f"--{f.name.replace('_', '-')} {value!r}: give a number from 0 to 1")

    @classmethod
    def from_metadata(cls, text: str) -> Acceptance:
        values = json.loads(text)
        if not isinstance(values, dict) or set(values) - {f.name for f in fields(cls)}:
            raise ValueError(f"not acceptance criteria: {text[:80]!r}")
        return cls(**values)


def variant_name(quantize: str | None, precision: str | None) -> str | None:
    """``--quantize int8`` / ``--precision fp16`` as one variant name (at most one)."""
    if quantize and precision:
        raise ParameterError("--quantize and --precision make different variants: give one of them")
    return quantize or precision


def accept_output(spec: Any, ref: Any, cand: Any, criteria: Acceptance, generator: Any) -> tuple[dict[str, Any], list[str]]:
    """One output of one case, judged by ``criteria``: the numbers and what failed."""
    import numpy as np

    from zoo.check.task_calls import agreement, closed_form_loss, make_target, task_stats

    ref64 = np.asarray(ref.detach().cpu().double().numpy() if hasattr(ref, "detach") else ref, dtype=np.float64)
    cand64 = np.asarray(cand, dtype=np.float64)
    if cand64.shape != ref64.shape:
        return {}, [f"output {spec.name!r} has shape {list(cand64.shape)}, PyTorch gives {list(ref64.shape)}"]
    failures: list[str] = []
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(ref64 - cand64)
        broken = int((np.isfinite(ref64) & ~np.isfinite(cand64)).sum())
        finite = error[np.isfinite(error)]
        rms = float(np.sqrt(np.mean(np.square(ref64[np.isfinite(ref64)])))) if np.isfinite(ref64).any() else 0.0
    p = (lambda q: float(np.percentile(finite, q)) if finite.size else 0.0)
    stats: dict[str, Any] = {"p50_abs": p(50), "p90_abs": p(90), "p99_abs": p(99), "max_abs": p(100), "reference_rms": rms}
    if broken:
        failures.append(f"output {spec.name!r}: {broken} values are NaN or infinite where PyTorch's are finite")
    stats.update(task_stats(spec, ref64, cand64, 0.0, 0.0))  # reported, not judged (multilabel's exact label sets)
    agreed = agreement(spec, ref64, cand64, 0.0, 0.0)  # every row counts: no tolerance margin for a variant
    if agreed is not None:
        kind, fraction = agreed
        stats[f"{kind}_agreement"] = fraction
        if fraction < criteria.min_agreement:
            failures.append(
                f"output {spec.name!r}: {kind} agrees with PyTorch on {fraction:.1%} of rows "
                f"(at least {criteria.min_agreement:.1%} required)"
            )
    else:
        relative = stats["p99_abs"] / rms if rms > 0 else (0.0 if stats["p99_abs"] == 0 else math.inf)
        stats["p99_relative_to_rms"] = relative
        if relative > criteria.max_error:
            failures.append(
                f"output {spec.name!r}: 99% of errors are within {relative:.3g}× the output's RMS "
                f"(at most {criteria.max_error:g} required)"
            )
    if spec.task is not None:
        dtype = dtype_text(ref.dtype) if hasattr(ref, "dtype") else "float32"
        target = make_target(spec, ref.detach().cpu().float(), generator).double().numpy()
        loss_ref = closed_form_loss(spec, ref64, target, dtype)
        loss_got = closed_form_loss(spec, cand64, target, dtype)
        change = abs(loss_got - loss_ref) / max(abs(loss_ref), 1e-12) if math.isfinite(loss_got) else math.inf
        stats["loss"] = {"torch": loss_ref, "variant": loss_got, "relative_change": change}
        if not change <= criteria.max_loss_change:
            failures.append(
                f"loss on {spec.name!r} is {loss_got:.6g} for the variant vs {loss_ref:.6g} in PyTorch "
                f"({change:.1%} change, at most {criteria.max_loss_change:.0%} allowed)"
            )
    return stats, failures
