"""An export plan: the command's options resolved and validated once, before any model is built.

``zoo export NAME`` and ``zoo export --all`` make the same plan; one has a
single target. Everything a user can get wrong on the command line (format,
opset, tolerances, options, device, parameters, paths) is refused here, so a
plan that exists can be carried out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.artifacts import check_file_path, check_output_path, refuse_folder_name
from zoo.errors import OutputPathError, UsageError, ZooError
from zoo.spec import Architecture, Exporter
from zoo.verification import check_tolerances


@dataclass(frozen=True)
class Target:
    """One architecture and the file it is exported to."""

    arch: Architecture
    path: Path
    refused: ZooError | None = None  # why it cannot be written (with --all, that target's failure)


@dataclass
class ExportPlan:
    exporter: Exporter
    targets: list[Target]
    opset: int | None = None
    static: bool = False
    rtol: float | None = None
    atol: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    force: bool = False
    seed: int = 0
    device: str = "cpu"
    overrides: dict[str, Any] = field(default_factory=dict)  # typed build parameters (one target only)
    weights: Path | None = None  # (one target only)
    report: Path | None = None

    @property
    def protected(self) -> list[Path]:
        """Files the command reads or writes: no report may replace them."""
        return [t.path for t in self.targets] + ([self.weights] if self.weights else [])


def resolve_format(
    exporter: Exporter,
    *,
    opset: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    options: dict[str, Any] | None = None,
) -> int | None:
    """Refuse what ``exporter`` cannot do (a usage error), before a model is built
    or checked; returns the opset to export with."""
    check_tolerances(rtol, atol)
    unsupported = [name for name, value in (options or {}).items() if value and name not in exporter.options]
    if unsupported:
        flags = ", ".join("--" + name.replace("_", "-") for name in unsupported)
        raise UsageError(f"the {exporter.name} exporter (plugin {exporter.plugin!r}) does not support {flags}")
    return exporter.resolve_opset(opset)


def plan_export(
    zoo: Any,
    name: str | None,
    *,
    export_all: bool = False,
    params: Sequence[str] = (),
    format_name: str = "onnx",
    output: str | Path | None = None,
    opset: int | None = None,
    static: bool = False,
    fold_linear: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    force: bool = False,
    seed: int = 0,
    device: str = "cpu",
    weights: Path | None = None,
    report: Path | None = None,
) -> ExportPlan:
    """The plan for ``zoo export``'s options, or the usage error that says what to change."""
    from zoo.model import check_seed, torch_device
    from zoo.params import parse_params

    exporter = zoo.exporter(format_name)
    options = {"fold_linear": True} if fold_linear else {}
    opset = resolve_format(exporter, opset=opset, rtol=rtol, atol=atol, options=options)
    check_seed(seed)
    if export_all:
        if params or weights:
            raise UsageError("--param and --weights describe one architecture; export it by NAME instead of --all")
        archs = zoo.architectures.filter(name)
        if not archs:
            raise UsageError(f"no architecture matches {name!r}")
        folder = Path(output or ".")
        if not folder.is_dir():
            raise OutputPathError(f"with --all, -o must be an existing folder; {str(folder)!r} is not")
        targets = [refusing(Target(a, folder / f"{a.name}{exporter.suffix}"), force) for a in archs]
        overrides: dict[str, Any] = {}
    elif name is None:
        raise UsageError("give an architecture NAME (see 'zoo list') or --all")
    else:
        arch = zoo.architecture(name)
        if output is not None:
            refuse_folder_name(output, f"{arch.name}{exporter.suffix}")
        targets = [Target(arch, Path(output or f"{arch.name}{exporter.suffix}"))]
        overrides = parse_params(params, arch.parameters, arch.name)
    torch_device(device)  # fail before any work when the device is missing
    plan = ExportPlan(
        exporter, targets, opset, static, rtol, atol, options, force, seed, device, overrides, weights, report
    )
    if report is not None:  # the JSON must never replace the model or its weights
        check_file_path(report, "--report", plan.protected)
    if not export_all:  # before the build: a big model costs seconds and GBs
        check_output_path(targets[0].path, force)
    return plan


def refusing(target: Target, force: bool) -> Target:
    """``target``, with the reason its path cannot be written, if any."""
    try:
        check_output_path(target.path, force)
    except ZooError as exc:
        return Target(target.arch, target.path, exc)
    return target
