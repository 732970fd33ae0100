"""The declared outputs, picked out of what a model's ``forward`` returns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from zoo.errors import CheckFailed
from zoo.spec.architecture import Architecture

if TYPE_CHECKING:
    import torch


def name_outputs(arch: Architecture, result: Any) -> dict[str, torch.Tensor]:
    """The declared outputs in what ``forward`` returned: a tensor, a tuple (by
    position), a dict or dataclass (by name), or any of these nested (by ``Output.path``).
    Where it is exactly the declared outputs, in ``forward``'s own order; else in declared order."""
    import torch

    names = [o.name for o in arch.outputs]
    if selects_outputs(arch, result):
        values = [output_at(arch, result, o.path or o.name, o.name) for o in arch.outputs]
    elif isinstance(result, torch.Tensor):
        values = [result]
    elif isinstance(result, Mapping):
        names = list(result)
        values = [result[name] for name in names]
    elif isinstance(result, (tuple, list)):
        values = list(result)
    else:
        raise CheckFailed(f"{arch.name}: forward returned {type(result).__name__}; return a tensor, a tuple or a dict")
    if len(values) != len(names):
        raise CheckFailed(f"{arch.name}: forward returned {len(values)} outputs, but the architecture declares {len(names)} ({', '.join(names)})")
    for name, value in zip(names, values):
        if not isinstance(value, torch.Tensor):
            raise CheckFailed(f"{arch.name}: output {name!r} is a {type(value).__name__}, not a tensor")
    return dict(zip(names, values))


def selects_outputs(arch: Architecture, result: Any) -> bool:
    """Whether the declared outputs are picked out of ``result`` (by path, or by name from
    a dict or object holding more), rather than being all of it: then the export
    returns just them, in declared order."""
    import torch

    if any(o.path for o in arch.outputs):
        return True
    if isinstance(result, Mapping):
        return set(result) != {o.name for o in arch.outputs}
    return not isinstance(result, (torch.Tensor, tuple, list)) and all(hasattr(result, o.name) for o in arch.outputs)


def left_out_entries(arch: Architecture, result: Any) -> list[str]:
    """The entries of a dict result that no declared output takes (said once by the check)."""
    if not isinstance(result, Mapping):
        return []
    taken = {(o.path or o.name).split(".")[0] for o in arch.outputs}
    return [str(key) for key in result if key not in taken]


def output_at(arch: Architecture, result: Any, path: str, name: str) -> Any:
    """The value at ``path`` (dot-separated keys, attributes and indices) in ``result``."""
    value = result
    for part in path.split("."):
        try:
            if isinstance(value, Mapping):
                value = value[part]
            elif part.isdigit() and isinstance(value, (tuple, list)):
                value = value[int(part)]
            else:
                value = getattr(value, part)
        except (KeyError, IndexError, AttributeError):
            held = f" with keys {', '.join(map(str, list(value)[:8]))}" if isinstance(value, Mapping) else ""
            raise CheckFailed(
                f"{arch.name}: output {name!r}: forward's result has no {part!r} at {path!r} "
                f"(there is a {type(value).__name__}{held}); declare the outputs it returns, or give Output(path=...)"
            ) from None
    return value
