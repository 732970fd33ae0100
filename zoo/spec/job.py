"""``ExportJob``: what an exporter's ``export`` receives (public; see docs/plugins.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.spec.architecture import Architecture, Dim
from zoo.version import __version__

if TYPE_CHECKING:
    import torch

META_PREFIX = "zoo."


@dataclass
class ExportJob:
    """One export, as handed to ``Exporter.export(job)``.

    The exporter writes ``path`` (and may write side files beside it, returning
    every path it wrote); zoo then checks, loads and verifies them, and places them.
    """

    arch: Architecture
    module: torch.nn.Module  # in eval mode, on ``device``
    sample: dict[str, torch.Tensor]  # input name -> tensor, in the architecture's input order; trace with these
    dynamic: dict[str, dict[int, Dim]]  # input name -> {axis: Dim} that must stay dynamic
    output_names: list[str]  # in the order forward returns them (a dict's own key order), not declared order
    path: Path  # the main file to write: a file in a staging folder beside the final path, with its name
    opset: int | None  # resolved and range-checked against ``Exporter.opsets``; ``None`` for formats without
    metadata: dict[str, str]  # ``zoo.*`` provenance to store in the file; ``read_metadata`` must return it
    device: str  # "cpu" or "cuda"
    options: dict[str, Any] = field(default_factory=dict)  # options the user asked for (``fold_linear``)
    # What the exporter did, for the summary and report. An exporter records each
    # option it applied under the option's name; one left unrecorded was not applied.
    stats: dict[str, Any] = field(default_factory=dict)

    def torch_args(self) -> tuple[Any, ...]:
        """The positional arguments to trace with: the sample in input order, or
        none where the architecture takes its inputs by keyword (``torch_kwargs``)."""
        return () if self.arch.keyword_inputs else tuple(self.sample.values())

    def torch_kwargs(self) -> dict[str, Any]:
        return dict(self.sample) if self.arch.keyword_inputs else {}

    def torch_dynamic_shapes(self) -> tuple[dict[int, Any], ...] | dict[str, dict[int, Any]] | None:
        """``dynamic_shapes`` for ``torch.export.export``/``torch.onnx.export``, one
        dict per input in ``sample`` order (by name for keyword inputs); ``None``
        when every shape is static. One ``torch.export.Dim`` per name, so inputs
        that share ``batch`` share it."""
        if not any(self.dynamic.values()):
            return None
        import torch

        dims: dict[str, Any] = {}
        shapes = {
            name: {axis: dims.setdefault(d.name, torch.export.Dim(d.name, min=d.min, max=d.max)) for axis, d in self.dynamic[name].items()}
            for name in self.sample
        }
        return shapes if self.arch.keyword_inputs else tuple(shapes.values())


def provenance(
    built: Any, exporter_name: str, opset: int | None, static: bool, options: dict[str, Any], runtimes: list[dict[str, Any]] | None = None
) -> dict[str, str]:
    """What goes inside the file, so ``zoo verify`` can rebuild the model from it alone;
    ``runtimes`` (``[{"name", "settings"}]``) it was proven on, when not only the default."""
    import torch


    meta = {
        "version": __version__,
        "architecture": built.arch.name,
        "plugin": built.arch.plugin,
        "params": json.dumps(built.params, sort_keys=True),
        "seed": str(built.seed),
        "exporter": exporter_name,
        "opset": str(opset),
        "static": "true" if static else "false",
        "torch_version": torch.__version__,
    }
    if built.weights:
        meta["weights_sha256"] = built.weights["sha256"]
        if "tensors_sha256" in built.weights:
            meta["weights_tensors_sha256"] = built.weights["tensors_sha256"]
        if built.weights.get("name"):  # a registered weight set: zoo verify finds it by name
            meta["weights"] = built.weights["name"]
    if options:  # a folded graph says so
        meta["options"] = json.dumps(options, sort_keys=True)
    if runtimes and runtimes != [{"name": "onnxruntime", "settings": {}}]:  # what zoo verify of the file re-uses
        meta["runtimes"] = json.dumps(runtimes, sort_keys=True)
    return {META_PREFIX + k: v for k, v in meta.items()}
