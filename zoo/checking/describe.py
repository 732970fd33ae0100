"""What ``zoo show`` prints: layers, parameter count, shapes, and structural warnings.

Warnings come from watching a real forward pass (hooks on leaf modules), so they
hold for any architecture, not only ``nn.Sequential``: a Linear whose input is
exactly another Linear's output forms an affine chain that one Linear could
replace; a Softmax over a dimension of size 1 is the constant 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zoo.records import Record, json_field

if TYPE_CHECKING:
    from zoo.build.model import BuiltModel


@dataclass
class Layer(Record):
    name: str  # qualified name in the module tree
    module: str  # its repr


@dataclass
class Description(Record):
    layers: list[Layer]
    parameters: int
    trainable: int = json_field(name="trainable_parameters")
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    output_shapes: dict[str, list[int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def describe(built: BuiltModel) -> Description:
    import torch

    module = built.module
    leaves = [(name, m) for name, m in module.named_modules() if not list(m.children())]
    inputs = built.sample_inputs()
    warnings, outputs = watch_forward(built, inputs)
    return Description(
        layers=[Layer(name or type(m).__name__, repr(m)) for name, m in leaves],
        parameters=sum(p.numel() for p in module.parameters()),
        trainable=sum(p.numel() for p in module.parameters() if p.requires_grad),
        input_shapes={k: list(v.shape) for k, v in inputs.items()},
        output_shapes={k: list(v.shape) for k, v in outputs.items() if isinstance(v, torch.Tensor)},
        warnings=warnings,
    )


def watch_forward(built: BuiltModel, inputs: dict[str, Any], grad: bool = False) -> tuple[list[str], dict[str, Any]]:
    """One forward pass with the structure watched: the warnings, and the outputs
    by name in the order ``forward`` returned them."""
    from torch import nn

    produced_by: dict[int, tuple[str, nn.Linear]] = {}  # id(output tensor) -> Linear that made it
    chains: list[list[tuple[str, nn.Linear]]] = []
    warnings: list[str] = []
    alive: list[Any] = []
    names = {m: name for name, m in built.module.named_modules()}

    def on_linear(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        entry = (names.get(mod, "?"), mod)
        source = produced_by.get(id(args[0])) if args else None
        chain = next((c for c in chains if source is not None and c[-1] is source), None)
        if chain is None:
            chains.append([entry])
        else:
            chain.append(entry)
        produced_by[id(out)] = entry
        alive.append(out)  # keep ids unique for the whole pass

    def on_softmax(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        dim = mod.dim if mod.dim is not None else -1
        if args and args[0].shape[dim] == 1:
            warnings.append(
                f"{type(mod).__name__} at {names.get(mod, '?')!r} runs over a dimension of size 1: its output is constant"
            )

    handles = []
    for mod in built.module.modules():
        if isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(on_linear))
        elif isinstance(mod, (nn.Softmax, nn.LogSoftmax)):
            handles.append(mod.register_forward_hook(on_softmax))
    try:
        outputs = built.forward(inputs, grad=grad)
    finally:
        for handle in handles:
            handle.remove()
    for chain in chains:
        if len(chain) > 1:
            first, last = chain[0][1], chain[-1][1]
            layers = " → ".join(f"Linear({m.in_features},{m.out_features})" for _, m in chain)
            where = ", ".join(repr(name) for name, _ in chain)
            warnings.insert(
                0,
                f"{layers} ({where}) has no nonlinearity in between: it computes one affine map, "
                f"the same as a single Linear({first.in_features},{last.out_features})",
            )
    return warnings, outputs
