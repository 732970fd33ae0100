"""Comparing one output of the exported file with PyTorch's: error statistics, percentiles, failure text."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from zoo.spec.architecture import Output, Tolerance
from zoo.text import dtype_text, sizes_text


def compare_output(
    spec: Output, ref: Any, cand: Any, tol: Tolerance | None, generator: Any, target: Any = None, loss: bool = True
) -> tuple[dict[str, Any] | None, list[str]]:
    """One output of one case: values, decisions (argmax/threshold) and the loss (on
    ``target``, the user's labels, else a random target; none when ``loss`` is False:
    PyTorch's own output is NaN, so is its loss). Returns the stats for the report
    (``None`` if the shapes differ) and what failed."""
    from zoo.checking.task_calls import agreement, closed_form_loss, loss_slack, losses_agree, make_target, task_stats

    dtype = dtype_text(ref.dtype)
    ref_np = as_numpy(ref)
    if cand.shape != ref_np.shape:
        return None, [f"output {spec.name!r} has shape {list(cand.shape)}, PyTorch gives {list(ref_np.shape)}"]
    failures = []
    rtol, atol = (tol.rtol, tol.atol) if tol else (0.0, 0.0)
    stats = compare(ref_np, cand, tol)
    if not stats["ok"]:
        failures.append(
            f"output {spec.name!r} differs from PyTorch: max abs error {stats['max_abs']:.3g}, "
            f"max rel error {stats['max_rel']:.3g} (rtol {rtol:g}, atol {atol:g}) in {stats['out_of_tolerance']:.1%} "
            f"of {stats['elements']} values; {atol_hint(stats)}"
        )
    agreed = agreement(spec, ref_np, cand, rtol, atol)
    if agreed is not None:
        stats[agreed[0] + "_agreement"] = agreed[1]
        if agreed[1] < 1.0:
            failures.append(f"output {spec.name!r}: {agreed[0]} agrees on only {agreed[1]:.1%} of rows")
    stats.update(task_stats(spec, ref_np, cand, rtol, atol))  # reported, never failing (multilabel's exact_match)
    if spec.task is not None and tol is not None and loss:
        target = (target if target is not None else make_target(spec, ref, generator)).double().cpu().numpy()  # numpy has no bfloat16
        loss_ref = closed_form_loss(spec, ref_np, target, dtype)
        loss_got = closed_form_loss(spec, cand, target, dtype)
        stats["loss"] = {"torch": loss_ref, "exported": loss_got}
        # rounding in the loss itself, plus how far outputs within tolerance can move it
        slack = loss_slack(spec, ref_np, target, rtol, atol, dtype)
        if not losses_agree(loss_ref, loss_got, 10 * rtol, 10 * atol + slack):
            failures.append(f"loss on {spec.name!r} is {loss_got:.6g} exported vs {loss_ref:.6g} in PyTorch")
    return stats, failures


def as_numpy(tensor: Any) -> Any:
    """A tensor as a numpy array (a copy); bfloat16 as float32 (exact), numpy having no bfloat16."""
    import torch

    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy().copy()


def compare(reference: Any, candidate: Any, tol: Tolerance | None) -> dict[str, Any]:
    """``error_stats`` with the tolerance (exact when ``None``), plus ``max_abs``/``max_rel``."""
    stats = error_stats(reference, candidate, tol.rtol if tol else 0.0, tol.atol if tol else 0.0)
    return {"max_abs": stats["abs_error"]["max"], "max_rel": stats["rel_error"]["max"], **stats}


PERCENTILES = (50, 90, 99)


def error_stats(reference: Any, candidate: Any, rtol: float, atol: float) -> dict[str, Any]:
    """How far ``candidate`` is from ``reference``, elementwise, against ``|a-b| <= atol + rtol*|ref|``.

    NaN matches NaN and an infinity the same infinity; any other element where a
    side is not finite fails whatever the tolerance: its error is NaN when a side
    is NaN (so a maximum over it is NaN too), else infinite. Returns ``ok``,
    ``elements``, ``out_of_tolerance`` (the fraction failing), ``abs_error`` and
    ``rel_error`` (``p50``, ``p90``, ``p99``, ``max``), ``nan`` and ``inf`` counts
    per side, ``one_sided`` (how many elements are NaN or infinite on one side
    only), and ``needed_atol``: the smallest atol that passes at this rtol
    (``None`` when ``one_sided``: no atol does).
    """
    import numpy as np

    ref = np.asarray(reference).astype(np.float64)
    cand = np.asarray(candidate).astype(np.float64)
    finite = np.isfinite(ref) & np.isfinite(cand)
    same_special = (np.isnan(ref) & np.isnan(cand)) | (np.isinf(ref) & (ref == cand))
    mismatch = ~finite & ~same_special
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(finite, np.abs(np.where(finite, ref, 0.0) - np.where(finite, cand, 0.0)), 0.0)
    diff[mismatch] = np.inf
    diff[mismatch & (np.isnan(ref) | np.isnan(cand))] = np.nan  # NaN against a number is reported as NaN, never inf
    scale = np.abs(np.where(finite, ref, 0.0))
    with np.errstate(invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.maximum(scale, np.finfo(np.float64).tiny))
    bad = mismatch | (diff > atol + rtol * scale)
    slack = np.where(finite, diff - rtol * scale, 0.0)
    needed = None if mismatch.any() else max(0.0, float(slack.max(initial=0.0)))
    return {
        "ok": not bool(bad.any()),
        "elements": int(ref.size),
        "out_of_tolerance": float(bad.mean()) if ref.size else 0.0,
        "abs_error": percentiles(diff),
        "rel_error": percentiles(rel),
        "nan": {"reference": int(np.isnan(ref).sum()), "candidate": int(np.isnan(cand).sum())},
        "inf": {"reference": int(np.isinf(ref).sum()), "candidate": int(np.isinf(cand).sum())},
        "one_sided": int(mismatch.sum()),
        "scale": float(np.abs(ref[np.isfinite(ref)]).max(initial=0.0)),  # PyTorch's largest finite value
        "needed_atol": needed,
    }


def atol_hint(stats: Mapping[str, Any]) -> str:
    """What tolerance would pass, or why none does."""
    if stats["needed_atol"] is None:
        return f"no atol would pass: {stats['one_sided']} value(s) NaN or infinite on one side only"
    scale = stats.get("scale", 0.0)
    if scale > 0 and stats["needed_atol"] > GROSS_ERROR * scale:  # not rounding: a tolerance must not hide it
        return (f"the error is {stats['needed_atol'] / scale:.0%} of the output's largest value: the file computes "
                f"something else (other weights, a wrong op), not a rounding a tolerance should allow")
    return f"atol {rounded_up(stats['needed_atol'])} would pass"


def rounded_up(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, rounded up: a tolerance that is
    suggested must pass, not fall short by its last digit."""
    if value <= 0 or not math.isfinite(value):
        return f"{value:g}"
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(value)))
    return f"{math.ceil(value * scale) / scale:.{digits}g}"


GROSS_ERROR = 0.01  # an error past this fraction of the output's scale is no rounding


def worst(values: Any) -> float:
    """The largest error, NaN if any is NaN: a NaN is never hidden by a finite maximum."""
    values = list(values)
    if any(math.isnan(v) for v in values):
        return math.nan
    return max(values, default=0.0)


def percentiles(values: Any) -> dict[str, float]:
    import numpy as np

    numbers = values[~np.isnan(values)]
    if numbers.size == 0:
        empty = float("nan") if values.size else 0.0
        return {**{f"p{q}": empty for q in PERCENTILES}, "max": empty}
    # "higher": an element's own error, never a mix of two (inf with a number would give NaN)
    found = np.percentile(numbers, PERCENTILES, method="higher")
    top = float("nan") if numbers.size < values.size else float(numbers.max())  # any NaN makes the max NaN
    return {**{f"p{q}": float(v) for q, v in zip(PERCENTILES, found)}, "max": top}


def case_label(sizes: Mapping[str, int]) -> str:
    return sizes_text(sizes) or "static shapes"
