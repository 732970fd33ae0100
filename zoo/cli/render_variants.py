"""Text for a variant and for labelled data: its acceptance, speed, metrics and their change, a weight set's claim."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from zoo.text import human_bytes


def labelled_drops(verification: Any) -> dict[str, str]:
    """Metric name -> its allowed drop as text, for the metrics a variant's labelled cases judged."""
    from zoo.verification.acceptance import drop_text

    found = {}
    for case in verification.cases if verification is not None else []:
        for stats in case.outputs.values():
            for name, metric in stats.get("metrics", {}).items():
                if metric.get("max_drop") is not None:
                    found[name] = drop_text(metric["max_drop"], metric)
    return found


def metric_lines(result: Any) -> list[str]:
    """One line per labelled case and output: each metric on PyTorch, the float file and the variant, and the change."""
    from zoo.verification.acceptance import metric_text

    exported = result.exporter.name
    variant = result.variant["name"] if result.variant is not None else None
    float_cases = [] if result.variant is not None and result.variant_verification is None else result.verification.cases
    candidates = {(c.source, name): stats.get("metrics", {}) for c in float_cases for name, stats in c.outputs.items()}
    float_losses = {(c.source, name): stats["loss"]["exported"] for c in float_cases for name, stats in c.outputs.items() if "loss" in stats}
    judged = result.variant_verification.cases if result.variant_verification is not None else result.verification.cases
    lines = []
    for case in judged:
        for out_name, stats in case.outputs.items():
            for metric_name, found in stats.get("metrics", {}).items():
                floated = candidates.get((case.source, out_name), {}).get(metric_name)
                sides = [("torch", found["torch"])]
                if variant is not None and floated is not None:
                    sides.append((exported, floated["candidate"]))
                sides.append((variant or exported, found["candidate"]))
                shown = "  ".join(f"{side} {metric_text(value, found)}" for side, value in sides)
                verdict = "" if found.get("max_drop") is None or variant is None else ("  ok" if found["ok"] else "  NOT ACCEPTED")
                lines.append(f"  metric    {case.source} {out_name}: {metric_name}  {shown}  ({change_text(found)}){verdict}")
                worst = found.get("most_changed_class")
                if worst is not None and worst["change"] != 0:
                    lines.append(
                        f"            most changed class {worst['class']}: {worst['torch']:.1%} → {worst['candidate']:.1%} "
                        f"({signed(worst['change'], True)} pp, {worst['rows']} rows)"
                    )
            if stats.get("metrics") and "loss" in stats:
                loss, floated = stats["loss"], float_losses.get((case.source, out_name))
                sides = [("torch", loss["torch"])] + ([(exported, floated)] if variant is not None and floated is not None else [])
                lines.append(loss_line(case.source, out_name, [*sides, (variant or exported, loss.get("variant", loss.get("exported")))]))
    return lines


def signed(value: float, percent: bool) -> str:
    """``+0.19`` / ``−0.56`` (a true minus sign), in percentage points when ``percent``."""
    text = f"{value * 100:+.2f}" if percent else f"{value:+.4g}"
    return text.replace("-", "−")


def change_text(found: dict[str, Any]) -> str:
    """``+0.20 pp; 2 right→wrong, 3 wrong→right; 95% interval of the change −0.56…+0.93 pp``."""
    unit = " pp" if found["percent"] else ""
    parts = [signed(found["change"], found["percent"]) + unit]
    if "right_to_wrong" in found:
        parts.append(f"{found['right_to_wrong']} right→wrong, {found['wrong_to_right']} wrong→right")
    low, high = found["interval"]
    parts.append(f"95% interval of the change {signed(low, found['percent'])}…{signed(high, found['percent'])}{unit}")
    return "; ".join(parts)


def loss_line(source: str, out_name: str, sides: list[tuple[str, float]]) -> str:
    shown = "  ".join(f"{side} {value:.6g}" for side, value in sides)
    return f"  loss      {source} {out_name}: on its labels  {shown}"


def speed_lines(variant: dict[str, Any]) -> list[str]:
    speed = variant.get("speed")
    lines = []
    if speed:
        rows = ", ".join(
            f"{', '.join(f'{k}={v}' for k, v in row['sizes'].items()) or 'sample'} {row['speedup']:.2f}×" for row in speed["rows"]
        )
        lines.append(f"  speed     {variant['name']} vs float32 file, same runtime: {rows} (median of {speed['budget_s']:g} s of alternating calls)")
    lines.extend(f"  warning   {warning}" for warning in variant.get("warnings", []))
    return lines


def variant_lines(variant: dict[str, Any], drops: dict[str, str] | None = None) -> list[str]:
    """Which variant, how it was made, its size against the float32 file, and its criteria."""
    criteria = variant["criteria"]
    calibrated = variant.get("calibration", {}).get("text")
    made = f" ({variant['method']}{', ' + calibrated if calibrated else ''})" if variant.get("method") else ""
    criteria = criteria if hasattr(criteria, "min_agreement") else SimpleNamespace(**criteria)
    size = ""
    if variant.get("bytes"):
        size = f": {human_bytes(variant['bytes'])}, {variant['bytes'] / variant['float32_bytes']:.2f}× the float32 file"
    lines = [
        f"  variant   {variant['name']}{made}{size}",
        f"  accept    agreement ≥ {criteria.min_agreement:.1%}, loss change ≤ {criteria.max_loss_change:.0%}, "
        f"p99 error ≤ {criteria.max_error:g}× RMS (regression) on every case",
    ]
    if drops:
        allowed = ", ".join(f"{name} drop ≤ {drop}" for name, drop in drops.items())
        lines[-1] = f"  accept    {allowed} on labelled cases; agreement, loss and error reported for labelled outputs, judged for others"
    return lines


def claim_line(claim: Any) -> str:
    """``accuracy 96.1% (claimed 96.1%) on the ...: torch 96.1%, onnx 96.1%  ok``; the headline is the placed file's."""
    show = claim.show
    placed = list(claim.scores.values())[-1]
    each = ", ".join(f"{label} {show(value)}" for label, value in claim.scores.items())
    return (
        f"  claim     {claim.metric} {show(placed)} (claimed {show(claim.claimed)}) on the {claim.eval_set}, {claim.rows} rows: "
        f"{each}  {'ok' if claim.ok else 'MISSED'}"
    )
