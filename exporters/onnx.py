"""ONNX export with torch.export (``torch.onnx.export(dynamo=True)``), run with onnxruntime.

Registered through ``register_exporters`` like any third-party format. torch,
onnx and onnxruntime are imported inside the functions, so loading this
plugin costs nothing.
"""

from __future__ import annotations

import ast
import functools
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

from zoo.exporters.fold import fold_linear
from zoo.exporters.torchlib import reuse_torchlib_registry

import zoo
from zoo import Exporter, ExportJob

DEFAULT_OPSET = 20
MIN_OPSET = 18  # the torch.export-based exporter's lowest
MAX_OPSET = 23
EXTERNAL_DATA_BYTES = 2**31 - 2**24  # protobuf's 2 GB limit, with room for the graph
PROTOBUF_LIMIT = 2**31  # no ONNX file itself (weights apart) can be larger
KEEP_BYTES = 64 * 2**20  # a file up to this size stays in memory for the checker and the session; a larger one is read from disk
SIDE_FILE_SLACK = 2**20  # a side file may hold this much beyond what its tensors need (alignment)
# Node metadata kept in the file: where a node came from in the module tree.
# Stack traces and FX dumps are dropped: they hold absolute paths of this machine.
KEEP_NODE_METADATA = ("namespace", "pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy")


def export(job: ExportJob) -> list[Path]:
    import torch

    reuse_torchlib_registry()  # the exporter's op table, built once per process (0.7 s an export otherwise)
    # zoo quiets the exporter's prints, warnings and log records around this call (zoo.host.plugin_calls.quiet_exporter)
    program = torch.onnx.export(
        job.module,
        tuple(job.sample.values()),
        input_names=list(job.sample),
        output_names=job.output_names,
        dynamic_shapes=job.torch_dynamic_shapes(),
        opset_version=job.opset,  # resolved and range-checked by zoo (Exporter.opsets) before any work
        dynamo=True,
        optimize=True,
        verbose=False,
    )
    model = program.model
    for node in model.graph.all_nodes():
        for key in [k for k in node.metadata_props if k not in KEEP_NODE_METADATA]:
            del node.metadata_props[key]
    import onnx

    model.metadata_props.clear()
    model.metadata_props.update({**job.metadata, "zoo.onnx_version": onnx.__version__})
    if job.options.get("fold_linear"):
        job.stats["fold_linear"] = fold_linear(model).to_dict()
    weight_bytes = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    files = [job.path]
    if weight_bytes < EXTERNAL_DATA_BYTES:
        program.save(str(job.path), external_data=False)
    else:
        program.save(str(job.path), external_data=True)  # the exporter names it <file>.data
        files.append(job.path.with_name(job.path.name + ".data"))
    return files  # zoo runs ``check`` on it next, then verifies it


def warm_up(opset: int | None) -> None:
    """What the first export of a process pays, paid ahead: the imports, and the
    exporter's op table for ``opset``, built by exporting a one-layer model."""
    import onnxruntime  # noqa: F401
    import torch

    reuse_torchlib_registry()
    torch.onnx.export(
        torch.nn.Linear(2, 1), (torch.zeros(1, 2),), dynamo=True, optimize=True, verbose=False,
        opset_version=opset or DEFAULT_OPSET,
    )


class OrtRunner:
    """An onnxruntime session that maps input names to arrays and back; also
    what ``zoo bench`` times (``session``), so both see the same providers."""

    def __init__(self, path: Path, device: str, threads: int | None = None) -> None:
        import onnxruntime as ort

        ort.set_default_logger_severity(3)  # some load-time warnings ignore the session's level
        wanted = ["CPUExecutionProvider"]
        self.note = ""
        if device == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            else:
                self.note = "this onnxruntime has no CUDAExecutionProvider: it ran on the CPU provider"
        from onnx import TensorProto

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        read = _read(path)
        model = read.model
        io = [*model.graph.input, *model.graph.output]
        bfloat16 = [v.name for v in io if v.type.tensor_type.elem_type == TensorProto.BFLOAT16]
        if bfloat16:  # refused here rather than as a confusing dtype error on the first run
            raise RuntimeError(
                f"onnxruntime's Python API cannot take or return bfloat16 arrays (numpy has no bfloat16): "
                f"{', '.join(bfloat16)}; export a float32 or float16 version of the model to verify it"
            )
        if read.data is None:
            # Prepacking makes a packed copy of every weight while the session
            # loads: for a large model that doubles the peak memory. Without it,
            # onnxruntime maps the .data file instead of copying it.
            options.add_session_config_entry("session.disable_prepacking", "1")
        # a large file loads from its path (external data is found relative to it)
        source = str(path) if read.data is None else read.data
        self.session = ort.InferenceSession(source, sess_options=options, providers=wanted)
        self.run_options = ort.RunOptions()  # abort() sets its terminate flag: the running call returns
        self.run_options.log_severity_level = 4  # a terminated run logs an error in red: zoo says why itself
        self.providers = self.session.get_providers()
        self.description = f"onnxruntime {ort.__version__}" + (f" (threads {threads})" if threads else "")
        self.input_names = [i.name for i in self.session.get_inputs()]  # zoo verify --arch matches them to the architecture's
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, feed: dict[str, Any]) -> dict[str, Any]:
        self.run_options.terminate = False
        return dict(zip(self.output_names, self.session.run(None, feed, self.run_options)))

    def abort(self) -> None:
        """Stop a ``__call__`` running in another thread (a timeout, Ctrl-C): it raises there."""
        self.run_options.terminate = True

    def close(self) -> None:
        """Free the session now: one left for the interpreter's exit after a terminated
        run can abort the process ("terminate called without an active exception")."""
        self.session = None


def load(path: Path, device: str, threads: int | None = None) -> OrtRunner:
    """``threads``: onnxruntime's intra-op threads (``zoo bench --threads``); default its own."""
    return OrtRunner(path, device, threads)


class _Read(NamedTuple):
    model: Any  # onnx.ModelProto; a large file's without its weights' bytes (their shapes stay)
    data: bytes | None  # the file's bytes; None when its weights are external or it is large
    external: bool = False  # its weights are in side files


def _read(path: Path) -> _Read:
    """``path`` parsed once for the checker, the metadata, the side files and the
    session: reads of the same unchanged file reuse it."""
    stat = os.stat(path)
    if stat.st_size > PROTOBUF_LIMIT:  # refused before reading: protobuf cannot parse it anyway
        raise ValueError(f"{Path(path).name} is {stat.st_size / 2**30:.3g} GiB; an ONNX file (weights apart) is under 2 GiB")
    read = _read_file(str(Path(path).resolve()), (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    if read.external:  # each time: the side files may have changed since the file was parsed
        check_external_data(read.model, Path(path).parent)
    return read


@functools.lru_cache(maxsize=1)  # one model at a time: the last one read
def _read_file(path: str, identity: tuple[int, ...]) -> _Read:
    import onnx
    from onnx.external_data_helper import uses_external_data

    data = Path(path).read_bytes()
    model = onnx.load_model_from_string(data)  # external data stays on disk
    external = any(uses_external_data(tensor) for tensor in model.graph.initializer)
    if external or len(data) <= KEEP_BYTES:
        return _Read(model, None if external else data, external)
    # Large: the parse keeps what the metadata, side files and sizes need, not a
    # second and third copy of the weights; the checker and session read the path.
    del data
    for tensor in model.graph.initializer:
        tensor.ClearField("raw_data")
    return _Read(model, None, False)


def tensor_size(tensor: Any) -> tuple[int, int]:
    """Elements and bytes a ``TensorProto`` declares (from its dims; nothing read)."""
    from onnx.helper import tensor_dtype_to_np_dtype

    elements = math.prod(tensor.dims)
    try:
        itemsize = tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):  # string tensors, unknown types
        itemsize = 1
    return elements, elements * itemsize


def check_external_data(model: Any, folder: Path) -> None:
    """Each external tensor must lie inside its side file, and a side file must not
    be much larger than its tensors need: checked from sizes alone, before
    anything (checker, onnxruntime, a hash) reads it."""
    from onnx.external_data_helper import uses_external_data

    ends: dict[str, int] = {}
    for tensor in model.graph.initializer:
        if not uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        if not location or Path(location).is_absolute() or ".." in Path(location).parts:
            raise ValueError(f"initializer {tensor.name!r} names side file {location!r}; only a file beside the model is read")
        _, need = tensor_size(tensor)
        offset, length = int(info.get("offset", 0) or 0), int(info.get("length", need) or 0)
        if length != need:
            raise ValueError(f"initializer {tensor.name!r} declares {length} bytes in {location}, its shape needs {need}")
        try:
            size = (folder / location).stat().st_size
        except FileNotFoundError:  # the checker reports a missing side file (exit 1, a broken export)
            continue
        except OSError as exc:
            raise ValueError(f"side file {location} of initializer {tensor.name!r}: {exc.strerror}") from None
        if offset < 0 or offset + need > size:
            raise ValueError(f"initializer {tensor.name!r} lies past the end of {location} ({offset}+{need} > {size} bytes)")
        ends[location] = max(ends.get(location, 0), offset + need)
    for location, end in ends.items():
        size = (folder / location).stat().st_size
        if size > 2 * end + SIDE_FILE_SLACK:
            raise ValueError(
                f"side file {location} is {size:,} bytes but the model's tensors use {end:,}; it is not this model's data"
            )


def count_weights(path: Path) -> tuple[int, int]:
    """Elements and bytes of the weights ``path`` holds (initializers and constants),
    counted from their shapes: what ``zoo verify`` compares its metadata against."""
    graph = _read(path).model.graph
    tensors = [*graph.initializer, *(a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value")]
    sizes = [tensor_size(t) for t in tensors]
    return sum(e for e, _ in sizes), sum(b for _, b in sizes)


def side_files(path: Path) -> list[Path]:
    """The external-data files ``path``'s initializers name, relative to its folder."""
    from onnx.external_data_helper import uses_external_data as external

    found: list[Path] = []
    for tensor in _read(path).model.graph.initializer:
        if external(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), None)
            if location and path.parent / location not in found:
                found.append(path.parent / location)
    return found


def read_metadata(path: Path) -> dict[str, str]:
    return {prop.key: prop.value for prop in _read(path).model.metadata_props}


def check(path: Path) -> None:
    """``onnx.checker`` with full shape inference; from the path when weights are
    external (the checker reads them there, past 2 GB too)."""
    import onnx

    read = _read(path)
    onnx.checker.check_model(str(path) if read.data is None else read.model, full_check=True)


def module_scopes(node: Any) -> list[tuple[str, str]]:
    """``(module path, class)`` of every module ``node`` lies in, outermost first,
    from the metadata the exporter wrote (``KEEP_NODE_METADATA``); the root is ``""``."""
    meta = {p.key: p.value for p in node.metadata_props}
    try:
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        classes = ast.literal_eval(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))
    except (ValueError, SyntaxError):  # damaged metadata: no module to name
        return []
    if not isinstance(scopes, list) or len(scopes) < 2 or scopes[0] != "" or len(classes) != len(scopes):
        return []
    return [(str(path), str(cls).rsplit(".", 1)[-1]) for path, cls in zip(scopes[:-1], classes[:-1])]  # the last is the op itself


def intermediates(path: Path, feed: dict[str, Any]) -> list[dict[str, Any]]:
    """The output of the last node inside each module scope, in graph order, from
    a copy of the model with those values exposed as outputs (small files only:
    one with external weights is not copied)."""
    import onnx
    import onnxruntime as ort

    read = _read(path)
    if read.data is None:
        return []
    model = onnx.ModelProto()
    model.CopyFrom(read.model)
    last: dict[str, tuple[int, int, Any, str]] = {}  # module path -> (node index, -depth, node, class)
    for index, node in enumerate(model.graph.node):  # ONNX graphs are stored in topological order
        for depth, (module, cls) in enumerate(module_scopes(node)):
            if node.output and node.output[0]:
                last[module] = (index, -depth, node, cls)
    # in graph order; where modules end on the same node (a Sequential and its last layer), the innermost first
    ordered = [(module, (index, node, cls)) for module, (index, _, node, cls) in sorted(last.items(), key=lambda item: item[1][:2])]
    outputs = {o.name for o in model.graph.output}
    for _, (_, node, _) in ordered:
        if node.output[0] not in outputs:
            outputs.add(node.output[0])
            model.graph.output.append(onnx.ValueInfoProto(name=node.output[0]))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    names = [node.output[0] for _, (_, node, _) in ordered]
    values = session.run(names, feed)
    return [
        {"node": node.name, "op": node.op_type, "module": module, "class": cls, "value": value}
        for (module, (_, node, cls)), value in zip(ordered, values)
    ]


def make_variant(source: Path, target: Path, variant: str, metadata: dict[str, str], calibration: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the ``variant`` ("int8" or "fp16") of the verified model at ``source``
    to ``target``, with ``metadata``; returns how it was made, for the report.

    int8 is dynamic quantization (weights int8, activations quantized at run
    time) unless the graph has convolutions: those are quantized statically,
    calibrated on ``calibration`` (zoo's generated inputs), as onnxruntime's
    dynamic quantization has no fast int8 convolution kernels.
    """
    import onnx

    model = _read(source).model
    if variant == "int8":
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

        if any(node.op_type == "Conv" for node in model.graph.node):
            quantize_static(
                source, target, _Calibration(calibration), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            )
            how = {"method": "static", "calibration_batches": len(calibration)}
        else:
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
            how = {"method": "dynamic"}
        result = onnx.load(str(target))
    elif variant == "fp16":
        import onnx_ir as ir
        from onnxruntime.transformers.float16 import convert_float_to_float16

        converted = ir.from_proto(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True))
        converted.graph.sort()  # the converter appends its input casts at the end; the checker wants topological order
        result = ir.to_proto(converted)
        how = {"method": "float16 weights and arithmetic, inputs and outputs in their own dtype"}
    else:
        raise ValueError(f"unknown variant {variant!r}")
    del result.metadata_props[:]
    for key, value in metadata.items():
        result.metadata_props.add(key=key, value=value)
    onnx.save(result, str(target))
    return how


class _Calibration:
    """onnxruntime's CalibrationDataReader over zoo's generated input batches."""

    def __init__(self, feeds: list[dict[str, Any]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


@zoo.hookimpl
def register_exporters(register):
    register(
        Exporter(
            name="onnx",
            suffix=".onnx",
            summary=f"ONNX via torch.export (opset {DEFAULT_OPSET}), verified with onnxruntime",
            export=export,
            load=load,
            read_metadata=read_metadata,
            check=check,
            files=side_files,
            intermediates=intermediates,
            count_weights=count_weights,
            warm_up=warm_up,
            default_opset=DEFAULT_OPSET,
            opsets=(MIN_OPSET, MAX_OPSET),
            options=("fold_linear",),
            variants=("int8", "fp16"),
            make_variant=make_variant,
        )
    )
