"""How big a model and its inputs would be, known before anything is allocated: a build on torch's meta device, the memory available."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

from zoo.build.shapes import input_shape
from zoo.errors import ParameterError
from zoo.host.plugin_calls import plugin_code
from zoo.spec.architecture import Architecture
from zoo.text import sizes_text


def weight_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers (tied ones once)."""
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}.values()
    return sum(t.numel() * t.element_size() for t in tensors)


class DrySize(NamedTuple):
    elements: int
    bytes: int
    over: bool  # the build was stopped past its limit: at least this much


class _OverLimit(BaseException):  # not an Exception: a plugin's ``except Exception`` cannot swallow it
    pass


def dry_build(
    arch: Architecture, overrides: Mapping[str, Any], limit_bytes: int | None = None, limit_elements: int | None = None
) -> DrySize | None:
    """The parameter elements and bytes ``arch`` would hold with ``overrides``, from a
    build on the ``meta`` device (no memory allocated), stopped as soon as it passes
    ``limit_bytes`` or ``limit_elements`` (a million layers take minutes even there).
    ``None`` where the plugin's ``build`` cannot run on ``meta`` (it reads tensor
    values, say)."""
    import torch
    from torch.nn.modules import module as torch_module

    total = [0, 0]

    def count(_module: Any, _name: str, tensor: Any) -> None:
        if tensor is not None:
            total[0] += tensor.numel()
            total[1] += tensor.numel() * tensor.element_size()
            if (limit_bytes is not None and total[1] > limit_bytes) or (limit_elements is not None and total[0] > limit_elements):
                raise _OverLimit

    hooks = [torch_module.register_module_parameter_registration_hook(count),
             torch_module.register_module_buffer_registration_hook(count)]
    try:
        with torch.device("meta"), torch.random.fork_rng(devices=[]), plugin_code(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = arch.build(**overrides)
        tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}.values()  # tied weights once
    except _OverLimit:
        return DrySize(total[0], total[1], over=True)
    except Exception:  # noqa: BLE001 - the real build reports it
        return None
    finally:
        for hook in hooks:
            hook.remove()
    return DrySize(sum(t.numel() for t in tensors), sum(t.numel() * t.element_size() for t in tensors), over=False)


def available_memory() -> int | None:
    """Bytes of memory available now (Linux, macOS); ``None`` where unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_build_size(arch: Architecture, overrides: Mapping[str, Any]) -> None:
    """Refuse parameters whose weights alone would not fit in memory, before the
    build allocates them (``-p width=1000000`` would ask torch for 4 TB)."""
    if not overrides:
        return
    memory = available_memory()
    size = dry_build(arch, overrides, limit_bytes=memory)
    if size is None or not size.over:
        return
    given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
    raise ParameterError(
        f"{arch.name} with {given} would hold over {size.elements:.3g} parameters ({size.bytes / 2**30:.3g} GiB), "
        f"more than the {memory / 2**30:.3g} GiB of memory available; choose smaller values"
    )


def check_input_size(arch: Architecture, params: Mapping[str, Any], sizes: Mapping[str, int]) -> None:
    """Refuse sizes (``zoo bench --batch-sizes 1000000000``) whose inputs alone would
    take over a quarter of the memory available, before anything is allocated."""
    import torch

    memory = available_memory()
    total = sum(
        math.prod(input_shape(inp, params, sizes)) * torch.empty((), dtype=getattr(torch, inp.dtype)).element_size()
        for inp in arch.inputs
    )
    if memory is not None and total > memory // 4:
        given = sizes_text(sizes)
        raise ParameterError(
            f"{arch.name}: inputs at {given} would take {total / 2**30:.3g} GiB, over a quarter of the "
            f"{memory / 2**30:.3g} GiB of memory available; use smaller sizes"
        )
