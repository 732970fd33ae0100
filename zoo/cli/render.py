"""Text the CLI prints: tables and one-screen summaries of checks, exports and benchmarks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import SimpleNamespace
from typing import Any

from zoo.spec.architecture import Architecture
from zoo.spec.params import format_value
from zoo.text import human_bytes, human_rate, human_seconds, sizes_text
from zoo.verify.divergence import divergence_text
from zoo.verify.results import summary_row


def check_lines(result: Any) -> list[str]:
    changed = ", ".join(f"{k}={format_value(v)}" for k, v in result.params.items())
    lines = [f"check {result.architecture} (plugin {result.plugin}, seed {result.seed}, device {result.device})", f"  params    {changed or '-'}"]
    for name, out in result.outputs.items():
        lines.append(f"  forward   {name} {out['shape']} {out['dtype']}, {'finite' if out['finite'] else 'NOT FINITE'}")
    for head in result.heads:
        lines.append(f"  head      {head.output}: {head.check}: {head.detail} {'ok' if head.ok else 'FAILED'}")
    for loss in result.losses:
        lines.append(
            f"  loss      {loss.output}: {loss.loss}: torch {loss.torch:.6f}, closed form {loss.closed_form:.6f}"
            f" (|diff| {loss.difference:.1e}) {'ok' if loss.ok else 'FAILED'}"
        )
    grads = result.gradients
    if grads.get("checked"):
        healthy = not grads["no_grad"] and not grads["non_finite"]
        lines.append(
            f"  backward  {grads['parameters']} parameter tensors, "
            f"{'all gradients finite' if healthy else 'BROKEN gradients'} (norm {grads['norm']:.4g})"
        )
    for warning in result.warnings:
        lines.append(f"  warning   {warning}")
    lines.extend(f"  FAILED    {failure}" for failure in result.failures)
    lines.append("ok" if result.ok else "check FAILED")
    return lines


def bench_lines(result: Any) -> list[str]:
    changed = ", ".join(f"{k}={format_value(v)}" for k, v in result.params.items())
    providers = f" [{', '.join(result.providers)}]" if result.providers else ""
    label = result.label
    lines = [
        f"bench {result.architecture} (seed {result.seed}, device {result.device}; {changed})",
        f"  torch     {result.torch_runtime}",
        f"  {result.format:<9} {result.onnx_runtime}{providers}, verified against PyTorch before timing",
    ]
    if result.note:
        lines.append(f"  note      {result.note}")
    fold = result.export_stats.get("fold_linear")
    if fold is not None:
        lines.extend(fold_lines(fold))
    variant = result.variant
    if variant is not None:
        verdict = "accepted" if variant["accepted"] else f"NOT ACCEPTED: {variant['failure']}"
        lines.extend(variant_lines(variant))
        lines.append(f"  {variant['name']:<9} {verdict}")
    calls = min(min(len(r.torch.seconds), len(r.onnx.seconds)) for r in result.rows)
    lines.append(f"  timing    {result.budget_s:g} s of single calls per runtime and batch size after warm-up (at least {calls} calls each)")
    headers = ["SIZES", "TORCH MEDIAN", "TORCH P90", f"{label} MEDIAN", f"{label} P90", "TORCH SAMPLES/S", f"{label} SAMPLES/S", "SPEED-UP"]
    rows = [
        [
            sizes_text(row.sizes or {"batch": row.batch}),
            human_seconds(row.torch.median),
            human_seconds(row.torch.p90),
            human_seconds(row.onnx.median),
            human_seconds(row.onnx.p90),
            human_rate(row.torch.throughput),
            human_rate(row.onnx.throughput),
            f"{row.speedup:.2f}×",
        ]
        for row in result.rows
    ]
    if variant is not None:
        name = variant["name"].upper()
        headers += [f"{name} MEDIAN", f"{name} VS ORT"]
        for cells, row in zip(rows, result.rows):
            cells += [human_seconds(row.variant.median), f"{row.variant_speedup:.2f}×"]
    lines.append(table(headers, rows))
    runtime = "onnxruntime" if label == "ORT" else f"the {result.format} runner"
    lines.append(f"SPEED-UP is torch median / {runtime} median: above 1, the exported model is faster.")
    if variant is not None:
        lines.append(f"{variant['name'].upper()} VS ORT is the float32 file's median / the {variant['name']} file's, both in onnxruntime.")
    return lines


# what every case reports; any other entry is a task's fraction (argmax_agreement, exact_match)
VARIANT_FLAGS = {"int8": "--quantize int8", "fp16": "--precision fp16"}  # how a format's variants are asked for
DECISIONS = ("_agreement", "exact_match")  # per-case stats that are fractions of decisions, shown as percentages


def export_lines(result: Any, verb: str = "export") -> list[str]:
    built, verification = result.built, result.verification
    arch = built.arch
    dynamic = ", ".join(sorted({s for case in verification.cases for s in case.sizes})) if not result.static else ""
    opset = f", opset {result.opset}" if result.opset is not None else ""  # formats without opsets show none
    lines = [
        f"{verb} {arch.name} (plugin {arch.plugin}, seed {built.seed}, device {built.device}) "
        f"→ {result.files[0]}  [{result.exporter.name}{opset}, "
        f"{'dynamic: ' + dynamic if dynamic else 'static shapes'}]"
    ]
    if result.check is not None:
        for loss in result.check.losses:
            lines.append(f"  loss      {loss.output}: {loss.loss} {loss.torch:.6f} (closed form {loss.closed_form:.6f}) ok")
        for warning in result.check.warnings:
            lines.append(f"  warning   {warning}")
    fold = result.export_stats.get("fold_linear")
    if fold is not None:
        lines.extend(fold_lines(fold))
    variant_file = result.variant is not None and result.variant_verification is None  # zoo verify of a variant
    lines.extend(verification_lines(verification, variant=variant_file))
    if not variant_file:
        tolerances = "; ".join(f"{k} rtol {v['rtol']:g} atol {v['atol']:g}" for k, v in verification.tolerances.items())
        lines.append(f"  tolerance {tolerances}")
    if result.variant is not None:
        lines.extend(variant_lines(result.variant))
        if result.variant_verification is not None:
            lines.extend(verification_lines(result.variant_verification, variant=True)[1:])
    if result.ok:
        for record in result.file_records:
            lines.append(f"  file      {record['path']}  {human_bytes(record['bytes'])}  sha256 {record['sha256'][:16]}…")
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    lines.append(f"  time      {timings}")
    if getattr(result, "update", None) is not None and result.ok:  # --update: kept, or why it was exported again
        update = result.update
        lines.append("up to date (verified)" if update["status"] == "up to date" else f"exported again: {update['reason']}")
        return lines
    lines.append("ok" if result.ok else f"{verb} FAILED")
    return lines


def verification_lines(verification: Any, variant: bool = False) -> list[str]:
    """The runtime, then one line per case and output: float errors, or a variant's acceptance numbers."""
    providers = f" [{', '.join(verification.providers)}]" if verification.providers else ""  # optional for a runner
    lines = [f"  verify    {verification.runtime}{providers} against PyTorch on {len(verification.cases)} input sizes"]
    if verification.note:
        lines.append(f"  note      {verification.note}")
    for case in verification.cases:
        sizes = sizes_text(case.sizes) or "sample"
        if case.source:
            sizes = f"{case.source} ({sizes})"
        for out_name, stats in case.outputs.items():
            agreements = "".join(
                f"  {k.removesuffix('_agreement').replace('_', ' ')} {v:.1%}" for k, v in stats.items() if k.endswith(DECISIONS)
            )
            if variant:
                loss = stats.get("loss")
                change = f"  loss {(loss['variant'] - loss['torch']) / max(abs(loss['torch']), 1e-12):+.2%}" if loss else ""
                relative = f" ({stats['p99_relative_to_rms']:.2g}× RMS)" if "p99_relative_to_rms" in stats else ""
                verdict = "ok" if not any(out_name in f for f in case.failures) else "NOT ACCEPTED"
                lines.append(f"    {sizes:<18} {out_name}: p99 abs {stats['p99_abs']:.2e}{relative}{agreements}{change}  {verdict}")
            else:
                lines.extend(output_lines(sizes, out_name, stats, agreements.replace(".0%", "%")))
        lines.extend(f"    FAILED {failure}" for failure in case.failures)
    if verification.first_divergence:
        lines.append(f"  diverges  {divergence_text(verification.first_divergence)}")
    return lines


def variant_lines(variant: dict[str, Any]) -> list[str]:
    """Which variant, how it was made, its size against the float32 file, and its criteria."""
    criteria = variant["criteria"]
    made = f" ({variant['method']})" if variant.get("method") else ""
    criteria = criteria if hasattr(criteria, "min_agreement") else SimpleNamespace(**criteria)
    size = ""
    if variant.get("bytes"):
        size = f": {human_bytes(variant['bytes'])}, {variant['bytes'] / variant['float32_bytes']:.2f}× the float32 file"
    return [
        f"  variant   {variant['name']}{made}{size}",
        f"  accept    agreement ≥ {criteria.min_agreement:.1%}, loss change ≤ {criteria.max_loss_change:.0%}, "
        f"p99 error ≤ {criteria.max_error:g}× RMS (regression) on every case",
    ]


def output_lines(sizes: str, name: str, stats: dict[str, Any], extra: str = "") -> list[str]:
    """One output of one case; a failed one gets its full error statistics below."""
    lines = [
        f"    {sizes:<18} {name}: max abs {stats['max_abs']:.2e}  max rel {stats['max_rel']:.2e}"
        f"  out {stats['out_of_tolerance']:.1%}  p99 {stats['abs_error']['p99']:.1g}{extra}  {'ok' if stats['ok'] else 'MISMATCH'}"
    ]
    if not stats["ok"]:
        spread = lambda kind: " ".join(f"{k} {v:.2g}" for k, v in stats[kind].items())  # noqa: E731
        lines.append(
            f"      {stats['out_of_tolerance']:.1%} of {stats['elements']} values out of tolerance; abs {spread('abs_error')}; "
            f"rel {spread('rel_error')}; NaN {stats['nan']['reference']} torch / {stats['nan']['candidate']} exported; "
            f"inf {stats['inf']['reference']} / {stats['inf']['candidate']}; needed atol {stats['needed_atol']:.3g}"
        )
    return lines


def fold_lines(fold: dict[str, Any]) -> list[str]:
    if not fold["chains_folded"]:
        return ["  fold      nothing to fold: no chain of affine ops without a nonlinearity in between"]
    lines = [
        f"  fold      {fold['chains_folded']} chain(s): removed {fold['nodes_removed']} node(s) and "
        f"{fold['flops_per_sample_removed']:,} FLOPs per sample "
        f"({fold['flops_per_sample_before']:,} → {fold['flops_per_sample_after']:,})"
    ]
    lines.extend(f"            {chain}" for chain in fold["chains"])
    return lines


def heading(arch: Architecture) -> str:
    aliases = f" (alias {', '.join(arch.aliases)})" if arch.aliases else ""
    return f"{arch.name}{aliases}, plugin {arch.plugin}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def show_lines(built: Any, info: Any) -> list[str]:
    """``zoo show``: an architecture with its parameters, shapes, layers and warnings."""
    arch = built.arch
    lines = [heading(arch)]
    if arch.summary:
        lines.append(f"  {arch.summary}")
    lines.append("parameters:")
    for p in arch.parameters.values():
        lines.append(f"  {p.name} = {format_value(built.params[p.name])}  ({p.type_name}, default {format_value(p.default)})")
    lines.append("inputs:")
    for inp in arch.inputs:
        symbolic = "×".join(map(str, inp.shape))
        lines.append(f"  {inp.name}: {inp.dtype} {info.input_shapes[inp.name]}  ({symbolic})")
    lines.append("outputs:")
    for out in arch.outputs:
        extra = ", ".join(f"{k} {v}" for k, v in (("task", out.task), ("head", out.head)) if v)
        lines.append(f"  {out.name}: {info.output_shapes.get(out.name)}" + (f"  ({extra})" if extra else ""))
    lines.append("layers:")
    lines.extend(f"  {layer.name:<12} {layer.module}" for layer in info.layers)
    lines.append(f"parameter count: {info.parameters:,} ({info.trainable:,} trainable)")
    lines.extend(f"warning: {warning}" for warning in info.warnings)
    return lines


def list_lines(archs: Sequence[Architecture], pattern: str | None) -> list[str]:
    """``zoo list``: one row per architecture."""
    if not archs:
        return [f"no architecture matches {pattern!r}" if pattern else "no architectures registered"]
    rows = [(a.name, ",".join(a.aliases) or "-", ",".join(a.tasks) or "-", a.shape_text(), a.plugin) for a in archs]
    return [table(("NAME", "ALIASES", "TASK", "INPUTS", "PLUGIN"), rows)]


def plugins_lines(zoo: Any) -> list[str]:
    """``zoo plugins``: each plugin with what it registered and its errors; then the formats and tasks."""
    infos = list(zoo.plugins.values())
    rows = []
    for info in infos:
        registered = [
            f"{kind}: {', '.join(names)}"
            for kind, names in (
                ("tasks", info.tasks), ("architectures", info.architectures), ("exporters", info.exporters), ("commands", info.commands)
            )
            if names
        ]
        dist = f"{info.distribution or '-'}{' (built-in)' if info.builtin else ''}"
        rows.append((info.name, dist, info.version or "-", info.status, "; ".join(registered) or "-"))
    lines = [table(("PLUGIN", "DISTRIBUTION", "VERSION", "STATUS", "REGISTERED"), rows)]
    lines.extend(f"{info.name}: {error}" for info in infos for error in info.errors)
    if len(zoo.exporters):  # what --format takes, and what each format can do
        formats = [
            (e.name, e.suffix, e.plugin, " ".join([*("--" + o.replace("_", "-") for o in e.options), *map(VARIANT_FLAGS.get, e.variants)]) or "-", e.summary or "-")
            for e in zoo.exporters
        ]
        lines += ["", table(("FORMAT", "SUFFIX", "PLUGIN", "OPTIONS", "SUMMARY"), formats)]
    if len(zoo.tasks):  # what Output(task=...) takes, with the heads each task accepts
        tasks = [(t.name, ",".join(t.head_names()), t.plugin, t.summary or "-") for t in zoo.tasks]
        lines += ["", table(("TASK", "HEADS", "PLUGIN", "SUMMARY"), tasks)]
    return lines


def export_summary(results: Sequence[Any], single: bool) -> list[str]:
    """``zoo export``: one export in full, or a table of several."""
    if single:
        return export_lines(results[0])
    lines = [table(("NAME", "STATUS", "MAX ABS ERROR", "TIME", "FILE"), [summary_row(r) for r in results])]
    states = [update_status(r) for r in results]
    if any(state is not None for state in states):  # --update: what each file is now
        failed = sum(not r.ok for r in results)
        kept = sum(r.ok and state == "up to date" for r, state in zip(results, states))
        lines.append(f"{len(results) - failed - kept} exported, {kept} up to date, {failed} failed")
    return lines


def update_status(result: Any) -> str | None:
    """``--update``: "up to date" or "exported" (from a worker's record too); else ``None``."""
    update = getattr(result, "update", None)
    if update is None and hasattr(result, "record"):
        update = result.record.get("update")
    return None if update is None else update["status"]
