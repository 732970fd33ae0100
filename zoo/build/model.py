"""Build an architecture into a module on a device, generate its inputs, run it."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.build.outputs import left_out_entries, name_outputs, selects_outputs
from zoo.build.shapes import input_shape, sample_sizes, value_range
from zoo.build.sizing import check_build_size, check_input_size
from zoo.build.weights import load_weights
from zoo.errors import CheckFailed, DeviceError, ParameterError, PluginError, one_line
from zoo.host.plugin_calls import plugin_code, plugin_fault
from zoo.spec.architecture import FLOAT_DTYPES, Architecture
from zoo.spec.params import coerce_params
from zoo.text import sizes_text

if TYPE_CHECKING:
    import torch

DEVICES = ("cpu", "cuda")
MAX_SEED = 2**63 - 2**20  # torch seeds are 64-bit; verification adds small offsets


@dataclass
class BuiltModel:
    """A module built from an architecture, with everything needed to rebuild it."""

    arch: Architecture
    overrides: dict[str, Any]
    seed: int
    device: str
    module: Any
    weights: dict[str, str] | None = None  # {"path": ..., "sha256": ..., "tensors_sha256": ...}
    sizes: dict[str, int] = field(default_factory=dict)  # --size: chosen sizes of dynamic dims for the export sample
    params: dict[str, Any] = field(init=False)
    released: bool = field(init=False, default=False)  # its weights were freed (``release_weights``)
    # set by each forward: the declared outputs are picked out of what it returns (see name_outputs),
    # and the entries of a dict result that none of them takes
    selects_outputs: bool = field(init=False, default=False)
    left_out: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.params = {**self.arch.defaults, **self.overrides}

    def sample_inputs(self, sizes: Mapping[str, int] | None = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        sizes = self.export_sizes if sizes is None else sizes
        return make_inputs(self.arch, self.params, sizes, self.seed if seed is None else seed, self.device)

    @property
    def export_sizes(self) -> dict[str, int]:
        """The sizes of the sample the model is checked and exported with."""
        return {**sample_sizes(self.arch, self.params), **self.sizes}

    def forward(self, inputs: Mapping[str, torch.Tensor], grad: bool = False) -> dict[str, torch.Tensor]:
        """Outputs by name, in the order ``forward`` returned them (a dict may come in
        any key order; exporters that flatten outputs label them by position)."""
        import torch

        if self.released:
            raise RuntimeError(f"{self.arch.name}: its weights were released after verification; build it again")
        with torch.set_grad_enabled(grad), ieee_float32(self.device), plugin_code():
            try:
                result = call_module(self.arch, self.module, inputs)
            except BaseException as exc:  # noqa: BLE001 - the model's own bug (sys.exit() too), reported as a failed check
                if not plugin_fault(exc):
                    raise
                raise CheckFailed(f"{self.arch.name}: forward pass raised {type(exc).__name__}: {exc}") from exc
        self.selects_outputs, self.left_out = selects_outputs(self.arch, result), left_out_entries(self.arch, result)
        return name_outputs(self.arch, result)

    @contextmanager
    def returning_declared_outputs(self) -> Iterator[None]:
        """While exporting: the module's ``forward`` returns just the declared outputs, in
        declared order, where they are picked out of more (its signature stays its own)."""
        import functools

        if not self.selects_outputs:
            yield
            return
        module, arch = self.module, self.arch
        own = module.forward

        @functools.wraps(own)
        def declared_only(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
            return tuple(name_outputs(arch, own(*args, **kwargs)).values())

        module.forward = declared_only
        try:
            yield
        finally:
            del module.forward  # the class's own forward again


def call_module(arch: Architecture, module: Any, inputs: Mapping[str, Any]) -> Any:
    """``module``'s forward on ``inputs``: by keyword where the architecture says
    so, else by position in declared order."""
    return module(**inputs) if arch.keyword_inputs else module(*inputs.values())




def release_weights(built: BuiltModel) -> None:
    """Free the module's weights (moved to torch's ``meta`` device, which holds no
    data): a large model's runtime copy then loads into the memory they held."""
    import gc

    built.module.to("meta")
    built.released = True
    gc.collect()  # an exporter's program in a reference cycle may still hold the old tensors


@contextmanager
def ieee_float32(device: str) -> Iterator[None]:
    """Full float32 precision on CUDA: cuDNN convolutions default to TF32 (10-bit
    mantissa), which would make the PyTorch reference itself the inexact side."""
    import torch

    if device != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def check_device(name: str) -> None:
    """``cpu`` or ``cuda``; a clear error where torch has no CUDA. Imports torch only
    for ``cuda``: ``zoo export --all --jobs N`` plans without it, its workers import it."""
    if name not in DEVICES:
        raise DeviceError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise DeviceError("--device cuda: this PyTorch has no CUDA device available; use --device cpu")


def torch_device(name: str) -> torch.device:
    import torch

    check_device(name)
    return torch.device(name)


def build_model(
    arch: Architecture,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str = "cpu",
    weights: str | Path | None = None,
) -> BuiltModel:
    """Build ``arch`` with ``overrides`` and seeded initial weights, in eval mode on ``device``."""
    import torch

    check_seed(seed)
    dev = torch_device(device)
    overrides = coerce_params(dict(overrides or {}), arch.parameters, arch.name)
    check_dimension_params(arch, {**arch.defaults, **overrides})
    check_build_size(arch, overrides)
    with torch.random.fork_rng(devices=[]), plugin_code():
        torch.manual_seed(seed)
        try:
            module = arch.build(**overrides)
        except ParameterError as exc:  # the plugin's own message, without saying which architecture
            raise ParameterError(f"architecture {arch.name!r}: {exc}") from exc
        except BaseException as exc:  # noqa: BLE001 - sys.exit() in a build names the plugin too
            if not plugin_fault(exc):
                raise
            raise build_error(arch, overrides, exc) from exc
    if not isinstance(module, torch.nn.Module):
        raise PluginError(
            f"architecture {arch.name!r} (plugin {arch.plugin!r}): build returned {type(module).__name__}, not a torch.nn.Module"
        )
    record = None
    if weights is not None:
        record = load_weights(module, Path(weights), arch.name)
    module.eval()
    module.to(dev)
    return BuiltModel(arch, dict(overrides), seed, device, module, record)


# What a too large or malformed parameter makes torch raise (a huge allocation,
# a size past int64, a tuple parameter given a number); other errors are the plugin's.
PARAMETER_FAULTS = (RuntimeError, MemoryError, OverflowError, TypeError, ValueError)


def build_error(arch: Architecture, overrides: Mapping[str, Any], exc: BaseException) -> ParameterError | PluginError:
    """A build that failed: the parameters' fault when the user changed some and the
    error is one they cause; the plugin's bug when its defaults fail, or anything else."""
    why = one_line(exc, 200, first_line=True)  # torch appends pages of C++ frames
    if overrides and isinstance(exc, PARAMETER_FAULTS):
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        return ParameterError(f"{arch.name} cannot be built with {given}: {why}; choose other values ('zoo show {arch.name}')")
    return PluginError(f"architecture {arch.name!r} (plugin {arch.plugin!r}) failed to build: {why}")












def check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ParameterError(f"--seed {seed!r}: use an integer from 0 to {MAX_SEED}")


def check_dimension_params(arch: Architecture, params: Mapping[str, Any]) -> None:
    """A parameter that sizes an input (``in_features``) must be a positive integer:
    refused here, before a plugin's ``build`` turns it into a torch error."""
    for inp in arch.inputs:
        for dim in inp.shape:
            name = dim if isinstance(dim, str) else getattr(dim, "name", None)
            if name not in params:
                continue
            value = params[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(
                    f"{arch.name}: {name}={value!r} sizes input {inp.name!r}; use a positive integer"
                )


def make_inputs(
    arch: Architecture, params: Mapping[str, Any], sizes: Mapping[str, int], seed: int, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """Seeded inputs of the declared shapes, dtypes and ranges (made on the CPU, so
    every device sees the same values); the architecture's own ``sample_inputs`` when it has one."""
    import torch

    check_input_size(arch, params, sizes)
    generator = torch.Generator().manual_seed(seed)
    if arch.sample_inputs is not None:
        return {name: t.to(device) for name, t in supplied_inputs(arch, params, sizes, generator).items()}
    inputs = {}
    for inp in arch.inputs:
        shape = input_shape(inp, params, sizes)
        dtype = getattr(torch, inp.dtype)
        bounds = value_range(inp, params)
        if bounds is not None:
            check_range(inp, bounds)
        if inp.dtype == "bool":
            tensor = torch.randint(0, 2, shape, generator=generator).bool()
        elif inp.dtype in FLOAT_DTYPES:
            if bounds is None:
                tensor = torch.randn(shape, generator=generator)
            else:
                low, high = bounds
                tensor = torch.rand(shape, generator=generator) * (high - low) + low
            tensor = tensor.to(dtype)
            if bounds is not None:
                tensor = _half_open(tensor, inp, *bounds)
        else:
            low, high = bounds  # type: ignore[misc]  # Input requires a range for integers
            tensor = torch.randint(int(low), int(high), shape, generator=generator, dtype=dtype)
        inputs[inp.name] = tensor.to(device)
    return inputs


def supplied_inputs(
    arch: Architecture, params: Mapping[str, Any], sizes: Mapping[str, int], generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``arch.sample_inputs`` called with every symbolic dimension's size, its result
    checked against the declared inputs (a ``PluginError`` naming the plugin)."""
    import torch

    shapes = {inp.name: input_shape(inp, params, sizes) for inp in arch.inputs}
    every_size = dict(sizes)
    for inp in arch.inputs:
        for dim, size in zip(inp.shape, shapes[inp.name]):
            if not isinstance(dim, int):
                every_size.setdefault(str(dim), size)
    owner = f"architecture {arch.name!r} (plugin {arch.plugin!r}): sample_inputs"
    try:
        made = arch.sample_inputs(every_size, generator, dict(params))  # type: ignore[misc]
    except ParameterError:
        raise
    except Exception as exc:  # noqa: BLE001 - the plugin's bug, named as such
        raise PluginError(f"{owner} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(made, Mapping) or set(made) != set(shapes):
        got = sorted(made) if isinstance(made, Mapping) else type(made).__name__
        raise PluginError(f"{owner} returned {got}; return a dict with exactly the inputs {list(shapes)}")
    for inp in arch.inputs:
        tensor = made[inp.name]
        if not isinstance(tensor, torch.Tensor):
            raise PluginError(f"{owner}: input {inp.name!r} is a {type(tensor).__name__}, not a torch.Tensor")
        if tensor.dtype != getattr(torch, inp.dtype):
            raise PluginError(f"{owner}: input {inp.name!r} is {str(tensor.dtype).removeprefix('torch.')}, declared {inp.dtype}")
        if tuple(tensor.shape) != shapes[inp.name]:
            raise PluginError(f"{owner}: input {inp.name!r} has shape {list(tensor.shape)}, expected {list(shapes[inp.name])} ({sizes_text(every_size)})")
    return {inp.name: made[inp.name].detach().cpu() for inp in arch.inputs}  # declared order: forward takes them by position




def check_batch_sizes(built: BuiltModel, batches: Sequence[int]) -> None:
    for batch in batches:
        check_input_size(built.arch, built.params, {**sample_sizes(built.arch, built.params), "batch": batch})


def check_range(inp: Any, bounds: tuple[float, float]) -> None:
    """A sample range must be two finite numbers with ``low < high`` (``[0, vocab_size)``
    with ``vocab_size=0`` is empty), and integer bounds must fit the dtype."""
    import torch

    low, high = bounds
    names = " / ".join(str(b) for b in inp.range if isinstance(b, str))
    hint = f" (check the parameter {names})" if names else ""
    numbers = all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
    if not numbers or not all(map(math.isfinite, bounds)) or not low < high:
        raise ParameterError(f"input {inp.name!r}: sample range [{low!r}, {high!r}) is empty or not finite{hint}")
    if inp.dtype in FLOAT_DTYPES or inp.dtype == "bool":
        return
    info = torch.iinfo(getattr(torch, inp.dtype))
    if low < info.min or high - 1 > info.max:
        raise ParameterError(f"input {inp.name!r}: sample range [{low}, {high}) does not fit {inp.dtype}{hint}")


def _half_open(tensor: torch.Tensor, inp: Any, low: float, high: float) -> torch.Tensor:
    """Clamp into ``[low, high)`` as the dtype can hold it: rounding to float16 or
    bfloat16 (or float32 arithmetic) can land on ``high`` itself."""
    import torch

    dtype = tensor.dtype
    top = torch.tensor(float(high), dtype=torch.float64).to(dtype)
    while top.double().item() >= high:
        top = torch.nextafter(top, torch.tensor(float("-inf"), dtype=dtype))
    bottom = torch.tensor(float(low), dtype=torch.float64).to(dtype)
    while bottom.double().item() < low:
        bottom = torch.nextafter(bottom, torch.tensor(float("inf"), dtype=dtype))
    if bottom > top:
        raise ParameterError(f"input {inp.name!r}: sample range [{low}, {high}) holds no {inp.dtype} value; widen it")
    return tensor.clamp(bottom, top)
