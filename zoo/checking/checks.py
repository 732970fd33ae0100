"""``zoo check``: forward pass, head checks, loss check and backward, with numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from zoo.build.model import BuiltModel
from zoo.build.shapes import VERIFY_SEED_OFFSET, concrete, verification_cases
from zoo.checking.describe import watch_forward
from zoo.checking.task_calls import (
    LOSS_TOLERANCES,
    HeadCheck,
    closed_form_loss,
    head_checks,
    loss_name,
    losses_agree,
    make_target,
    torch_loss,
)
from zoo.errors import CheckFailed
from zoo.host.plugin_calls import plugin_code, plugin_fault
from zoo.progress import stage
from zoo.records import Record, json_field
from zoo.text import dtype_text, human_bytes


@dataclass
class LossCheck(Record):
    JSON_EXTRA = (("abs_diff", "difference"),)

    output: str
    loss: str
    torch: float
    closed_form: float
    ok: bool

    @property
    def difference(self) -> float:
        return abs(self.torch - self.closed_form)


@dataclass
class CheckResult(Record):
    """What ``zoo check`` found. ``inputs`` and ``output_order`` are the sample the
    checks ran on, kept for the export so it runs no second forward pass."""

    JSON_EXTRA = (("ok", "ok"),)

    architecture: str
    plugin: str
    params: dict[str, Any]
    seed: int
    device: str
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> shape, dtype, finite
    heads: list[HeadCheck] = field(default_factory=list)
    losses: list[LossCheck] = field(default_factory=list)
    gradients: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = json_field(skip=True, default_factory=dict)  # name -> tensor, as generated
    output_order: list[str] = json_field(skip=True, default_factory=list)  # as forward returned them

    @property
    def ok(self) -> bool:
        return not self.failures


def check_model(built: BuiltModel, backward: bool = True) -> CheckResult:
    """Run every check on ``built``; failures are collected, not raised."""
    import torch


    arch = built.arch
    result = CheckResult(arch.name, arch.plugin, built.params, built.seed, built.device)
    inputs = built.sample_inputs()
    # copies: a model may change its inputs in place, and the export traces on these
    result.inputs = {name: tensor.clone() for name, tensor in inputs.items()}
    sizes = built.export_sizes
    result.warnings, outputs = watch_forward(built, inputs, grad=backward)
    result.output_order = list(outputs)
    if built.left_out:
        many = len(built.left_out) > 1
        result.warnings.append(
            f"forward also returns {_clip(built.left_out)}, which no declared output takes: "
            f"{'they are' if many else 'it is'} left out of the export (declare {'them' if many else 'it'} to export and verify {'them' if many else 'it'})"
        )

    generator = torch.Generator().manual_seed(built.seed + 1)
    total = None
    for spec in arch.outputs:
        value = outputs[spec.name]
        finite = bool(torch.isfinite(value).all()) if value.is_floating_point() else True
        result.outputs[spec.name] = {"shape": list(value.shape), "dtype": dtype_text(value.dtype), "finite": finite}
        if not finite:
            result.failures.append(f"output {spec.name!r} has NaN or infinite values")
            continue
        if spec.shape is not None:
            want = concrete(spec.shape, built.params, sizes, f"output {spec.name!r}")
            if tuple(value.shape) != want:
                result.failures.append(f"output {spec.name!r} has shape {tuple(value.shape)}, expected {want}")
                continue
        dtype = dtype_text(value.dtype)
        numpy_value = value.detach().cpu().double().numpy()  # numpy has no bfloat16
        for head in head_checks(spec, numpy_value, dtype):
            result.heads.append(head)
            if not head.ok:
                result.failures.append(f"head check failed on {spec.name!r}: {head.check} ({head.detail})")
        if spec.task is None:
            continue
        target = make_target(spec, value.detach().cpu(), generator).to(value.device)
        loss = torch_loss(spec, value, target)
        closed = closed_form_loss(spec, numpy_value, target.detach().cpu().double().numpy(), dtype)
        # The framework loss computes in the output's dtype, the closed form in float64.
        tol = LOSS_TOLERANCES.get(dtype, LOSS_TOLERANCES["float32"])
        ok = math.isfinite(loss.item()) and losses_agree(loss.item(), closed, tol.rtol, tol.atol)
        result.losses.append(LossCheck(spec.name, loss_name(spec), loss.item(), closed, ok))
        if not ok:
            result.failures.append(
                f"loss check failed on {spec.name!r}: torch {loss.item():.6g} vs closed form {closed:.6g}"
            )
        total = loss if total is None else total + loss

    if result.ok:
        _check_other_sizes(built, result)
    if backward and result.ok:
        if total is None:  # no task: still prove gradients flow
            floats = [v for v in outputs.values() if v.is_floating_point()]
            total = sum(v.float().mean() for v in floats) if floats else None
        stage("check: backward")
        _check_gradients(built, total, result)
    return result


SMALL_CASE = 8  # sizes up to this are cheap enough to run in every check
SAMPLE_INPUTS_GUIDE = "docs/plugins.md#realistic-inputs-sample_inputs"


def _check_other_sizes(built: BuiltModel, result: CheckResult) -> None:
    """PyTorch itself on the small verification sizes, with the inputs verification
    will generate: a model that gives NaN there (a random mask that pads a whole row)
    fails here, with the remedy, before any export."""
    import torch

    cases = verification_cases(built.arch, built.params, built.sizes)[1:]
    for index, sizes in enumerate(cases, start=1):
        if any(size > SMALL_CASE for size in sizes.values()):
            continue
        inputs = built.sample_inputs(sizes, seed=built.seed + VERIFY_SEED_OFFSET + index)
        with torch.no_grad():
            outputs = built.forward(inputs)
        for name, value in outputs.items():
            if not value.is_floating_point() or bool(torch.isfinite(value).all()):
                continue
            bad = (~torch.isfinite(value)).reshape(len(value), -1).any(dim=1).nonzero().flatten().tolist() if value.dim() else [0]
            where = ", ".join(f"{k}={v}" for k, v in sizes.items())
            result.failures.append(
                f"output {name!r} is NaN or infinite in PyTorch itself at {where}, row(s) {', '.join(map(str, bad[:8]))} "
                f"of {len(value) if value.dim() else 1}, on generated inputs that verification uses too; if real inputs "
                f"never look like these, give the architecture sample_inputs that make realistic ones ({SAMPLE_INPUTS_GUIDE})"
            )
            return


def _check_gradients(built: BuiltModel, total: Any, result: CheckResult) -> None:
    """Backward from ``total``; each gradient is measured and freed the moment
    autograd accumulates it (a post-accumulate-grad hook), so the pass never
    holds a gradient for every weight: at most the ones still in flight."""
    params = [(name, p) for name, p in built.module.named_parameters() if p.requires_grad]
    for _, p in params:
        p.grad = None
    if total is None or not params:
        result.gradients = {"parameters": len(params), "checked": False}
        return
    squares: dict[str, float] = {}
    total_bytes = sum(p.numel() * p.element_size() for _, p in params)
    done = [0]  # bytes of weights whose gradient has been checked, for a terminal
    hooks = [p.register_post_accumulate_grad_hook(_measure_and_free(name, squares, done, total_bytes)) for name, p in params]
    try:
        with plugin_code():  # a custom autograd Function's backward is the plugin's code too
            try:
                total.backward()
            except BaseException as exc:  # noqa: BLE001 - the model's own bug (sys.exit() too), reported as a failed check
                if not plugin_fault(exc):
                    raise
                raise CheckFailed(f"{built.arch.name}: backward pass raised {type(exc).__name__}: {exc}") from exc
    finally:
        for hook in hooks:
            hook.remove()
        for _, p in params:
            p.grad = None
    missing = [name for name, _ in params if name not in squares]
    bad = [name for name, value in squares.items() if not math.isfinite(value)]
    norm = math.sqrt(sum(squares.values()))
    result.gradients = {"parameters": len(params), "checked": True, "no_grad": missing, "non_finite": bad, "norm": norm}
    if missing:  # used only in training (Wav2Vec2's masked_spec_embed): the exported graph does not need it
        many = len(missing) != 1
        result.warnings.append(
            f"{len(missing)} parameter{'s' if many else ''} unused in eval mode: {_clip(missing)} "
            f"(the loss gives {'them' if many else 'it'} no gradient; the export leaves {'them' if many else 'it'} out)"
        )
    if bad:
        result.failures.append(f"non-finite gradients for {', '.join(bad)}")


def _measure_and_free(name: str, squares: dict[str, float], done: list[int], total_bytes: int) -> Any:
    def hook(param: Any) -> None:
        squares[name] = squares.get(name, 0.0) + _squared_sum(param.grad)  # tied weights: one parameter, one hook
        param.grad = None
        done[0] += param.numel() * param.element_size()
        stage(f"check: backward, gradients of {human_bytes(done[0])} of {human_bytes(total_bytes)} of weights checked")

    return hook


def _clip(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


# Small float64 slices: a float64 copy of a 2 GB gradient would triple the
# check's peak memory on large models, and slices this size reuse freed memory
# instead of faulting in fresh pages.
_SLICE = 1 << 16


def _squared_sum(tensor: Any) -> float:
    """Sum of squares in float64: not finite when an element is not (or, for a
    float64 gradient, past 1e154, which is broken anyway)."""
    return sum(float(part.double().square().sum()) for part in tensor.detach().reshape(-1).split(_SLICE))
