"""An export plan: the command's options resolved and validated once, before any model is built.

``--shard I/N`` narrows the targets to every N-th architecture of the sorted
list, starting at the I-th (1-based), so N machines that each run one shard
export every architecture exactly once, with nothing shared but the plugin list.

``zoo export NAME`` and ``zoo export --all`` make the same plan; one has a
single target. Everything a user can get wrong on the command line (format,
opset, tolerances, options, device, parameters, paths) is refused here, so a
plan that exists can be carried out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.build.model import check_device, check_seed
from zoo.build.shapes import dynamic_dims, parse_dim_sizes
from zoo.build.trained import WeightsChoice, eval_set_file, resolve_weights
from zoo.errors import OutputPathError, UsageError, ZooError
from zoo.exporting.update import recorded_metadata
from zoo.files.paths import check_file_path, check_output_path, refuse_folder_name
from zoo.spec.architecture import Architecture
from zoo.spec.exporter import Exporter
from zoo.spec.params import parse_params
from zoo.text import shorten
from zoo.verification.acceptance import Acceptance, parse_metric_drops, variant_name
from zoo.verification.input_files import load_input_files
from zoo.verification.run import check_timeout
from zoo.verification.runtimes import RuntimeChoice, parse_runtimes
from zoo.verification.tolerances import check_tolerances, parse_tolerance


@dataclass(frozen=True)
class Target:
    """One architecture and the file it is exported to."""

    arch: Architecture
    path: Path
    refused: ZooError | None = None  # why it cannot be written (with --all, that target's failure)
    recorded: dict[str, str] | None = None  # --update: the zoo metadata of the file zoo wrote there earlier


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
    update: bool = False  # keep a file zoo wrote that is still what this export would write (zoo.exporting.update)
    seed: int = 0
    device: str = "cpu"
    overrides: dict[str, Any] = field(default_factory=dict)  # typed build parameters (one target only)
    weights: Path | None = None  # (one target only)
    weights_entry: Any = None  # the registered zoo.Weights that ``weights`` is, if any
    eval_path: Path | None = None  # its claim's evaluation set, on this machine
    report: Path | None = None
    inputs: list[Any] = field(default_factory=list)  # the user's verification cases (InputCase, one target only)
    input_files: list[Path] = field(default_factory=list)  # the --inputs files they came from
    variant: str | None = None  # "int8", "fp16": placed instead of the float32 file, once accepted
    acceptance: Acceptance | None = None  # what the variant must meet
    timeout: float | None = None  # seconds each verification may take (--timeout)
    sizes: dict[str, int] = field(default_factory=dict)  # --size: the export sample's sizes (fixed ones with --static)
    calibration: list[Any] = field(default_factory=list)  # the user's rows to calibrate int8 on (InputCase, --calibration)
    calibration_files: list[Path] = field(default_factory=list)
    min_speedup: float | None = None  # the variant must be this many times faster than the float32 file
    runtimes: list[RuntimeChoice] = field(default_factory=list)  # none: the format's own runner

    @property
    def protected(self) -> list[Path]:
        """Files the command reads or writes: no report may replace them."""
        return [t.path for t in self.targets] + ([self.weights] if self.weights else []) + list(self.input_files) + list(self.calibration_files)


def chosen_sizes(texts: Sequence[str], targets: list[Target], overrides: dict[str, Any]) -> dict[str, int]:
    """``--size DIM=N``: checked against the one architecture's dynamic dimensions;
    with ``--all``, against those of any target (each uses the sizes it has)."""
    if not texts:
        return {}
    dims: dict[str, Any] = {}
    for target in reversed(targets):
        dims.update(dynamic_dims(target.arch, {**target.arch.defaults, **overrides}))
    return parse_dim_sizes(texts, dims)


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


@dataclass(frozen=True)
class ExportRequest:
    """``zoo export``'s options as given, before anything is resolved (``plan_export``)."""

    name: str | None = None
    export_all: bool = False
    params: Sequence[str] = ()
    format_name: str = "onnx"
    output: str | Path | None = None
    opset: int | None = None
    static: bool = False
    fold_linear: bool = False
    rtol: Any = None  # --rtol/--atol text from the command line, or numbers
    atol: Any = None
    force: bool = False
    update: bool = False
    seed: int = 0
    device: str = "cpu"
    weights: str | Path | None = None  # a weight set's name, or a state dict file
    report: Path | None = None
    inputs: Sequence[Path] = ()
    quantize: str | None = None
    precision: str | None = None
    min_agreement: float | None = None
    max_loss_change: float | None = None
    max_error: float | None = None
    max_metric_drop: Sequence[str] = ()  # [METRIC=]NUMBER, repeatable
    min_speedup: float | None = None
    calibration: Sequence[Path] = ()
    timeout: float | None = None
    jobs: int = 1
    shard: str | None = None
    sizes: Sequence[str] = ()  # --size DIM=N
    runtimes: Sequence[str] = ()  # --runtime NAME[:KEY=VALUE,...], or all


def plan_export(zoo: Any, request: ExportRequest) -> ExportPlan:
    """The plan for ``zoo export``'s options, or the usage error that says what to change."""
    r = request
    if not r.export_all and (r.jobs > 1 or r.shard):
        raise UsageError("--jobs and --shard split --all; give --all (with an optional NAME pattern)")
    if r.shard is not None:
        parse_shard(r.shard)  # a typo is refused before any work
    rtol, atol = parse_tolerance("--rtol", r.rtol), parse_tolerance("--atol", r.atol)
    exporter = zoo.exporter(r.format_name)
    options = {"fold_linear": True} if r.fold_linear else {}
    opset = resolve_format(exporter, opset=r.opset, rtol=rtol, atol=atol, options=options)
    variant = variant_name(r.quantize, r.precision)
    criteria = {"min_agreement": r.min_agreement, "max_loss_change": r.max_loss_change, "max_error": r.max_error}
    criteria["max_metric_drop"] = parse_metric_drops(r.max_metric_drop) or None
    acceptance = resolve_acceptance(exporter, variant, criteria)
    check_variant_extras(variant, r.min_speedup, r.calibration)
    choices = parse_runtimes(zoo, r.runtimes, exporter)
    suffix = f".{variant}{exporter.suffix}" if variant else exporter.suffix
    check_seed(r.seed)
    check_timeout(r.timeout)
    targets, overrides, choice = planned_targets(zoo, r, suffix)
    targets = [runnable(target, choices) for target in targets]
    if not r.export_all and targets[0].refused is not None:
        raise targets[0].refused
    for target in targets:  # --atol NAME=...: an output of the model
        check_tolerances(rtol, atol, [o.name for o in target.arch.outputs])
    chosen = chosen_sizes(r.sizes, targets, overrides)
    cases = []
    if r.inputs:
        cases = load_input_files(r.inputs, targets[0].arch, {**targets[0].arch.defaults, **overrides}, r.static)
    calibrating = []
    if r.calibration:
        params = {**targets[0].arch.defaults, **overrides}
        calibrating = load_input_files(r.calibration, targets[0].arch, params, r.static, option="--calibration", labels=False)
    check_device(r.device)  # fail before any work when the device is missing
    plan = ExportPlan(
        exporter=exporter, targets=targets, opset=opset, static=r.static, rtol=rtol, atol=atol, options=options, force=r.force,
        update=r.update, seed=r.seed, device=r.device, overrides=overrides, weights=choice.path if choice else None,
        weights_entry=choice.entry if choice else None, eval_path=eval_set_path(choice), report=r.report, variant=variant,
        acceptance=acceptance, inputs=cases, input_files=[Path(f) for f in r.inputs], timeout=r.timeout, sizes=chosen,
        calibration=calibrating, calibration_files=[Path(f) for f in r.calibration], min_speedup=r.min_speedup,
        runtimes=choices,
    )
    if r.report is not None:  # the JSON must never replace the model or its weights
        check_file_path(r.report, "--report", plan.protected)
    plan.targets = writable_targets(r, targets, exporter)
    return plan


def planned_targets(zoo: Any, r: ExportRequest, suffix: str) -> tuple[list[Target], dict[str, Any], WeightsChoice | None]:
    """What to export and where, the build parameters (``-p``, over a registered weight
    set's), and the chosen weights; ``--all`` takes neither parameters nor weights."""
    if r.export_all:
        if r.params or r.weights or r.inputs or r.calibration:
            raise UsageError("--param, --weights, --inputs and --calibration describe one architecture; export it by NAME instead of --all")
        archs = zoo.architectures.filter(r.name)
        if not archs:
            raise UsageError(f"no architecture matches {r.name!r}")
        folder = Path(r.output or ".")
        check_export_folder(folder)
        return [Target(a, folder / f"{a.name}{suffix}") for a in archs], {}, None
    if r.name is None:
        raise UsageError("give an architecture NAME (see 'zoo list') or --all")
    arch = zoo.architecture(r.name)
    if r.output is not None:
        refuse_folder_name(r.output, f"{arch.name}{suffix}")
    overrides = parse_params(r.params, arch.parameters, arch.name)
    choice = resolve_weights(zoo, arch, r.weights)
    if choice is not None and choice.entry is not None:  # a registered name: its build parameters, unless -p overrides one
        overrides = {**choice.entry.params, **overrides}
    return [Target(arch, Path(r.output or f"{arch.name}{suffix}"))], overrides, choice


def runnable(target: Target, choices: Sequence[RuntimeChoice]) -> Target:
    """``target``, refused where an input's dtype is one a chosen runtime cannot take:
    before the build and the export, not when the file is loaded."""
    for choice in choices:
        refused = choice.runtime.refused_dtypes if choice.runtime is not None else ()
        for inp in target.arch.inputs:
            if inp.dtype in refused:
                return Target(target.arch, target.path, UsageError(
                    f"{target.arch.name}: input {inp.name!r} is {inp.dtype}, which {choice.name} cannot take; "
                    f"export a float32 or float16 version of the model, or verify on a --runtime that takes {inp.dtype}"
                ))
    return target


def writable_targets(r: ExportRequest, targets: list[Target], exporter: Exporter) -> list[Target]:
    """The targets this run writes (its ``--shard``), each refused where its file exists
    without ``--force``/``--update``; one NAME's refusal is raised before the build."""
    if r.export_all:  # every option is valid: only now make the folder, then see which files can be written
        make_export_folder(targets[0].path.parent)
        mine = shard_of(targets, *parse_shard(r.shard)) if r.shard is not None else targets
        return [t if t.refused is not None else refuse_existing(t, r.force, exporter if r.update else None) for t in mine]
    target = refuse_existing(targets[0], r.force, exporter if r.update else None)  # a big model's build costs seconds and GBs
    if target.refused is not None:
        raise target.refused
    return [target]


def eval_set_path(choice: Any) -> Path | None:
    """The evaluation set of the chosen weight set's claim, fetched and checked; ``None`` without one."""
    if choice is None or choice.entry is None or choice.entry.claim is None:
        return None
    return eval_set_file(choice.entry.claim.eval_set, choice.entry)


def resolve_acceptance(exporter: Exporter, variant: str | None, criteria: dict[str, float | None]) -> Acceptance | None:
    """The variant's acceptance criteria: the defaults, with what the command line gives."""
    given = {k: v for k, v in criteria.items() if v is not None}
    if variant is None:
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise UsageError(f"{flags} judge a variant: add --quantize int8 or --precision fp16")
        return None
    if variant not in exporter.variants:
        makes = ", ".join(exporter.variants) or "no variants"
        raise UsageError(f"the {exporter.name} format cannot make the {variant} variant (it makes {makes})")
    return Acceptance(**given)


def check_variant_extras(variant: str | None, min_speedup: float | None, calibration: Sequence[Path]) -> None:
    """``--min-speedup`` judges a variant; ``--calibration`` calibrates an int8 one."""
    if min_speedup is not None and variant is None:
        raise UsageError("--min-speedup judges a variant: add --quantize int8 or --precision fp16")
    if min_speedup is not None and not (math.isfinite(min_speedup) and min_speedup > 0):
        raise UsageError(f"--min-speedup {min_speedup}: give a ratio above 0, such as 1.5 (1.5× as fast as the float32 file)")
    if calibration and variant != "int8":
        raise UsageError("--calibration calibrates an int8 variant: add --quantize int8")


def check_export_folder(folder: Path) -> None:
    """``--all -o FOLDER``: an existing folder, or a new one whose parent exists."""
    if folder.is_dir():
        return
    if folder.exists():
        raise OutputPathError(f"with --all, -o names a folder; {str(folder)!r} is a file")
    if not folder.parent.is_dir():
        raise OutputPathError(
            f"with --all, -o {str(folder)!r}: its parent folder {str(folder.parent)!r} does not exist; create it first"
        )


def make_export_folder(folder: Path) -> None:
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"with --all, -o {str(folder)!r}: cannot create the folder ({exc.strerror or exc})") from exc


SHARD_PATTERN = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: the 2nd of 4 shards (1-based)."""
    match = SHARD_PATTERN.fullmatch(text) if len(text) <= 41 else None  # two 20-digit numbers at most: int() has a digit limit
    index, count = (int(match[1]), int(match[2])) if match else (0, 0)
    if not 1 <= index <= count:
        raise UsageError(f"--shard {shorten(text)!r}: write I/N with 1 <= I <= N, such as 1/4 (the first of four shards)")
    return index, count


def shard_of(targets: list[Target], index: int, count: int) -> list[Target]:
    """The ``index``-th (1-based) of ``count`` disjoint shards of ``targets`` (sorted by name)."""
    return sorted(targets, key=lambda t: t.arch.name)[index - 1 :: count]


def refuse_existing(target: Target, force: bool, update: Exporter | None = None) -> Target:
    """``target``, with the reason its path cannot be written, if any. With
    ``update`` (the format's exporter, for ``--update``) an existing file zoo
    wrote may be replaced, and its metadata is kept to compare; one zoo did not
    write is refused as without ``--update``."""
    recorded = recorded_metadata(update, target.path) if update is not None else None
    try:
        check_output_path(target.path, force or recorded is not None)
    except OutputPathError as exc:
        refused = exc
        if update is not None and not force and target.path.is_file() and not target.path.is_symlink():
            refused = OutputPathError(
                f"{str(target.path)!r} already exists and zoo did not write it; --update leaves it alone (pass --force to overwrite it)"
            )
        return Target(target.arch, target.path, refused)
    except ZooError as exc:
        return Target(target.arch, target.path, exc)
    return Target(target.arch, target.path, recorded=recorded)
