"""Where a failed verification diverges: the first module whose output differs.

The exporter exposes the value each module scope ends with in the exported
graph (``Exporter.intermediates``); PyTorch's are caught with forward hooks on
every module. Walking them in the order the graph computes them, the first
beyond tolerance is where the export went wrong: a node, its op and the module
path it came from.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from zoo.build.model import BuiltModel, call_module, ieee_float32
from zoo.errors import VerificationFailed, ZooError
from zoo.host.plugin_calls import call_exporter
from zoo.text import dtype_text
from zoo.verification.compare import as_numpy, error_stats, rounded_up
from zoo.verification.results import Verification
from zoo.verification.tolerances import tolerance_for

log = logging.getLogger(__name__)


def module_outputs(built: BuiltModel, inputs: dict[str, Any]) -> dict[str, Any]:
    """Each module's output (its first tensor) on ``inputs``, by module path."""
    import torch

    seen: dict[str, Any] = {}

    def hook(name: str) -> Any:
        def record(module: Any, args: Any, output: Any) -> None:
            if isinstance(output, (tuple, list)):
                output = next((o for o in output if isinstance(o, torch.Tensor)), None)
            if isinstance(output, torch.Tensor) and not output.is_nested:  # a fused fast path's nested tensor has no shape
                seen[name] = output.detach().cpu()

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in built.module.named_modules()]
    try:
        with torch.no_grad(), ieee_float32(built.device):
            call_module(built.arch, built.module, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def first_divergence(
    built: BuiltModel, expose: Callable[..., Any], path: Any, inputs: dict[str, Any], rtol: Any, atol: Any,
    feed_names: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """The first module scope, in graph order, whose last node's output is beyond
    tolerance from that module's output in PyTorch; ``None`` when none is (or the
    runtime cannot tell). ``expose(path, feed)`` returns the values of the file's module
    scopes as the runtime that failed computes them (``Runtime.intermediates``)."""
    feed_names = feed_names or {}
    feed = {feed_names.get(name, name): as_numpy(t) for name, t in inputs.items()}
    try:
        exposed = call_exporter(expose, path, feed, error=VerificationFailed, what="intermediate values")  # type: ignore[arg-type]
    except ZooError as exc:  # a diagnosis that fails must not hide the failure it explains
        log.info("%s", exc)
        return None
    try:
        reference = module_outputs(built, inputs)
    except Exception as exc:  # noqa: BLE001 - the same: a diagnosis, never a new failure
        log.info("hooked forward pass raised %s", exc)
        return None
    for item in exposed:
        ref = reference.get(item["module"])
        if ref is None or tuple(ref.shape) != tuple(item["value"].shape):
            continue
        dtype = dtype_text(ref.dtype)
        tol = tolerance_for(built.arch, built.device, dtype, rtol, atol)
        stats = error_stats(as_numpy(ref), item["value"], tol.rtol if tol else 0.0, tol.atol if tol else 0.0)
        if not stats["ok"]:
            return {
                "node": item["node"], "op": item["op"], "module": item["module"] or "(root)", "class": item.get("class", ""),
                "max_abs": stats["abs_error"]["max"], "out_of_tolerance": stats["out_of_tolerance"], "needed_atol": stats["needed_atol"],
            }
    return None


def divergence_text(found: dict[str, Any]) -> str:
    return f"first divergence at node {found['node']!r} (module {found['module']}, {found['op']}): max abs {found['max_abs']:.3g}"


def failure_text(verification: Verification, several_runtimes: bool = False, tolerance_options: bool = True) -> str:
    """The one line of a failed verification: its first failure, where it diverges
    when known, and the runtime it failed on where that is the news (one of
    several, or a runtime whose precise settings make it match). The atol it
    names is the one every case passes at; ``tolerance_options``: the command
    takes ``--atol`` (``zoo bench`` does not)."""
    diagnosis = verification.diagnosis or {}
    runner = verification.runner or {}
    where = ""
    if (several_runtimes or diagnosis.get("matches_with_precise")) and runner.get("name"):
        settings = ", ".join(f"{k} {v}" for k, v in runner.get("settings", {}).items())
        where = f" on {runner['name']}" + (f" ({settings})" if settings else "")
    first = verification.failures[0]
    needed = verification.needed_atol
    if needed is not None and sum(not case.ok for case in verification.cases) > 1:
        first = ATOL_HINT.sub(f"atol {rounded_up(needed)} would pass on every case", first, count=1)
    text = f"verification failed{where}: {first}"
    if verification.first_divergence:
        text += "; " + divergence_text(verification.first_divergence)
    if diagnosis.get("matches_with_precise"):
        asked = ",".join(f"{k}={v}" for k, v in diagnosis["precise_settings"].items())
        text += f"; with {asked} it matches: prove the file as you deploy it, with --runtime {runner['name']}:{asked}"
        if tolerance_options and needed:
            text += f", or accept the difference with --atol {rounded_up(needed)}"
    return text


ATOL_HINT = re.compile(r"atol \S+ would pass")  # zoo.verification.compare.atol_hint's, for one case
