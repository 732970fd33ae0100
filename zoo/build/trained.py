"""``--weights NAME|FILE``: a registered weight set (fetched into the cache if it is a URL,
checked against its sha256 either way) or a user's file.

A name is looked up among the architecture's weight sets (``default`` picks the
one marked default); anything else must look like a weights file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.build.weights import SUFFIXES
from zoo.errors import UsageError, WeightsError
from zoo.files.cache import fetch, sha256_file
from zoo.spec.architecture import Architecture
from zoo.spec.weights import EvalSet, Weights, is_url


@dataclass(frozen=True)
class WeightsChoice:
    """What ``--weights`` named: the file to load, and the registered entry it came from."""

    path: Path
    entry: Weights | None = None


def resolve_weights(zoo: Any, arch: Architecture, text: str | Path | None) -> WeightsChoice | None:
    """``--weights`` for ``arch``: a registered name (the file fetched and checked now), or a path."""
    if text is None:
        return None
    text = str(text)
    entry = zoo.weights.get(arch.name, text)
    if entry is not None:
        return WeightsChoice(weights_file(entry), entry)
    names = ", ".join(w.name for w in zoo.weights.of(arch.name))
    known = f"its weight sets: {names}" if names else "it has no registered weight sets ('zoo weights' lists them)"
    if text == "default":
        raise UsageError(f"--weights default: {arch.name} has no default weight set; {known}, or give a file")
    path = Path(text)
    if path.suffix.lower() in SUFFIXES or "/" in text or path.exists():
        return WeightsChoice(path)
    raise UsageError(f"--weights {text!r}: not a weight set of {arch.name} ({known}) nor a weights file ({', '.join(SUFFIXES)})")


def name_weights(built: Any, choice: WeightsChoice | None) -> None:
    """Record which registered weight set ``built`` was loaded from (report and file metadata)."""
    if choice is not None and choice.entry is not None and built.weights is not None:
        built.weights.update(name=choice.entry.name, plugin=choice.entry.plugin)


def weights_file(entry: Weights) -> Path:
    """The weight set's file on this machine, its sha256 checked."""
    what = f"weight set {entry.name!r} of {entry.architecture} (plugin {entry.plugin!r})"
    return entry_file(entry.source, entry.sha256, entry.size, f"{entry.name}{entry.suffix}", what)


def eval_set_file(eval_set: EvalSet, entry: Weights) -> Path:
    what = f"evaluation set {eval_set.name!r} of weight set {entry.name!r} (plugin {entry.plugin!r})"
    return entry_file(eval_set.source, eval_set.sha256, eval_set.size, f"{entry.name}.eval.npz", what)


def entry_file(source: str | Path, sha256: str, size: int | None, file_name: str, what: str) -> Path:
    if is_url(source):
        return fetch(str(source), sha256, size or 0, file_name, what)
    path = Path(source)
    if not path.is_file():
        raise WeightsError(f"{what}: its file {str(path)!r} is missing; reinstall the plugin")
    if size is not None and path.stat().st_size != size:
        raise WeightsError(f"{what}: {path.name} has {path.stat().st_size:,} bytes, not the {size:,} its entry declares; reinstall the plugin")
    found = sha256_file(path)
    if found != sha256:
        raise WeightsError(f"{what}: {path.name} has sha256 {found[:16]}…, not the {sha256[:16]}… its entry pins; reinstall the plugin")
    return path
