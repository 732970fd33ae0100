"""The user's own inputs to verify on (``--inputs FILE.npz``), checked before any model is built.

An ``.npz`` is untrusted: ``zoo.files.npz`` validates every member (no pickle,
no code runs) and refuses one that would unpack to more than ``MAX_INPUT_BYTES``. Its keys are
the architecture's input names, each array batch dimension first, of the
declared dtype, rank and fixed sizes; integers lie in the input's ``range``;
the dynamic sizes are read from it, and must lie in each ``Dim``'s range (a
file exported with ``--static`` takes its sample sizes only).

A key named after an *output* holds that output's labels, batch first, of the
kind its task takes (``Task.labels``): class indices (integers, the output's
shape without its last dimension, each below that dimension's size), 0/1
labels or real values (the output's shape). ``labels=False`` (``--calibration``)
takes inputs only.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zoo.build.shapes import dynamic_dims, value_range
from zoo.errors import ParameterError, UsageError
from zoo.files.npz import read_npz
from zoo.files.paths import file_kind
from zoo.spec.architecture import INT_DTYPES, Architecture, Dim, Input, Output
from zoo.text import shorten, some
from zoo.verification.run import InputCase

MAX_INPUT_BYTES = 1 << 30  # what a verification case may unpack to


def load_input_files(
    paths: Sequence[Path], arch: Architecture, params: Mapping[str, Any], static: bool = False, param_hint: bool = True,
    option: str = "--inputs", labels: bool = True,
) -> list[InputCase]:
    return [load_input_file(Path(p), arch, params, static, param_hint, option, labels) for p in paths]


def load_input_file(
    path: Path, arch: Architecture, params: Mapping[str, Any], static: bool = False, param_hint: bool = True,
    option: str = "--inputs", labels: bool = True,
) -> InputCase:
    """One ``--inputs`` file as a verification case, or a usage error saying what is wrong with it.
    ``static``: the model's dynamic dimensions are fixed at their sample sizes. ``param_hint``:
    the command takes ``--param`` (a message may suggest one). ``labels``: keys named
    after outputs are taken as their labels (else refused)."""
    import numpy as np

    where = f"{option} {shorten(path.name)}"
    try:
        info = path.stat()
    except OSError:
        info = None
    if info is None or not stat.S_ISREG(info.st_mode):
        what = "does not exist" if info is None else f"is {file_kind(info.st_mode)}, not a regular file"
        raise UsageError(f"{where}: {what}; give an .npz of {arch.name}'s inputs")
    arrays = read_npz(path, where, MAX_INPUT_BYTES, f"write one with numpy.savez(FILE, {arch.inputs[0].name}=array, ...)")
    declared = [inp.name for inp in arch.inputs]
    outputs = [out.name for out in arch.outputs] if labels else []
    unknown = sorted(set(arrays) - set(declared) - set(outputs))
    missing = [name for name in declared if name not in arrays]
    if unknown or missing:
        problems = [f"unknown key(s) {some(unknown)}" for _ in unknown[:1]] + [f"missing {some(missing)}" for _ in missing[:1]]
        takes = f"{arch.name}'s inputs: {some(declared, 20)}"
        takes += f" (and, for labels, its outputs: {some(outputs, 20)})" if outputs else " (inputs only)"
        raise UsageError(f"{where}: {'; '.join(problems)}; its keys must be {takes}")
    sizes: dict[str, int] = {}
    dynamic = dynamic_dims(arch, params)  # each dimension's declaration, with its range
    for inp in arch.inputs:
        array = arrays[inp.name]
        wanted = "float32" if inp.dtype == "bfloat16" else inp.dtype  # numpy has no bfloat16
        if array.dtype != np.dtype(wanted):
            raise UsageError(f"{where}: {inp.name!r} is {array.dtype}, {arch.name} takes {wanted}; convert it with .astype('{wanted}')")
        if array.ndim != len(inp.shape):
            raise UsageError(f"{where}: {inp.name!r} has {array.ndim} dimensions {list(array.shape)}, {arch.name} takes {len(inp.shape)} ({symbolic(inp.dims)})")
        for axis, (dim, size) in enumerate(zip(inp.dims, array.shape)):
            expected = dim if isinstance(dim, int) else params.get(dim.name, sizes.get(dim.name))
            if expected is not None and expected != size:
                what = str(expected) if isinstance(dim, int) else f"{dim.name}={expected}"
                raise UsageError(f"{where}: {inp.name!r} has size {size} on axis {axis}, {arch.name} takes {what} there ({symbolic(inp.dims)})")
            if isinstance(dim, Dim) and dim.name not in params and dim.name not in sizes:
                check_size(where, inp.name, axis, int(size), dynamic[dim.name], static, arch.name, inp.dims)
                sizes[dim.name] = int(size)
        check_values(where, inp, array, params, arch.name, param_hint)
    rows = int(arrays[arch.inputs[0].name].shape[0]) if arrays[arch.inputs[0].name].ndim else 1
    found = {
        spec.name: check_labels(where, spec, arrays[spec.name], params, sizes, rows, arch) for spec in arch.outputs if spec.name in arrays
    }
    return InputCase(sizes, {inp.name: np.ascontiguousarray(arrays[inp.name]) for inp in arch.inputs}, path.name, found)


def check_labels(
    where: str, spec: Output, array: Any, params: Mapping[str, Any], sizes: Mapping[str, int], rows: int, arch: Architecture
) -> Any:
    """An output's labels as its task takes them (``Task.labels``), or a usage error naming the key."""
    import numpy as np

    from zoo.build.shapes import concrete
    from zoo.verification.metrics import task_metrics

    task, _ = task_metrics(spec)
    said = f"{where}: labels {spec.name!r}"
    if task is None:
        raise UsageError(f"{said}: output {spec.name!r} of {arch.name} has no task, so zoo has nothing to score; leave the key out")
    kind = task.labels
    shape: tuple[int, ...] | None = None
    if spec.shape is not None:
        try:
            shape = concrete(spec.shape, params, sizes, f"output {spec.name!r}")
        except ParameterError:
            shape = None  # a dimension only the forward pass knows: checked when the case runs
    wanted = shape[:-1] if shape is not None and kind == "class" else shape
    if wanted is not None and tuple(array.shape) != tuple(wanted):
        form = "class indices, one per row" if kind == "class" else f"{kind} labels"
        raise UsageError(f"{said} has shape {list(array.shape)}, {arch.name} gives {list(shape or ())} there: give {form} of shape {list(wanted)}")
    if wanted is None and (not array.ndim or array.shape[0] != rows):
        raise UsageError(f"{said} has shape {list(array.shape)}, the inputs {rows} rows: give labels batch first, one per row")
    if kind == "class":
        return check_classes(said, array, shape[-1] if shape else None)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise UsageError(f"{said} is {array.dtype}: give numbers ({'0 or 1' if kind == 'binary' else 'real values'})")
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise UsageError(f"{said} holds NaN or infinite values: give finite labels")
    if kind == "binary" and not np.isin(values, (0.0, 1.0)).all():
        bad = values[~np.isin(values, (0.0, 1.0))].reshape(-1)[0]
        raise UsageError(f"{said} holds {bad:g}: {task.name} labels are 0 or 1")
    return values


def check_classes(said: str, array: Any, classes: int | None) -> Any:
    import numpy as np

    if not np.issubdtype(array.dtype, np.integer):
        raise UsageError(f"{said} is {array.dtype}: give class indices as integers (.astype('int64'))")
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0 or (classes is not None and high >= classes):
            bad = low if low < 0 else high
            bound = f"0 to {classes - 1}" if classes is not None else "0 or more"
            raise UsageError(f"{said} holds class {bad}, outside {bound} (the model has {classes} classes)")
    return array.astype(np.int64)


def check_size(where: str, name: str, axis: int, size: int, dim: Dim, static: bool, arch: str, dims: Sequence[Any]) -> None:
    """A dynamic size the model takes: the export's sample size when static, else within ``dim``'s range."""
    said = f"{where}: {name!r} has {dim.name}={size} on axis {axis}"
    if static and size != dim.sample_size:
        raise UsageError(
            f"{said}, but with static shapes {arch} takes {dim.name}={dim.sample_size} only ({symbolic(dims)}); "
            f"give inputs of that size, or export without --static"
        )
    if size < dim.min or (dim.max is not None and size > dim.max):
        allowed = f"from {dim.min} to {dim.max}" if dim.max is not None else f"of at least {dim.min}"
        raise UsageError(f"{said}, {arch} takes {dim.name} {allowed} ({symbolic(dims)})")


def check_values(where: str, inp: Input, array: Any, params: Mapping[str, Any], arch: str, param_hint: bool) -> None:
    """Integers outside the input's declared ``range`` (a token id past the vocabulary)
    would fail deep inside the model, or read past a table in the exported graph.
    ``param_hint``: the command builds the model, so a larger ``--param`` may take them."""
    import numpy as np

    if inp.dtype not in INT_DTYPES or inp.range is None or array.size == 0:
        return
    low, high = value_range(inp, params)
    smallest, largest = array.min().item(), array.max().item()  # no temporary the size of the array
    if low <= smallest and largest < high:
        return
    flat = array.reshape(-1)
    for start in range(0, flat.size, 1 << 20):  # the first value outside, found a chunk at a time
        chunk = flat[start : start + (1 << 20)]
        outside = np.flatnonzero((chunk < low) | (chunk >= high))
        if outside.size:
            position = [int(i) for i in np.unravel_index(start + int(outside[0]), array.shape)]
            value = flat[start + int(outside[0])].item()
            break
    named = list(dict.fromkeys(b for b in inp.range if isinstance(b, str)))
    declared = f" (range={inp.range!r}, {', '.join(f'{n}={params[n]}' for n in named)})" if named else ""
    if low >= high:
        raise UsageError(f"{where}: {arch} takes no value in {inp.name!r}: its range [{low}, {high}) is empty{declared}")
    bound = inp.range[1]
    larger = (
        f", or build with --param {bound}={largest + 1} or more"
        if param_hint and isinstance(bound, str) and smallest >= low and high <= largest < 2**31 else ""
    )
    raise UsageError(
        f"{where}: {inp.name!r} holds {value} at {position}, outside [{low}, {high}) that {arch} takes{declared}; "
        f"give values in that range{larger}"
    )


def symbolic(dims: Sequence[Any]) -> str:
    return "×".join(str(d) for d in dims)
