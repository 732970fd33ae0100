"""The exporter spec plugins register: a format's export, load, metadata and check callables."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zoo.errors import ParameterError
from zoo.spec.architecture import SUFFIX_PATTERN, check_name


@dataclass(frozen=True)
class Calibration:
    """What ``make_variant`` may calibrate a quantized variant on: input batches
    (input name -> numpy array). ``representative``: the user's rows
    (``--calibration FILE.npz``), so a static quantization should use them; else
    zoo's generated inputs, unlike real data. ``source`` names them for reports."""

    feeds: list[dict[str, Any]]
    source: str
    rows: int
    representative: bool = False

    def text(self) -> str:
        """``calibrated on calib.npz, 1,000 rows`` / ``on 8 batches of generated inputs, unlike real data``."""
        if self.representative:
            return f"calibrated on {self.source}, {self.rows:,} rows"
        return f"calibrated on {len(self.feeds)} batches of generated inputs, unlike real data"


@dataclass(frozen=True)
class Exporter:
    """An export format: what a plugin passes to ``register`` in ``register_exporters``.

    ``export(job)`` writes ``job.path`` (and any side files, named in its return
    value) for ``job.module`` traced on ``job.sample``; ``read_metadata(path)``
    returns the ``dict[str, str]`` written by ``export``. See ``zoo.ExportJob``
    for the job object. A format's files are run by the registered runtimes that
    name it (``zoo.Runtime``, ``--runtime``); for a format no runtime runs,
    ``load(path, device)`` returns its own ``zoo.Runner``. bfloat16 inputs reach
    the runner as float32 arrays (numpy has no bfloat16).

    Optional: ``check(path)`` validates a written file's structure and raises
    on a bad one (``zoo verify`` runs it before comparing); ``files(path)``
    returns the side files the main file at ``path`` refers to (external
    weights), so verification reports list them too; ``variants`` and
    ``make_variant`` make deployable variants (``--quantize int8``,
    ``--precision fp16``) from a verified file; ``intermediates(path, feed)``
    runs the file with its inner values exposed and returns, in the order they
    are computed, one dict per module scope: ``{"node", "op", "module", "value"}``
    (the last node inside that module, by its path in the module tree, and its
    output as an array), so a failed verification names where it diverges.
    """

    name: str
    suffix: str
    export: Callable[..., Any]
    load: Callable[..., Any] | None  # its own runner, for a format no registered runtime runs
    read_metadata: Callable[..., dict[str, str]]
    summary: str = ""
    default_opset: int | None = None  # for formats with versioned operator sets
    opsets: tuple[int, int] | None = None  # lowest and highest supported opset, checked before any work
    options: tuple[str, ...] = ()  # job.options this format applies (``fold_linear``); others are refused before any work
    plugin: str = ""
    check: Callable[[Any], None] | None = None  # check(path): raise on a malformed file
    files: Callable[[Any], list[Any]] | None = None  # files(path): side files beside the main file
    variants: tuple[str, ...] = ()  # deployable variants make_variant writes (``int8``, ``fp16``)
    # make_variant(source, target, variant, metadata, calibration: Calibration) -> {how it was made}
    make_variant: Callable[..., dict[str, Any]] | None = None
    intermediates: Callable[[Any, dict[str, Any]], list[dict[str, Any]]] | None = None  # (path, feed): per-module values
    # count_weights(path) -> (elements, bytes) of the weights a file holds, from its shapes
    # alone: ``zoo verify`` refuses metadata that would build far more than that
    count_weights: Callable[[Any], tuple[int, int]] | None = None
    # holds_variant(path, variant) -> bool: the file holds what make_variant makes (int8
    # ops, float16 weights). A file whose metadata claims a variant is judged by a
    # variant's looser criteria only when this says so; else as a float file
    holds_variant: Callable[[Any, str], bool] | None = None
    # warm_up(opset): what a first export pays once per process (imports, the
    # exporter's tables); ``--jobs`` workers call it before their first target
    warm_up: Callable[[int | None], None] | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "exporter")
        if not isinstance(self.suffix, str) or not SUFFIX_PATTERN.fullmatch(self.suffix):
            raise ValueError(
                f"exporter {self.name!r}: suffix {self.suffix!r} must start with '.' and go on with "
                "lowercase letters, digits, '.', '_' or '-' (like '.onnx')"
            )

    def with_plugin(self, plugin: str) -> Exporter:
        return dataclasses.replace(self, plugin=plugin)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (``zoo plugins --json``); needs no torch."""
        return {
            "name": self.name,
            "suffix": self.suffix,
            "plugin": self.plugin,
            "summary": self.summary,
            "options": list(self.options),
            "variants": list(self.variants),
            "default_opset": self.default_opset,
            "opsets": None if self.opsets is None else list(self.opsets),
        }

    def resolve_opset(self, opset: int | None) -> int | None:
        """The opset to export with: ``opset`` (``None`` means the default), refused
        with a usage error when this format does not support it."""
        if opset is None:
            return self.default_opset
        if self.opsets is None and self.default_opset is None:
            raise ParameterError(f"--opset: the {self.name} format has no operator sets; leave --opset out")
        if self.opsets is not None:
            low, high = self.opsets
            if not low <= opset <= high:
                default = f", default {self.default_opset}" if self.default_opset is not None else ""
                raise ParameterError(f"--opset {opset} is not supported by {self.name}; use {low} to {high}{default}")
        return opset
