"""Concrete shapes from symbolic ones, and the sizes verification tries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zoo.errors import ParameterError
from zoo.spec.architecture import Architecture, Dim, DimLike, Input

LARGE_BATCH = 64


def dynamic_dims(arch: Architecture, params: Mapping[str, Any]) -> dict[str, Dim]:
    """Symbolic input dims that are not build parameters, by name, as declared."""
    return {name: dim for name, dim in arch.symbolic_dims.items() if name not in params}


def sample_sizes(arch: Architecture, params: Mapping[str, Any]) -> dict[str, int]:
    return {name: dim.sample_size for name, dim in dynamic_dims(arch, params).items()}


def concrete(shape: tuple[DimLike, ...], params: Mapping[str, Any], sizes: Mapping[str, int], owner: str) -> tuple[int, ...]:
    result = []
    for dim in shape:
        if isinstance(dim, int):
            result.append(dim)
            continue
        name = dim.name if isinstance(dim, Dim) else dim
        value = params[name] if name in params else sizes.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ParameterError(f"{owner}: dimension {name!r} must be an integer, got {value!r}")
        if value < 1:  # torch would fail deep inside with a negative size; zero makes empty tensors
            raise ParameterError(f"{owner}: dimension {name!r} must be a positive integer, got {value}")
        result.append(value)
    return tuple(result)


def input_shape(inp: Input, params: Mapping[str, Any], sizes: Mapping[str, int]) -> tuple[int, ...]:
    return concrete(inp.shape, params, sizes, f"input {inp.name!r}")


def value_range(inp: Input, params: Mapping[str, Any]) -> tuple[float, float] | None:
    if inp.range is None:
        return None
    low, high = (params[b] if isinstance(b, str) else b for b in inp.range)
    return low, high


def verification_cases(arch: Architecture, params: Mapping[str, Any]) -> list[dict[str, int]]:
    """Sizes for every dynamic dim: the export sizes, each dim alone at a small and a
    large size, and all of them off the export sizes at once."""
    dims = dynamic_dims(arch, params)
    base = {name: dim.sample_size for name, dim in dims.items()}
    cases = [base]

    def clamp(dim: Dim, size: int) -> int:
        size = max(size, dim.min)
        return min(size, dim.max) if dim.max is not None else size

    for name, dim in dims.items():
        large = LARGE_BATCH if name == "batch" else 2 * dim.sample_size + 1
        for size in (1, large):
            cases.append({**base, name: clamp(dim, size)})
    if len(dims) > 1:
        cases.append({name: clamp(dim, dim.sample_size + 1) for name, dim in dims.items()})
    unique: list[dict[str, int]] = []
    for case in cases:
        if case not in unique:
            unique.append(case)
    return unique
