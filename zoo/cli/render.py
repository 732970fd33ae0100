"""Text the CLI prints: tables and one-screen summaries of checks, exports and benchmarks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from zoo.cli.render_variants import claim_line, labelled_drops, metric_lines, speed_lines, variant_lines
from zoo.spec.architecture import Architecture
from zoo.spec.params import format_value
from zoo.text import human_bytes, human_rate, human_seconds, sizes_text
from zoo.verification.divergence import divergence_text
from zoo.verification.results import summary_row


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
        unused = len(grads["no_grad"])
        state = "BROKEN gradients" if grads["non_finite"] else "all gradients finite"
        reached = f"{grads['parameters'] - unused} of {grads['parameters']}" if unused else str(grads["parameters"])
        lines.append(f"  backward  {reached} parameter tensors, {state} (norm {grads['norm']:.4g})")
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
        *(f"  {'':<9} {other['description']} [{', '.join(other['providers'])}], verified too" for other in result.other_runtimes or []),
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
            f"{row.speedup:.2f}×" if row.reliable else f"({row.speedup:.2f}×?)",
        ]
        for row in result.rows
    ]
    for other in result.other_runtimes or []:  # one latency column per further runtime
        name = other["name"]
        headers += [f"{name.upper()} MEDIAN", f"{name.upper()} SAMPLES/S"]
        for cells, row in zip(rows, result.rows):
            cells += [human_seconds(row.others[name].median), human_rate(row.others[name].throughput)]
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
    for row in result.rows:
        for timing in (row.torch, row.onnx, row.variant):
            if timing is not None and timing.unreliable:
                where = ", ".join(f"{k}={v}" for k, v in (row.sizes or {"batch": row.batch}).items())
                lines.append(f"warning: {where} {timing.runtime}: {timing.unreliable}; its speed-up (in brackets) is no measurement: raise --budget or quiet the machine")
    return lines


# what every case reports; any other entry is a task's fraction (argmax_agreement, exact_match)
VARIANT_FLAGS = {"int8": "--quantize int8", "fp16": "--precision fp16"}  # how a format's variants are asked for
DECISIONS = ("_agreement", "exact_match")  # per-case stats that are fractions of decisions, shown as percentages


def export_lines(result: Any, verb: str = "export", detail: bool = False) -> list[str]:
    built, verification = result.built, result.verification
    arch = built.arch
    fixed = verification.fixed
    dynamic = ", ".join(sorted({s for case in verification.cases for s in case.sizes} - set(fixed))) if not result.static else ""
    shapes = ("dynamic: " + dynamic if dynamic else "static shapes") + (
        f"; the file fixes {', '.join(f'{k}={v}' for k, v in fixed.items())}" if fixed and not result.static else ""
    )
    opset = f", opset {result.opset}" if result.opset is not None else ""  # formats without opsets show none
    lines = [
        f"{verb} {arch.name} (plugin {arch.plugin}, seed {built.seed}, device {built.device}) "
        f"→ {result.files[0]}  [{result.exporter.name}{opset}, "
        f"{shapes}]"
    ]
    if built.weights and built.weights.get("name"):
        lines.append(f"  weights   {built.weights['name']} (plugin {built.weights['plugin']}), sha256 {built.weights['sha256'][:16]}…")
    if result.check is not None:
        for loss in result.check.losses:
            lines.append(f"  loss      {loss.output}: {loss.loss} {loss.torch:.6f} (closed form {loss.closed_form:.6f}) ok")
        for warning in result.check.warnings:
            lines.append(f"  warning   {warning}")
    fold = result.export_stats.get("fold_linear")
    if fold is not None:
        lines.extend(fold_lines(fold))
    variant_file = result.variant is not None and result.variant_verification is None  # zoo verify of a variant
    for each in result.verifications or [verification]:  # one block per runtime
        lines.extend(verification_lines(each, variant=variant_file, detail=detail))
    if not variant_file:
        tolerances = "; ".join(f"{k} rtol {v['rtol']:g} atol {v['atol']:g}" for k, v in verification.tolerances.items())
        lines.append(f"  tolerance {tolerances}")
    if len(result.verifications) > 1:
        lines.extend(runtime_table(result.verifications))
    if result.variant is not None:
        lines.extend(variant_lines(result.variant, labelled_drops(result.variant_verification or verification)))
        if result.variant_verification is not None:
            lines.extend(verification_lines(result.variant_verification, variant=True, detail=detail)[1:])
        for judged in result.variant.get("runtimes", []):  # --runtime: each one's verdict on the variant
            verdict = "accepted" if judged["accepted"] else f"NOT ACCEPTED: {judged['failure']}"
            lines.append(f"  {result.variant['name'] + ' on':<9} {judged['runtime']['name']} {judged['runtime']['version']}: {verdict}")
        lines.extend(speed_lines(result.variant))
    lines.extend(metric_lines(result))
    if result.claim is not None:
        lines.append(claim_line(result.claim))
        lines.extend(f"    FAILED {failure}" for failure in result.claim.failures)
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


def ties_text(stats: dict[str, Any], key: str) -> str:
    """`` (1 of 16 rows a tie)`` beside a variant's agreement, when it had ties."""
    kind = key.removesuffix("_agreement")
    ties = stats.get(f"{kind}_ties")
    return f" ({ties} of {stats[f'{kind}_rows']} rows a tie)" if ties else ""


def verification_lines(verification: Any, variant: bool = False, detail: bool = False) -> list[str]:
    """The runtime, then one line per case and output: float errors, or a variant's acceptance numbers.
    The first failing case gets its statistics and FAILED lines; the others (unless ``detail``, ``-v``)
    only their output lines, and one line counts them."""
    providers = f" [{', '.join(verification.providers)}]" if verification.providers else ""  # optional for a runner
    lines = [f"  verify    {verification.runtime}{providers} against PyTorch on {len(verification.cases)} input size{'s' if len(verification.cases) != 1 else ''}"]
    if verification.note:
        lines.append(f"  note      {verification.note}")
    failing = [case for case in verification.cases if not case.ok]
    labels = [case_name(case) for case in verification.cases]
    width = max([18, *map(len, labels)])  # the outputs line up under the longest label (a file's name)
    for case, label in zip(verification.cases, labels):
        full = detail or not failing or case is failing[0]
        sizes = label.ljust(width)
        for out_name, stats in case.outputs.items():
            agreements = "".join(
                f"  {k.removesuffix('_agreement').replace('_', ' ')} {v:.1%}{ties_text(stats, k)}"
                for k, v in stats.items() if k.endswith(DECISIONS)
            )
            if variant and "p99_abs" in stats:  # an integer output is compared exactly, as without a variant
                loss = stats.get("loss")
                change = f"  loss {(loss['variant'] - loss['torch']) / max(abs(loss['torch']), 1e-12):+.2%}" if loss else ""
                relative = f" ({stats['p99_relative_to_rms']:.2g}× RMS)" if "p99_relative_to_rms" in stats else ""
                verdict = "ok" if not any(out_name in f for f in case.failures) else "NOT ACCEPTED"
                verdict = "below these, labels judge" if verdict == "ok" and stats.get("not_judged") else verdict
                lines.append(f"    {sizes:<18} {out_name}: p99 abs {stats['p99_abs']:.2e}{relative}{agreements}{change}  {verdict}")
            else:
                lines.extend(output_lines(sizes, out_name, stats, agreements.replace(".0%", "%"))[: None if full else 1])
        if full:
            lines.extend(f"    FAILED {failure}" for failure in case.failures)
    if len(failing) > 1 and not detail:
        lines.append(f"    FAILED in {len(failing)} of {len(verification.cases)} cases; each one's statistics with -v, "
                     "and in --json/--report")
    if verification.first_divergence:
        lines.append(f"  diverges  {divergence_text(verification.first_divergence)}")
    if verification.diagnosis:
        lines.append(f"  why       {verification.diagnosis['text']}")
    return lines


def case_name(case: Any) -> str:
    sizes = sizes_text(case.sizes) or "sample"
    return f"{case.source} ({sizes})" if case.source else sizes














def runtime_table(verifications: Sequence[Any]) -> list[str]:
    """The verdict per runtime, one line each, after the blocks."""
    rows = []
    for v in verifications:
        info = v.runner or {}
        settings = ", ".join(f"{k}={val}" for k, val in info.get("settings", {}).items()) or "-"
        verdict = "ok" if v.ok else ("MATCHES WITH PRECISE SETTINGS" if (v.diagnosis or {}).get("matches_with_precise") else "FAILED")
        rows.append((info.get("name", v.runtime), info.get("version", ""), info.get("device", ""), ",".join(info.get("providers", [])) or "-",
                     settings, f"{v.max_abs:.2e}", verdict))
    return ["  runtimes", *("    " + line for line in table(("RUNTIME", "VERSION", "DEVICE", "PROVIDERS", "SETTINGS", "MAX ABS", "VERDICT"), rows).splitlines())]




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
            f"inf {stats['inf']['reference']} / {stats['inf']['candidate']}; needed atol {needed_atol_text(stats)}"
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


def show_lines(built: Any, info: Any, weights: Sequence[Any] = ()) -> list[str]:
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
    if weights:  # --weights NAME
        lines.append("weights:")
        for w in weights:
            params = ", ".join(f"{k}={format_value(v)}" for k, v in w.params.items())
            lines.append(f"  {w.name}{' (default)' if w.default else ''}  {w.claim_text()}  (plugin {w.plugin}{'; ' + params if params else ''})")
            if w.summary:
                lines.append(f"    {w.summary}")
    return lines


def list_lines(archs: Sequence[Architecture], pattern: str | None, weights: Any = None) -> list[str]:
    """``zoo list``: one row per architecture; a WEIGHTS column once any weight set is registered."""
    if not archs:
        return [f"no architecture matches {pattern!r}" if pattern else "no architectures registered"]
    rows = [(a.name, ",".join(a.aliases) or "-", ",".join(a.tasks) or "-", a.shape_text(), a.plugin) for a in archs]
    if weights is None or not len(weights):
        return [table(("NAME", "ALIASES", "TASK", "INPUTS", "PLUGIN"), rows)]
    named = [",".join(w.name for w in weights.of(a.name)) or "-" for a in archs]
    return [table(("NAME", "ALIASES", "TASK", "INPUTS", "WEIGHTS", "PLUGIN"), [(*r[:4], n, r[4]) for r, n in zip(rows, named)])]








def export_summary(results: Sequence[Any], single: bool, detail: bool = False) -> list[str]:
    """``zoo export``: one export in full, or a table of several."""
    if single:
        return export_lines(results[0], detail=detail)
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


def needed_atol_text(stats: dict[str, Any]) -> str:
    return "none (NaN or inf on one side)" if stats.get("needed_atol") is None else f"{stats['needed_atol']:.3g}"
