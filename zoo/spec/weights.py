"""Trained weight sets as zoo entries (public; see docs/plugins.md#register_weightsregister).

A plugin registers ``Weights`` for an architecture, its own or another plugin's:
where the file is (shipped in the plugin package, or an ``https://`` URL), its
sha256 and size, the build parameters it fits, and optionally the metric it
claims on a named evaluation set (``MetricClaim``, ``EvalSet``), which ``zoo
export`` re-scores on PyTorch, the exported file and any variant.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from zoo.spec.registry import DuplicateName

FORMATS = {"safetensors": (".safetensors",), "state_dict": (".pt", ".pth", ".bin")}
LOOPBACK_HOSTS = ("localhost", "::1")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def is_url(source: str | Path) -> bool:
    return isinstance(source, str) and "://" in source


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def check_source(source: str | Path, sha256: str, size: int | None, what: str) -> None:
    """A URL must be ``https://`` (``http://`` only to a loopback address, for tests)
    and say its size; a file is a path; the sha256 is 64 lowercase hex digits."""
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ValueError(f"{what}: sha256 must be 64 lowercase hex digits, got {sha256!r}")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise ValueError(f"{what}: size must be a positive number of bytes, got {size!r}")
    if is_url(source):
        parts = urlsplit(source)
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname or "")):
            raise ValueError(f"{what}: source {source!r} must be an https:// URL (http:// only to a loopback address)")
        if size is None:
            raise ValueError(f"{what}: a URL source needs size= (its bytes), so a download can be capped")
    elif not isinstance(source, (str, Path)) or not Path(source).is_absolute():
        raise ValueError(
            f"{what}: source must be an https:// URL or an absolute file path (Path(__file__).parent / NAME), got {source!r}"
        )


@dataclass(frozen=True)
class EvalSet:
    """A labelled evaluation set: an ``.npz`` with one key per model input and
    ``labels`` (class indices, 0/1 labels, or regression targets)."""

    name: str  # "digits held-out split"
    source: str | Path
    sha256: str
    size: int | None = None  # bytes; required for a URL

    def __post_init__(self) -> None:
        check_source(self.source, self.sha256, self.size, f"evaluation set {self.name!r}")


@dataclass(frozen=True)
class MetricClaim:
    """What the weights reach: ``MetricClaim("accuracy", 0.961, EvalSet(...))``.
    ``metric`` is one of the claimed output's task metrics (``Task.metrics``: its
    direction and display come from there). The export fails when a runtime
    scores worse than ``value`` by more than ``tolerance``."""

    metric: str  # accuracy, rmse, r2...: a metric of the output's task
    value: float
    eval_set: EvalSet
    tolerance: float = 0.005
    output: str | None = None  # the output scored (default: the architecture's first)

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not _NAME.fullmatch(self.metric):
            raise ValueError(f"claim metric must be the name of a task metric (accuracy, rmse...), got {self.metric!r}")
        for name in ("value", "tolerance"):
            number = getattr(self, name)
            if not isinstance(number, (int, float)) or isinstance(number, bool) or not math.isfinite(number):
                raise ValueError(f"claim {name} must be a finite number, got {number!r}")
        if self.tolerance < 0:
            raise ValueError(f"claim tolerance must be >= 0, got {self.tolerance!r}")
        if not isinstance(self.eval_set, EvalSet):
            raise ValueError(f"eval_set must be a zoo.EvalSet, got {type(self.eval_set).__name__}")


@dataclass(frozen=True)
class Weights:
    """A named trained weight set, passed to ``register`` in ``register_weights``."""

    name: str  # "digits": zoo export ARCH --weights digits
    architecture: str  # a name or alias of any plugin's architecture
    source: str | Path  # a file (shipped in the plugin package) or an https:// URL
    sha256: str
    format: str = "safetensors"  # or "state_dict" (read with torch.load(weights_only=True))
    params: Mapping[str, Any] = field(default_factory=dict)  # the build parameters they fit
    size: int | None = None  # bytes; required for a URL (a download past it is refused)
    summary: str = ""
    claim: MetricClaim | None = None
    default: bool = False  # picked by --weights default
    plugin: str = ""  # filled in by zoo when the plugin registers it

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name) or self.name == "default":
            raise ValueError(f"weight set name {self.name!r}: use letters, digits, '.', '_' and '-' ('default' is reserved)")
        if self.format not in FORMATS:
            raise ValueError(f"weight set {self.name!r}: format {self.format!r} is not one of {', '.join(FORMATS)}")
        check_source(self.source, self.sha256, self.size, f"weight set {self.name!r}")
        if not is_url(self.source) and Path(self.source).suffix.lower() not in FORMATS[self.format]:
            raise ValueError(f"weight set {self.name!r}: a {self.format} file ends in {', '.join(FORMATS[self.format])}")
        if self.claim is not None and not isinstance(self.claim, MetricClaim):
            raise ValueError(f"weight set {self.name!r}: claim must be a zoo.MetricClaim")
        object.__setattr__(self, "params", dict(self.params))

    def with_plugin(self, plugin: str) -> Weights:
        return dataclasses.replace(self, plugin=plugin)

    @property
    def key(self) -> str:
        return f"{self.architecture}.{self.name}"

    @property
    def suffix(self) -> str:
        return FORMATS[self.format][0]

    def claim_text(self) -> str:
        """``accuracy 0.961 on the digits held-out split``, or ``-``."""
        claim = self.claim
        return f"{claim.metric} {claim.value:g} on the {claim.eval_set.name}" if claim else "-"

    def to_dict(self) -> dict[str, Any]:
        claim = self.claim
        return {
            "name": self.name, "architecture": self.architecture, "plugin": self.plugin, "source": str(self.source),
            "sha256": self.sha256, "format": self.format, "params": self.params, "size": self.size, "summary": self.summary,
            "default": self.default,
            "claim": None if claim is None else {
                "metric": claim.metric, "value": claim.value, "tolerance": claim.tolerance, "output": claim.output,
                "eval_set": {"name": claim.eval_set.name, "source": str(claim.eval_set.source), "sha256": claim.eval_set.sha256},
            },
        }


class WeightsRegistry:
    """Weight sets by architecture (its canonical name) and name."""

    def __init__(self) -> None:
        self._items: dict[str, Weights] = {}

    def add(self, weights: Weights) -> None:
        taken = self._items.get(weights.key)
        if taken is not None:
            raise DuplicateName(
                f"weight set {weights.name!r} of {weights.architecture} is already registered by plugin {taken.plugin!r}"
            )
        if weights.default and any(w.default for w in self.of(weights.architecture)):
            raise DuplicateName(f"{weights.architecture} already has a default weight set")
        self._items[weights.key] = weights

    def of(self, architecture: str) -> list[Weights]:
        return [w for w in self if w.architecture == architecture]

    def get(self, architecture: str, name: str) -> Weights | None:
        """A weight set by name, or ``default``; ``None`` when there is none."""
        if name == "default":
            found = [w for w in self.of(architecture) if w.default]
            return found[0] if found else None
        return self._items.get(f"{architecture}.{name}")

    def __iter__(self) -> Iterator[Weights]:
        return iter(sorted(self._items.values(), key=lambda w: (w.architecture, w.name)))

    def __len__(self) -> int:
        return len(self._items)
