"""The specs plugins register: architectures, their inputs and outputs, exporters.

Everything here is plain data and can be listed without importing torch: a
``build`` callable is only called when a model is actually needed.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from zoo.spec.params import Parameter, build_parameters

HEADS = ("sigmoid", "softmax", "log_softmax")
FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")
INT_DTYPES = ("int64", "int32", "int16", "int8", "uint8")
DTYPES = FLOAT_DTYPES + INT_DTYPES + ("bool",)

# Names become file names (export --all writes NAME<suffix>) and command-line
# words: lowercase (no case-only clashes on case-insensitive disks), no path
# separators, and no leading dot or dash.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
SUFFIX_PATTERN = re.compile(r"\.[a-z0-9][a-z0-9._-]*")

DEFAULT_SAMPLE = MappingProxyType({"batch": 2})
DEFAULT_DIM_SAMPLE = 8


@dataclass(frozen=True)
class Dim:
    """A symbolic dimension.

    A name that is also a build parameter (``in_features``) resolves to that
    parameter's value and is static. Any other name (``batch``, ``seq``) stays
    dynamic in exported graphs: ``sample`` is its size when exporting, and
    verification also runs it at other sizes between ``min`` and ``max``.
    """

    name: str
    sample: int | None = None
    min: int = 1
    max: int | None = None

    def __post_init__(self) -> None:
        for field_name in ("sample", "min", "max"):
            value = getattr(self, field_name)
            if value is None:
                continue
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Dim({self.name!r}): {field_name} must be a positive integer, got {value!r}")
            object.__setattr__(self, field_name, int(value))  # numpy's integers too, as plain ints
        if self.max is not None and self.max < self.min:
            raise ValueError(f"Dim({self.name!r}): max {self.max} is below min {self.min}")
        if self.sample is not None and not self.min <= self.sample <= (self.max or self.sample):
            raise ValueError(f"Dim({self.name!r}): sample {self.sample} must lie in [{self.min}, {self.max or 'no limit'}]")

    @property
    def sizes(self) -> tuple[int, int, int | None]:
        """What the dimension means: its sample size and range (``Dim("batch")`` is ``Dim("batch", sample=2)``)."""
        return self.sample_size, self.min, self.max

    @property
    def sample_size(self) -> int:
        if self.sample is not None:
            return self.sample
        default = max(DEFAULT_SAMPLE.get(self.name, DEFAULT_DIM_SAMPLE), self.min)  # within the range it declares
        return default if self.max is None else min(default, self.max)

    def __str__(self) -> str:
        return self.name


DimLike = int | str | Dim


@dataclass(frozen=True)
class Input:
    """One named model input.

    ``shape`` mixes ints (fixed), names (symbolic, see ``Dim``) and ``Dim`` objects.
    ``range`` is ``(low, high)`` for generated samples: integers are drawn from
    ``[low, high)``, floats uniformly from ``[low, high)``; floats default to a
    standard normal. Bounds may name a build parameter (``(0, "vocab_size")``).
    """

    name: str
    shape: tuple[DimLike, ...]
    dtype: str = "float32"
    range: tuple[float | str, float | str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        if self.dtype not in DTYPES:
            raise ValueError(f"input {self.name!r}: dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.range is None and self.dtype in INT_DTYPES:
            raise ValueError(f"input {self.name!r}: integer inputs need a range=(low, high)")

    @property
    def dims(self) -> tuple[Dim | int, ...]:
        return tuple(Dim(d) if isinstance(d, str) else d for d in self.shape)


OUTPUT_PATH = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*|\d+)(?:\.(?:[A-Za-z_][A-Za-z0-9_]*|\d+))*")


@dataclass(frozen=True)
class Output:
    """One named model output.

    ``task`` names a registered ``zoo.Task`` that selects the loss check and the
    decision agreement of verification. Built in: ``binary`` (BCE),
    ``multiclass`` (cross-entropy over the last dimension), ``multilabel`` (BCE
    per label), ``regression`` (MSE); plugins add more (``register_tasks``).
    ``None``: no loss. ``head`` says what the model already applied to it:
    ``sigmoid``, ``softmax``, ``log_softmax`` or ``None`` (raw logits or
    values). The task and its head are checked when the architecture is
    registered. ``shape``, when given, is checked after every forward pass
    (same notation as inputs). ``path`` says where the tensor is in what
    ``forward`` returns, as dot-separated dict keys, attributes and indices
    (``past_key_values.layers.0.keys``); without it an output is found by its
    name in a dict or dataclass result (other entries are left out of the
    export, said once), or by its position in a tuple.
    """

    name: str
    task: str | None = None
    head: str | None = None
    shape: tuple[DimLike, ...] | None = None
    path: str | None = None
    # the registered Task, set when the architecture is registered (zoo.spec.task.resolve_tasks)
    resolved_task: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(self.shape))
        if self.task is not None:
            check_name(self.task, f"output {self.name!r}: task")
        if self.head is not None and self.head not in HEADS:
            raise ValueError(f"output {self.name!r}: head {self.head!r} is not one of {', '.join(HEADS)}")
        if self.path is not None and not (isinstance(self.path, str) and OUTPUT_PATH.fullmatch(self.path)):
            raise ValueError(f"output {self.name!r}: path {self.path!r} must be dot-separated names and indices, like 'past_key_values.layers.0.keys'")


@dataclass(frozen=True)
class Tolerance:
    """Allowed difference between PyTorch and an exported model: |a-b| <= atol + rtol*|b|."""

    rtol: float
    atol: float


# Defaults per (device, dtype), used unless an architecture or the command line says otherwise.
DEFAULT_TOLERANCES = MappingProxyType({
    ("cpu", "float64"): Tolerance(1e-7, 1e-9),
    ("cpu", "float32"): Tolerance(1e-4, 1e-5),
    ("cuda", "float32"): Tolerance(1e-3, 1e-4),
    ("*", "float16"): Tolerance(1e-2, 1e-3),
    ("*", "bfloat16"): Tolerance(2e-2, 1e-2),
})


def _short_float(value: float) -> str:
    mantissa, exponent = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"  # 1e-4, 2e-2


def _tolerance_help() -> str:
    """``--atol`` help written from ``DEFAULT_TOLERANCES``, so the two cannot disagree."""
    by_dtype: dict[str, list[str]] = {}
    for (device, dtype), tol in DEFAULT_TOLERANCES.items():
        where = "" if device == "*" else f" on {device}"
        by_dtype.setdefault(dtype, []).append(f"{_short_float(tol.rtol)}/{_short_float(tol.atol)}{where}")
    parts = [f"{dtype} {', '.join(values)}" for dtype, values in sorted(by_dtype.items(), key=lambda item: item[0] != "float32")]
    # verification.tolerance_for falls back to the device's float32 values for a pair the table lacks
    return f"defaults rtol/atol: {'; '.join(parts)}; otherwise float32's for the device; integers exact"


TOLERANCE_HELP = _tolerance_help()


@dataclass(frozen=True)
class Architecture:
    """A named, buildable model: what a plugin passes to ``register``.

    ``build`` is called with keyword arguments only; each of its parameters must
    have a default, and its annotation tells how ``--param`` values are parsed.
    ``tolerances`` overrides the default rtol/atol per device (``{"cpu": Tolerance(...)}``
    or ``{"*": ...}``). ``plugin`` is filled in by zoo when the plugin registers it.

    ``sample_inputs``, optional, makes realistic inputs where random ones are
    not (a padding mask with at least one token per row): called as
    ``sample_inputs(sizes, generator, params)`` with the concrete size of every
    symbolic dimension, a seeded ``torch.Generator`` and the build parameters,
    it returns ``{input name: tensor}`` of the declared shapes and dtypes. zoo
    uses it for every input it generates (check, export sample, verification, bench).

    ``keyword_inputs=True`` passes the inputs to ``forward`` by name
    (``forward(input_ids=..., attention_mask=...)``), in PyTorch, the export and
    the benchmark alike: Hugging Face models take ``past_key_values`` second, so a
    mask passed by position lands there.
    """

    name: str
    build: Callable[..., Any]
    inputs: tuple[Input, ...]
    outputs: tuple[Output, ...]
    summary: str = ""
    aliases: tuple[str, ...] = ()
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    plugin: str = ""
    sample_inputs: Callable[..., Mapping[str, Any]] | None = field(default=None, repr=False, compare=False)
    keyword_inputs: bool = False
    # read from ``build``'s signature once, when the architecture is made
    parameters: dict[str, Parameter] = field(init=False, repr=False, compare=False)
    # each symbolic input dimension, in order of first use: its ``Dim`` object wherever it is
    # written (a plain name refers to it), else ``Dim(name)``
    symbolic_dims: dict[str, Dim] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "aliases", tuple(self.aliases))
        check_name(self.name, "architecture")
        for alias in self.aliases:
            check_name(alias, f"architecture {self.name!r}: alias")
        if not callable(self.build):
            raise ValueError(f"architecture {self.name!r}: build must be callable")
        if self.sample_inputs is not None and not callable(self.sample_inputs):
            raise ValueError(f"architecture {self.name!r}: sample_inputs must be callable (sizes, generator, params) -> dict")
        if not self.inputs or not self.outputs:
            raise ValueError(f"architecture {self.name!r}: needs at least one input and one output")
        for kind, items in (("input", self.inputs), ("output", self.outputs)):
            names = [item.name for item in items]
            if len(set(names)) != len(names):
                raise ValueError(f"architecture {self.name!r}: {kind} names must be unique")
        # at registration: a bad signature fails there, not at first use
        object.__setattr__(self, "parameters", build_parameters(self.build, self.name))
        self._refuse_dims_named_like_parameters()
        object.__setattr__(self, "symbolic_dims", self._declared_dims())

    def _refuse_dims_named_like_parameters(self) -> None:
        """A ``Dim`` object asks for a dynamic dimension; if its name is a build
        parameter, the parameter's value would silently replace it (and fix it)."""
        for owner, dim in self._dim_objects():
            if dim.name in self.parameters:
                raise ValueError(
                    f"architecture {self.name!r}: {owner}: Dim({dim.name!r}) has the name of build parameter "
                    f"{dim.name!r}, whose value would replace the dynamic dimension; rename the Dim, "
                    f"or write the plain string {dim.name!r} to size it by the parameter"
                )

    def _dim_objects(self) -> Iterator[tuple[str, Dim]]:
        """Each ``Dim`` object written in an input's or output's shape, with where (``input 'x'``)."""
        shaped = [(f"input {i.name!r}", i.shape) for i in self.inputs] + [(f"output {o.name!r}", o.shape or ()) for o in self.outputs]
        for owner, shape in shaped:
            yield from ((owner, dim) for dim in shape if isinstance(dim, Dim))

    def _declared_dims(self) -> dict[str, Dim]:
        """A ``Dim`` object declares a dimension (its sizes), in an input or an output;
        the same name written plainly elsewhere refers to it. Two declarations that
        differ are refused: which one would hold is not for their order to decide.
        Only the inputs' dimensions are sized by zoo: the outputs' follow from them."""
        declared: dict[str, tuple[Dim, str]] = {}
        for owner, dim in self._dim_objects():
            first = declared.setdefault(dim.name, (dim, owner))
            if first[0].sizes != dim.sizes:
                raise ValueError(
                    f"architecture {self.name!r}: dimension {dim.name!r} is declared twice, differently: {first[0]!r} "
                    f"in {first[1]} and {dim!r} in {owner}; declare it once as a Dim and write the plain name "
                    f"{dim.name!r} elsewhere"
                )
        names = [d.name if isinstance(d, Dim) else d for i in self.inputs for d in i.shape if not isinstance(d, int)]
        return {name: declared[name][0] if name in declared else Dim(name) for name in dict.fromkeys(names)}

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self.parameters.items()}

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(o.task for o in self.outputs if o.task)

    def with_plugin(self, plugin: str) -> Architecture:
        return dataclasses.replace(self, plugin=plugin)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (``zoo list --json``); needs no torch."""
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "summary": self.summary,
            "plugin": self.plugin,
            "tasks": list(self.tasks),
            "inputs": [
                {"name": i.name, "shape": [_dim_json(d) for d in i.shape], "dtype": i.dtype, "range": _range_json(i.range)}
                for i in self.inputs
            ],
            "outputs": [
                {"name": o.name, "task": o.task, "head": o.head, "shape": None if o.shape is None else [_dim_json(d) for d in o.shape], "path": o.path}
                for o in self.outputs
            ],
            "parameters": {
                p.name: {"type": p.type_name, "default": list(p.default) if isinstance(p.default, tuple) else p.default}
                for p in self.parameters.values()
            },
        }

    def shape_text(self, params: Mapping[str, Any] | None = None) -> str:
        """``x: batch×8`` for each input, with parameter dims resolved."""
        values = {**self.defaults, **(params or {})}
        parts = []
        for inp in self.inputs:
            dims = [str(values.get(str(d), d)) for d in inp.shape]
            dtype = "" if inp.dtype == "float32" else f" {inp.dtype}"
            parts.append(f"{inp.name}: {'×'.join(dims)}{dtype}")
        return ", ".join(parts)


def _dim_json(dim: DimLike) -> int | str:
    return dim if isinstance(dim, int) else str(dim)


def _range_json(bounds: tuple[float | str, float | str] | None) -> list[float | str] | None:
    return None if bounds is None else list(bounds)


def check_name(name: Any, kind: str) -> None:
    """``ValueError`` unless ``name`` fits ``NAME_PATTERN``."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{kind} {name!r} is not a valid name: use lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (like 'binary-sigmoid')"
        )


