"""Reading an ONNX file once for every reader (the format's checker and metadata, the runtimes), and its module scopes.

Shared by the ``onnx`` format and the built-in runtimes: a file is parsed once,
its external data checked from sizes alone before anything reads it.
"""

from __future__ import annotations

import ast
import functools
import itertools
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

PROTOBUF_LIMIT = 2**31  # no ONNX file itself (weights apart) can be larger
KEEP_BYTES = 64 * 2**20  # a file up to this size stays in memory for the checker and the session; a larger one is read from disk
METADATA_PROPS = 14  # ModelProto.metadata_props, repeated StringStringEntryProto
MODEL_GRAPH, GRAPH_INITIALIZER, TENSOR_RAW_DATA = 7, 5, 9  # ModelProto.graph, GraphProto.initializer, TensorProto.raw_data
MAX_METADATA_BYTES = 16 * 2**20
MAX_TOP_LEVEL_FIELDS = 100_000  # a model's fields: its graph, opsets, functions, metadata entries
MAX_FIELDS = 1_000_000  # walked in a large file, its graph's nodes and initializers and theirs: the walk's time stays bounded
SIDE_FILE_SLACK = 2**20  # a side file may hold this much beyond what its tensors need (alignment)


def read_model(path: Path) -> tuple[Any, bytes | None]:
    """``path`` as an ``onnx.ModelProto`` (without external data) and its bytes
    (``None`` when its weights are external), parsed once for every reader."""
    read = _read(path)
    return read.model, read.data


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
    if stat.st_size > KEEP_BYTES:  # a large file is read whole only if its framing holds to the end
        check_framing(path, stat.st_size)
    read = _read_file(str(Path(path).resolve()), (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    if read.external:  # each time: the side files may have changed since the file was parsed
        check_external_data(read.model, Path(path).parent)
    return read


def check_framing(path: Path, size: int) -> None:
    """Walk the top-level protobuf fields of ``path`` by their tags and lengths alone,
    seeking past each value: a file that is not a message to its last byte (zeros, a
    valid model padded with junk) is refused having read a few bytes, not its size."""
    with open(path, "rb") as file:
        for _ in top_level_fields(file, path, size):
            pass


def top_level_fields(file: Any, path: Path, size: int) -> Iterator[tuple[int, int, int]]:
    """``(field number, wire type, length)`` of each top-level field of the message in
    ``file``, positioned at the field's value (``length`` bytes; 0 for a varint, already
    read); the caller may read it or not. Bad framing is a ``ValueError``."""
    for count, (number, wire, _, start, end) in enumerate(fields(file, path, size)):
        if count == MAX_TOP_LEVEL_FIELDS:
            raise ValueError(f"{Path(path).name} has over {MAX_TOP_LEVEL_FIELDS:,} top-level fields; an ONNX model has a few dozen")
        yield number, wire, end - start if wire else 0


def fields(file: Any, path: Path, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """``(number, wire type, offset, value start, value end)`` of each field of the
    message running from ``file``'s position to offset ``end``, with ``file`` at
    the value's start (a varint's already read); bad framing is a ``ValueError``.
    Unbounded in count: its callers bound it (``top_level_fields``, ``read_without_weights``)."""
    while (offset := file.tell()) < end:
        tag = _varint(file)
        wire = tag & 7
        if tag < 8 or wire not in (0, 1, 2, 5):  # field number 0, or a group or unknown wire type
            raise _not_framed(path, offset)
        if wire == 0:
            length = 0 if _varint(file) >= 0 else -1  # the value is the varint itself
        else:
            length = _varint(file) if wire == 2 else {1: 8, 5: 4}[wire]
        start = file.tell()
        if length < 0 or start + length > end:
            raise _not_framed(path, offset)
        yield tag >> 3, wire, offset, start, start + length
        file.seek(start + length)


def read_metadata_props(path: Path) -> dict[str, str]:
    """The model's ``metadata_props``, read from their own fields: the graph and its
    weights are skipped, not parsed (``zoo export --update`` reads every file's)."""
    from google.protobuf.message import DecodeError
    from onnx import StringStringEntryProto

    size = os.stat(path).st_size
    if size > PROTOBUF_LIMIT:
        raise ValueError(f"{Path(path).name} is {size / 2**30:.3g} GiB; an ONNX file (weights apart) is under 2 GiB")
    found: dict[str, str] = {}
    read = 0
    with open(path, "rb") as file:
        for number, wire, length in top_level_fields(file, path, size):
            if number != METADATA_PROPS or wire != 2:
                continue
            read += length
            if read > MAX_METADATA_BYTES:
                raise ValueError(f"{Path(path).name} has over {MAX_METADATA_BYTES:,} bytes of metadata; zoo writes a few kB")
            entry = StringStringEntryProto()
            try:
                entry.ParseFromString(file.read(length))
            except DecodeError as exc:
                raise ValueError(f"{Path(path).name}: a metadata entry does not parse ({exc})") from None
            found[entry.key] = entry.value
    return found


def _not_framed(path: Path, offset: int) -> ValueError:
    return ValueError(f"{Path(path).name} is not an ONNX file: its bytes at offset {offset:,} are no protobuf field")


def _varint(file: Any) -> int:
    value = 0
    for shift in range(0, 70, 7):
        byte = file.read(1)
        if not byte:
            return -1  # past the end: no field
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    return -1  # longer than any varint


@functools.lru_cache(maxsize=1)  # one model at a time: the last one read
def _read_file(path: str, identity: tuple[int, ...]) -> _Read:
    import onnx
    from onnx.external_data_helper import uses_external_data

    if identity[2] > KEEP_BYTES:
        # Large: parsed without its weights' bytes, which are skipped by their framing (the
        # metadata, side files and sizes need none); the checker and the runtimes read the path
        model = read_without_weights(Path(path), identity[2])
        external = any(uses_external_data(tensor) for tensor in model.graph.initializer)
        return _Read(model, None, external)
    data = Path(path).read_bytes()
    model = onnx.load_model_from_string(data)  # external data stays on disk
    external = any(uses_external_data(tensor) for tensor in model.graph.initializer)
    return _Read(model, None if external else data, external)


def read_without_weights(path: Path, size: int) -> Any:
    """``path`` as an ``onnx.ModelProto`` whose initializers keep everything but their
    ``raw_data``: what it costs in memory is its graph, not its weights. Fields onnx
    does not know are skipped too (no reader here uses them), and each kept field is
    parsed as it is read, so a file padded with junk costs no copy of the junk."""
    import onnx

    known_model, known_graph, known_tensor = (
        proto.DESCRIPTOR.fields_by_number for proto in (onnx.ModelProto, onnx.GraphProto, onnx.TensorProto)
    )
    model = onnx.ModelProto()
    walked = itertools.count(1)

    def counted(found: Iterator[tuple[int, int, int, int, int]]) -> Iterator[tuple[int, int, int, int, int]]:
        for field in found:  # across the whole file: a million small messages cost as much as one large one
            if next(walked) > MAX_FIELDS:
                raise ValueError(f"{Path(path).name} has over {MAX_FIELDS:,} fields in its graph; an ONNX graph has thousands")
            yield field

    def field_bytes(file: Any, offset: int, end: int) -> bytes:
        file.seek(offset)
        return file.read(end - offset)

    with open(path, "rb") as file:
        for number, _, offset, _, end in counted(fields(file, path, size)):
            if number not in known_model:
                continue
            if number != MODEL_GRAPH:
                model.MergeFromString(field_bytes(file, offset, end))
                continue
            for inner, _, inner_offset, _, inner_end in counted(fields(file, path, end)):
                if inner not in known_graph:
                    continue
                if inner != GRAPH_INITIALIZER:
                    model.graph.MergeFromString(field_bytes(file, inner_offset, inner_end))
                    continue
                tensor = bytearray()
                for field, _, field_offset, _, field_end in counted(fields(file, path, inner_end)):
                    if field in known_tensor and field != TENSOR_RAW_DATA:
                        tensor += field_bytes(file, field_offset, field_end)
                model.graph.initializer.add().MergeFromString(bytes(tensor))
                file.seek(inner_end)
            file.seek(end)
    return model


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field_key(number: int) -> bytes:
    """The tag of a length-delimited field (wire type 2)."""
    return varint(number << 3 | 2)


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


class Exposed(NamedTuple):
    model_bytes: bytes  # the model with each module scope's last value as an output
    names: list[str]  # those values, in graph order
    scopes: list[tuple[str, Any, str]]  # (module path, node, class) of each


def exposed_model(path: Path) -> Exposed | None:
    """A copy of the model with the output of the last node inside each module
    scope exposed as an output, in graph order, for any runtime to run (small
    files only: one with external weights is not copied; ``None`` then)."""
    import onnx

    read = _read(path)
    if read.data is None:
        return None
    model = onnx.ModelProto()
    model.CopyFrom(read.model)
    last: dict[str, tuple[int, int, Any, str]] = {}  # module path -> (node index, -depth, node, class)
    for index, node in enumerate(model.graph.node):  # ONNX graphs are stored in topological order
        for depth, (module, cls) in enumerate(module_scopes(node)):
            if node.output and node.output[0]:
                last[module] = (index, -depth, node, cls)
    # in graph order; where modules end on the same node (a Sequential and its last layer), the innermost first
    ordered = [(module, node, cls) for module, (index, _, node, cls) in sorted(last.items(), key=lambda item: item[1][:2])]
    outputs = {o.name for o in model.graph.output}
    for _, node, _ in ordered:
        if node.output[0] not in outputs:
            outputs.add(node.output[0])
            model.graph.output.append(onnx.ValueInfoProto(name=node.output[0]))
    return Exposed(model.SerializeToString(), [node.output[0] for _, node, _ in ordered], ordered)


def scope_values(exposed: Exposed, values: list[Any]) -> list[dict[str, Any]]:
    """What ``intermediates`` returns: one dict per module scope, its value from ``values`` (in ``exposed.names`` order)."""
    return [
        {"node": node.name, "op": node.op_type, "module": module, "class": cls, "value": value}
        for (module, node, cls), value in zip(exposed.scopes, values)
    ]
