"""Re-verifying a file: which exporter wrote it, what its metadata asks to build, and the verification."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo import interrupts
from zoo.build.model import MAX_SEED, build_model, check_seed
from zoo.build.sizing import dry_build
from zoo.build.trained import WeightsChoice, eval_set_file, name_weights, resolve_weights
from zoo.build.weights import check_regular_file, read_state_dict, sha256, tensors_sha256
from zoo.errors import UsageError, VerificationFailed, ZooError, damaged_metadata, one_line
from zoo.files.paths import check_input_file, warn
from zoo.files.staging import side_files
from zoo.host.plugin_calls import call_exporter
from zoo.progress import timed
from zoo.spec.exporter import Exporter
from zoo.spec.job import META_PREFIX
from zoo.spec.params import coerce_params, parse_params
from zoo.verification.acceptance import Acceptance, judged_criteria
from zoo.verification.claim import score_claim
from zoo.verification.divergence import failure_text
from zoo.verification.input_files import load_input_files
from zoo.verification.results import VerifyResult
from zoo.verification.run import check_timeout, verify_on_runtimes
from zoo.verification.runtimes import parse_runtimes, recorded_runtimes
from zoo.verification.tolerances import ToleranceOption, check_tolerances, parse_tolerance


def exported_metadata(exporter: Exporter, path: Path) -> dict[str, str]:
    """The ``zoo.*`` metadata of a file zoo just wrote, as its exporter reads it back."""
    raw = call_exporter(exporter.read_metadata, path, error=VerificationFailed, what=f"{exporter.name} could not read {path.name}")
    return {k: v for k, v in dict(raw or {}).items() if k.startswith(META_PREFIX)}


def check_artifact(exporter: Exporter, path: Path) -> None:
    """The format's own structural check of a file (``onnx.checker``), if it has one."""
    if exporter.check is not None:
        call_exporter(exporter.check, path, error=VerificationFailed, what=f"{path.name} fails the {exporter.name} check")


def read_artifact(exporters: Any, path: Path, arch_given: bool = False) -> tuple[Exporter, dict[str, str]]:
    """The exporter that wrote ``path`` and the zoo metadata in it.

    The suffix only says which readers to ask first: two formats may share a
    suffix, and ``-o`` may give any name (docs/plugins.md). The first reader that
    parses the file decides; the exporter named in its metadata verifies it.
    """
    matching = [e for e in exporters if path.name.endswith(e.suffix)]
    failures: list[tuple[Exporter, ZooError]] = []
    for exporter in [*matching, *(e for e in exporters if e not in matching)]:
        try:
            raw = call_exporter(exporter.read_metadata, path, error=UsageError, what=f"not a readable {exporter.name} file", limit=150)
        except UsageError as exc:  # not this format: try the next reader
            failures.append((exporter, exc))
            continue
        meta = {k[len(META_PREFIX) :]: v for k, v in dict(raw or {}).items() if k.startswith(META_PREFIX)}
        if "architecture" not in meta:  # a real file of this format, not one zoo wrote: another reader will not change that
            if arch_given:
                return exporter, {}
            raise UsageError(
                f"{str(path)!r} has no zoo metadata ('zoo export' did not write it); "
                "pass --arch NAME (see 'zoo list') and its --param values to verify it against that architecture"
            )
        name = meta.get("exporter", exporter.name)
        writer = exporters.get(name)
        if writer is None:
            raise UsageError(
                f"{path.name} was written by the {name!r} exporter, which is not installed; "
                "install the plugin that provides it (see 'zoo plugins')"
            )
        return writer, meta
    if matching:  # the suffix says what it should be: that reader's complaint is the useful one
        exporter, exc = failures[0]
        raise UsageError(f"{str(path)!r} is {exc}") from exc
    tried = ", ".join(f"{e.name} ({e.suffix})" for e in exporters)
    raise UsageError(f"{str(path)!r} is not a file any installed exporter reads (tried {tried}); give a file 'zoo export' wrote")


def verify_artifact(
    zoo: Any,
    path: Path,
    *,
    weights: str | Path | None = None,
    device: str = "cpu",
    rtol: ToleranceOption = None,
    atol: ToleranceOption = None,
    inputs: Sequence[Path] = (),
    arch_name: str | None = None,
    params: Sequence[str] = (),
    seed: int | None = None,
    timeout: float | None = None,
    criteria: dict[str, float | None] | None = None,
    accept_recorded: bool = False,
    runtimes: Sequence[str] = (),
) -> VerifyResult:
    """Rebuild the model named in ``path``'s own metadata and verify the file against it;
    with ``arch_name``, build that architecture (``params``, ``seed``) instead, for
    any file of a known format, zoo's metadata or not. The file is untrusted: what
    its metadata asks to build is checked against the weights it holds before
    anything is allocated."""
    rtol, atol = checked_options(path, weights, rtol, atol, arch_name, params, seed, timeout)
    exporter, meta = read_artifact(zoo.exporters, path, arch_given=arch_name is not None)
    meta = unproven_variant_dropped(exporter, path, meta)
    if arch_name is not None:
        arch, overrides, seed, choice = given_architecture(zoo, arch_name, params, seed, weights)
    else:
        arch, overrides, seed, choice = recorded_architecture(zoo, path, meta, weights)
    weights = choice.path if choice else None
    check_recorded_size(exporter, arch, path, meta, overrides)  # before anything is allocated
    check_tolerances(rtol, atol, [o.name for o in arch.outputs])
    acceptance, criteria_source, notes = variant_criteria(path, meta, rtol, atol, criteria, accept_recorded)
    # --runtime, else the runtimes and settings the file was proven on at export (zoo.runtimes)
    choices, note = (parse_runtimes(zoo, runtimes, exporter), "") if runtimes else recorded_runtimes(zoo, exporter, meta)
    static = meta.get("static") == "true"
    cases = load_input_files(inputs, arch, {**arch.defaults, **overrides}, static, param_hint=arch_name is not None)
    built = build_model(arch, overrides, seed=seed, device=device, weights=weights)
    name_weights(built, choice)
    result = VerifyResult(built, exporter, recorded_opset(meta), static, files=[path])
    with timed(result.timings, "verify"):
        check_artifact(exporter, path)
        result.files = [path, *side_files(exporter, path, error=VerificationFailed)]
        result.verifications = verify_on_runtimes(
            built, exporter, path, choices, static, rtol, atol, acceptance=acceptance, extra=cases, match_io=arch_name is not None,
            timeout=timeout,
        )
        result.verification = result.verifications[0]
        if note:
            result.verification.note = "; ".join(filter(None, (result.verification.note, note)))
        if result.ok_on_every_runtime:
            rescore(result, choice, meta.get("variant") or exporter.name)
    interrupts.stop_if_interrupted()  # one a library swallowed: no verdict, no report
    if acceptance is not None:
        result.variant = {"name": meta["variant"], "criteria": acceptance, "criteria_from": criteria_source, "notes": notes}
        for unapplied in notes:
            warn(unapplied)
    if not result.ok_on_every_runtime:
        result.error = verify_error(result, arch.name if arch_name is not None else None, weights is not None, seed)
    return result


def checked_options(
    path: Path,
    weights: str | Path | None,
    rtol: ToleranceOption,
    atol: ToleranceOption,
    arch_name: str | None,
    params: Sequence[str],
    seed: int | None,
    timeout: float | None,
) -> tuple[float | None, float | None]:
    """The options refused before the file is read; returns the tolerances as numbers."""
    check_input_file(path, "give the file 'zoo export' wrote")
    rtol, atol = parse_tolerance("--rtol", rtol), parse_tolerance("--atol", atol)  # text from the command line, or numbers
    check_tolerances(rtol, atol)
    if arch_name is None and (params or seed is not None):
        raise UsageError("--param and --seed say how to build --arch NAME; without --arch, the file's own metadata does")
    check_timeout(timeout)
    if weights is not None and Path(weights).exists():
        check_regular_file(Path(weights))  # a file: refused before the model file is read
    return rtol, atol


def recorded_opset(meta: dict[str, str]) -> int | None:
    """The opset the metadata records, when it is a plausible number (the file is untrusted)."""
    text = meta.get("opset", "")
    return int(text) if text.isascii() and text.isdigit() and len(text) < 6 else None


def given_architecture(
    zoo: Any, arch_name: str, params: Sequence[str], seed: int | None, weights: str | Path | None
) -> tuple[Any, dict[str, Any], int, WeightsChoice | None]:
    """``--arch NAME`` with its ``--param`` values, ``--seed`` (default 0) and ``--weights``."""
    arch = zoo.architecture(arch_name)
    overrides: dict[str, Any] = parse_params(params, arch.parameters, arch.name)
    seed = 0 if seed is None else seed
    check_seed(seed)
    return arch, overrides, seed, resolve_weights(zoo, arch, weights)


def verify_error(result: VerifyResult, given_arch: str | None, weighted: bool, seed: int) -> str:
    """The failure, with what to change where the file was checked against ``--arch``."""
    failing = next(v for v in result.verifications if not v.ok)
    error = failure_text(failing, len(result.verifications) > 1)
    shapes = any(" has shape " in f or " runtime raised " in f for f in failing.failures)
    if given_arch is not None and shapes:  # no weights make shapes fit: the parameters differ
        error += f" (the file's shapes are not those of {given_arch} with these --param values: give the ones it was made with)"
    elif given_arch is not None and not weighted:
        error += f" (built {given_arch} with seeded weights, seed {seed}: if the file holds trained weights, pass them with --weights)"
    return error


def recorded_weights(zoo: Any, arch: str, meta: dict[str, str]) -> str | None:
    """The registered weight set the file names (``zoo.weights``), if one of that name
    and sha256 is installed: the file alone never picks weights it was not exported with."""
    name = meta.get("weights")
    entry = zoo.weights.get(arch, name) if name and name != "default" else None
    return name if entry is not None and entry.sha256 == meta.get("weights_sha256") else None


def rescore(result: VerifyResult, choice: WeightsChoice | None, label: str) -> None:
    """The weight set's claimed metric on PyTorch and on the verified file (``label``), if it claims one."""
    entry = choice.entry if choice is not None else None
    if entry is None or entry.claim is None:
        return
    built, path = result.built, result.files[0]
    batch = int(next(iter(built.sample_inputs().values())).shape[0]) if result.static else None  # a static file takes one
    result.claim = score_claim(built, entry, eval_set_file(entry.claim.eval_set, entry), result.exporter, {label: path}, batch)
    if not result.claim.ok:
        result.error = result.claim.failures[-1]


def recorded_architecture(
    zoo: Any, path: Path, meta: dict[str, str], weights: str | Path | None
) -> tuple[Any, dict[str, Any], int, WeightsChoice | None]:
    """The architecture, typed parameters and seed ``path``'s metadata names, and the
    weights to load: ``--weights``, else the registered weight set the file names."""
    arch = zoo.architectures.get(meta["architecture"])
    if arch is None:
        plugin = meta.get("plugin", "?")
        raise UsageError(
            f"{path.name} was exported from {meta['architecture']!r} of plugin {plugin!r}, which is not installed; "
            "install that plugin (see 'zoo plugins')"
        )
    choice = resolve_weights(zoo, arch, weights if weights is not None else recorded_weights(zoo, arch.name, meta))
    if choice is not None:
        check_regular_file(choice.path)
    overrides, seed = recorded_build(path, meta, choice.path if choice else None)
    return arch, coerce_params(overrides, arch.parameters, arch.name), seed, choice


def unproven_variant_dropped(exporter: Exporter, path: Path, meta: dict[str, str]) -> dict[str, str]:
    """``meta``, without its variant claim (``zoo.variant``, ``zoo.acceptance``) unless the
    file holds that variant: a float file must not earn a variant's looser criteria by saying so."""
    claimed = meta.get("variant")
    if claimed is None:
        return meta
    held = exporter.holds_variant is not None and call_exporter(
        exporter.holds_variant, path, claimed, error=VerificationFailed, what=f"{exporter.name} exporter's holds_variant"
    )
    if held is True:
        return meta
    why = "its format cannot show it holds one" if exporter.holds_variant is None else f"it holds no {claimed} computation"
    warn(f"{path.name} claims to be {article(claimed)} {claimed} variant (zoo.variant), but {why}: judged as a float file, by --rtol/--atol")
    return {key: value for key, value in meta.items() if key not in ("variant", "acceptance")}


def article(word: str) -> str:
    return "an" if str(word)[:1].lower() in "aeiou" else "a"


def variant_criteria(
    path: Path, meta: dict[str, str], rtol: float | None, atol: float | None, criteria: dict[str, float | None] | None,
    accept_recorded: bool,
) -> tuple[Acceptance | None, dict[str, str], list[str]]:
    """A variant's criteria as judged (the file's, tightened to zoo's defaults unless
    confirmed), where each came from, and the notes on those not applied; ``None`` for a float file."""
    acceptance = recorded_acceptance(path, meta, rtol, atol)
    if acceptance is not None:
        return judged_criteria(acceptance, dict(criteria or {}), accept_recorded)
    if any(v is not None for v in (criteria or {}).values()) or accept_recorded:
        raise UsageError(f"{path.name} is not a variant: it is judged by --rtol/--atol, not acceptance criteria")
    return None, {}, []


def recorded_acceptance(path: Path, meta: dict[str, str], rtol: float | None, atol: float | None) -> Acceptance | None:
    """A variant's acceptance criteria, as its file records them; ``None`` for a float file."""
    if "variant" not in meta:
        return None
    if rtol is not None or atol is not None:
        raise UsageError(f"{path.name} is {article(meta['variant'])} {meta['variant']} variant, judged by its acceptance criteria, not --rtol/--atol")
    try:
        return Acceptance.from_metadata(meta.get("acceptance", "{}"))
    except (ValueError, TypeError, ZooError) as exc:
        raise damaged_metadata(path.name, f"zoo.acceptance: {exc}") from exc


def read_paths(zoo: Any, path: Path, weights: str | Path | None = None) -> list[Path]:
    """The files ``zoo verify`` reads: ``path``, its side files as its exporter
    lists them, and the weights. No report may replace them; known before any work
    (the parse is cached for the verification). A file that does not parse has
    no side files to protect: verifying it fails on its own."""
    paths = [Path(p) for p in (path, weights) if p is not None]
    try:
        check_input_file(path, "")
        exporter, _ = read_artifact(zoo.exporters, path)
        return [*paths, *side_files(exporter, path, error=UsageError)]
    except ZooError:
        return paths


def recorded_build(path: Path, meta: dict[str, str], weights: Path | None) -> tuple[dict[str, Any], int]:
    """The parameters and seed ``path`` was exported with; ``weights`` must be the
    file it was exported with, or the same tensors in any container (by the checksum of
    its tensors; by the file's sha256 for files zoo wrote before it recorded that), or
    absent when it had none."""
    expected = meta.get("weights_sha256")
    if expected and weights is None:
        raise UsageError(
            f"{path.name} was exported with trained weights (sha256 {expected[:12]}…); pass them with --weights FILE "
            "(or the name of an installed weight set)"
        )
    if weights is not None and not expected:  # else W would be verified, and a mismatch blamed on the export
        raise UsageError(
            f"{path.name} was exported without weights (seeded initial weights, seed {meta.get('seed', '?')}); leave --weights out"
        )
    tensors = meta.get("weights_tensors_sha256")
    if weights is not None and expected and sha256(weights) != expected:
        if not tensors:
            raise UsageError(f"--weights {weights.name} is not the file {path.name} was exported with (sha256 {expected[:12]}…)")
        if tensors_sha256(read_state_dict(weights)) != tensors:
            raise UsageError(
                f"--weights {weights.name} does not hold the tensors {path.name} was exported with "
                f"(tensors sha256 {tensors[:12]}…); pass the weights it was exported with"
            )
    try:
        params = json.loads(meta.get("params", "{}"))
        seed = int(meta.get("seed", "0"))
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested 100,000 deep
        raise damaged_metadata(path.name, one_line(exc, 120)) from None
    # What build_model would blame on --param or --seed is the file's fault here.
    if not isinstance(params, dict):
        raise damaged_metadata(path.name, f"zoo.params is {meta['params'][:60]!r}, not a JSON object")
    if not 0 <= seed <= MAX_SEED:
        raise damaged_metadata(path.name, f"zoo.seed is {seed}, not a seed zoo export writes (0 to {MAX_SEED})")
    return params, seed


def check_recorded_size(exporter: Exporter, arch: Any, path: Path, meta: dict[str, str], params: dict[str, Any]) -> None:
    """Refuse metadata that would build far more weights than the file holds (a 6 kB
    file saying ``width: 20000``), from a build on torch's ``meta`` device stopped
    at twice what the file holds. Elements are compared, not bytes: a variant keeps
    every weight but stores it in fewer bytes (int8 with its scales, float16). A
    ``--fold-linear`` file legitimately holds fewer weights than its module: there
    only ``build_model``'s memory bound applies."""
    if exporter.count_weights is None:
        return
    elements, _bytes = call_exporter(exporter.count_weights, path, error=UsageError, what=f"{path.name} is not a readable {exporter.name} file")
    try:
        folded = bool(json.loads(meta.get("options", "{}")).get("fold_linear"))
    except (ValueError, RecursionError, AttributeError):
        raise damaged_metadata(path.name, "zoo.options is not a JSON object") from None
    if folded:
        return
    size = dry_build(arch, params, limit_elements=2 * elements + 2**14)
    if size is not None and size.over:
        raise UsageError(
            f"zoo.params would build at least {size.elements:.3g} parameters but {path.name} holds {elements:,}; "
            "the metadata does not describe this file"
        )

