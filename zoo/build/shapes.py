"""Concrete shapes from symbolic ones, and the sizes verification tries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from zoo.errors import ParameterError, UsageError
from zoo.spec.architecture import Architecture, Dim, DimLike, Input

LARGE_BATCH = 64
VERIFY_SEED_OFFSET = 1000  # verification inputs differ from the export sample (case i: seed + offset + i)


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


def parse_dim_sizes(texts: Sequence[str], dims: Mapping[str, Dim], option: str = "--size") -> dict[str, int]:
    """``--size DIM=N`` values: sizes of dynamic dimensions, within each ``Dim``'s ``min``/``max``."""
    sizes: dict[str, int] = {}
    names = ", ".join(dims) or "none"
    for text in texts:
        name, _, value = text.partition("=")
        name = name.strip()
        if name not in dims:
            raise UsageError(f"{option} {text!r}: {name!r} is not a dynamic dimension of this architecture; it has: {names}")
        dim = dims[name]
        try:
            size = int(value)
        except ValueError:
            size = 0
        low, high = max(dim.min, 1), dim.max
        if size < low or (high is not None and size > high):
            bounds = f"{low} to {high}" if high is not None else f"at least {low}"
            raise UsageError(f"{option} {text!r}: give DIM=SIZE with a size {bounds}")
        sizes[name] = size
    return sizes


def verification_cases(arch: Architecture, params: Mapping[str, Any], chosen: Mapping[str, int] | None = None) -> list[dict[str, int]]:
    """Sizes for every dynamic dim: the export sizes (``chosen`` with ``--size``, else
    each ``Dim``'s sample), each dim alone at a small and a large size, and all of
    them off the export sizes at once."""
    dims = dynamic_dims(arch, params)
    base = {name: (chosen or {}).get(name, dim.sample_size) for name, dim in dims.items()}
    cases = [base]

    def clamp(dim: Dim, size: int) -> int:
        size = max(size, dim.min)
        return min(size, dim.max) if dim.max is not None else size

    for name, dim in dims.items():
        large = max(LARGE_BATCH, base[name] + 1) if name == "batch" else 2 * base[name] + 1
        for size in (1, large):
            cases.append({**base, name: clamp(dim, size)})
    if len(dims) > 1:
        cases.append({name: clamp(dim, base[name] + 1) for name, dim in dims.items()})
    unique: list[dict[str, int]] = []
    for case in cases:
        if case not in unique:
            unique.append(case)
    return unique
