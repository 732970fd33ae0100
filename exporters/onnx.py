"""ONNX export with torch.export (``torch.onnx.export(dynamo=True)``); the runtimes that run it are plugins of their own.

Registered through ``register_exporters`` like any third-party format. torch,
onnx and onnxruntime are imported inside the functions, so loading this
plugin costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.exporters.fold import fold_linear
from zoo.exporters.onnx_files import _read, _read_file, read_metadata_props, tensor_size  # noqa: F401 - _read_file: its cache, for tests
from zoo.exporters.onnx_writer import save_model
from zoo.exporters.torchlib import reuse_torchlib_registry

import zoo
from zoo import Exporter, ExportJob

DEFAULT_OPSET = 20
MIN_OPSET = 18  # the torch.export-based exporter's lowest
MAX_OPSET = 23
EXTERNAL_DATA_BYTES = 2**31 - 2**24  # protobuf's 2 GB limit, with room for the graph
# Node metadata kept in the file: where a node came from in the module tree.
# Stack traces and FX dumps are dropped: they hold absolute paths of this machine.
KEEP_NODE_METADATA = ("namespace", "pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy")


def export(job: ExportJob) -> list[Path]:
    import torch

    reuse_torchlib_registry()  # the exporter's op table, built once per process (0.7 s an export otherwise)
    # zoo quiets the exporter's prints, warnings and log records around this call (zoo.host.plugin_calls.quiet_exporter)
    program = torch.onnx.export(
        job.module,
        job.torch_args(),
        kwargs=job.torch_kwargs() or None,
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
    try:
        if weight_bytes < EXTERNAL_DATA_BYTES:
            save_model(model, job.path)  # one file, its weights streamed from PyTorch's memory
        else:
            program.save(str(job.path), external_data=True)  # the exporter names it <file>.data
            files.append(job.path.with_name(job.path.name + ".data"))
    finally:
        # the exporter's graph outlives this call (something holds it past gc.collect()) and
        # its weights are PyTorch's own tensors: let go, so they can be freed before the runtime loads
        for value in model.graph.initializers.values():
            value.const_value = None
    return files  # zoo runs ``check`` on it next, then verifies it


def load(path: Path, device: str, threads: int | None = None) -> Any:
    """The file in onnxruntime at its defaults, for a program that calls the format
    directly (and for formats built on this one); zoo itself runs a file through
    the registered runtimes (``--runtime``)."""
    from zoo.exporters.onnxruntime_runtime import load as ort_load

    return ort_load(path, device, {"threads": str(threads)} if threads else {})


def warm_up(opset: int | None) -> None:
    """What the first export of a process pays, paid ahead: the imports and the
    exporter's op table. (A trial export here would leave torch's semaphores to
    multiprocessing's resource tracker, which reports them when a worker is stopped.)"""
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401
    import torch.onnx  # noqa: F401

    reuse_torchlib_registry()


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
    return read_metadata_props(path)


def check(path: Path) -> None:
    """``onnx.checker`` with full shape inference; from the path when weights are
    external (the checker reads them there, past 2 GB too)."""
    import onnx

    read = _read(path)
    # the file's own bytes where they are kept: a proto would be serialized again to reach the checker
    onnx.checker.check_model(str(path) if read.data is None else read.data, full_check=True)


def intermediates(path: Path, feed: dict[str, Any]) -> list[dict[str, Any]]:
    """Each module scope's last value, in graph order, from onnxruntime's CPU provider."""
    from zoo.exporters.onnxruntime_runtime import intermediates as ort_intermediates

    return ort_intermediates(path, feed, {})


def make_variant(source: Path, target: Path, variant: str, metadata: dict[str, str], calibration: Any) -> dict[str, Any]:
    """Write the ``variant`` ("int8" or "fp16") of the verified model at ``source``
    to ``target``, with ``metadata``; returns how it was made, for the report.

    int8 is dynamic quantization (weights int8, activations quantized at run
    time) unless the user gave representative rows (``--calibration``) or the
    graph has convolutions, which onnxruntime's dynamic quantization runs
    without fast int8 kernels: then static, calibrated on ``calibration.feeds``.
    """
    import onnx

    model = _read(source).model
    if variant == "int8":
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

        if calibration.representative or any(node.op_type == "Conv" for node in model.graph.node):
            quantize_static(
                source, target, _Calibration(calibration.feeds), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=STATIC_OPS,
            )
            how = {"method": "static", "calibration_batches": len(calibration.feeds)}
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


# What a quantized graph computes with: onnxruntime's dynamic and static (QDQ, QOperator) forms
INT8_OPS = frozenset({
    "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "MatMulInteger", "ConvInteger", "QLinearMatMul",
    "QLinearConv", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm", "QAttention",
})


def holds_variant(path: Path, variant: str) -> bool:
    """Whether the file computes as ``variant`` does: int8 quantization ops, or float16 weights or casts."""
    from onnx import TensorProto

    graph = _read(path).model.graph
    if variant == "int8":
        return any(node.op_type in INT8_OPS for node in graph.node)
    if variant == "fp16":
        casts = (a.i for n in graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to")
        return any(t.data_type == TensorProto.FLOAT16 for t in graph.initializer) or TensorProto.FLOAT16 in casts
    return False


# What static quantization quantizes: the weighted ops. A Softmax or Sigmoid head kept in
# float: uint8 probabilities round small ones to 0, whose loss on real labels explodes.
STATIC_OPS = ["Conv", "MatMul", "Gemm"]


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
            holds_variant=holds_variant,
        )
    )
