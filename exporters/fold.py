"""Fold chains of affine ops in an ONNX graph into one (``zoo export --fold-linear``).

Consecutive affine maps with nothing in between compute one affine map:
``(x W1 + b1) W2 + b2 = x (W1 W2) + (b1 W2 + b2)``. An affine op here is a
``Gemm`` (``transA=0``), or a ``MatMul`` by a 2-D weight optionally followed by
an ``Add`` of a bias over the last axis, whose weight and bias are constant
initializers. Works on any graph the exporter produces (an ``onnx_ir.Model``),
not only the built-in architectures.

Never folded: across any other op (a nonlinearity, a reshape...), a weight or
bias that is a graph input or is used by more than one node, an intermediate
that has another consumer or is a graph output, mixed dtypes, and merges that
would cost more FLOPs than they save (a bottleneck ``K→m→N`` with small ``m``).
Products are computed in float64 and cast back to the weights' dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import onnx_ir as ir

FOLDABLE_DTYPES = ("FLOAT", "DOUBLE", "FLOAT16")
PRODUCT_BLOCK_BYTES = 1 << 26  # float64 slice of a weight converted at a time (64 MB)


@dataclass
class Affine:
    """One affine op found in the graph: ``output = input @ weight + bias``."""

    nodes: list[ir.Node]  # [Gemm] or [MatMul] or [MatMul, Add]
    input: ir.Value
    output: ir.Value
    weight: np.ndarray  # [K, N] in the stored dtype (a transposed view for Gemm transB=1)
    bias: np.ndarray | None  # float64 [N]
    dtype: ir.DataType
    initializers: list[ir.Value]

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def is_gemm(self) -> bool:
        return self.nodes[0].op_type == "Gemm"


@dataclass
class FoldStats:
    """What folding did: for the export summary and report (``job.stats`` holds ``to_dict()``)."""

    chains: list[str] = field(default_factory=list)  # "Gemm(8→4) → Gemm(4→3) ⇒ Gemm(8→3)"
    nodes_removed: int = 0
    flops_before: int = 0  # per sample, in the folded chains only
    flops_after: int = 0
    weights_removed: int = 0  # weight and bias elements

    def to_dict(self) -> dict[str, Any]:
        return {
            "chains": list(self.chains),
            "nodes_removed": self.nodes_removed,
            "flops_per_sample_before": self.flops_before,
            "flops_per_sample_after": self.flops_after,
            "weight_elements_removed": self.weights_removed,
            "chains_folded": len(self.chains),
            "flops_per_sample_removed": self.flops_before - self.flops_after,
        }


def fold_linear(model: ir.Model) -> FoldStats:
    """Fold every foldable chain in ``model``'s main graph, in place."""
    graph = model.graph
    stats = FoldStats()
    affines = find_affines(graph)
    by_output = {id(a.output): a for a in affines}
    previous: dict[int, Affine] = {}
    for op in affines:
        before = by_output.get(id(op.input))
        if before is not None and _chains(before, op):
            previous[id(op)] = before
    followers = {id(before) for before in previous.values()}
    # Walk each chain from its last op back to its first.
    for last in [a for a in affines if id(a) not in followers]:
        chain = [last]
        while id(chain[-1]) in previous:
            chain.append(previous[id(chain[-1])])
        chain.reverse()
        for segment in _cheaper_segments(chain):
            if len(segment) > 1:
                _replace(graph, segment, stats)
    return stats


def find_affines(graph: ir.Graph) -> list[Affine]:
    """Every affine op with constant, unshared weights, in graph order."""
    found = []
    for node in graph:
        if node.op_type == "Gemm" and node.domain == "":
            op = _gemm(node)
        elif node.op_type == "MatMul" and node.domain == "":
            op = _matmul(node, graph)
        else:
            continue
        if op is not None:
            found.append(op)
    return found


def _constant(value: ir.Value | None) -> np.ndarray | None:
    """The array of an initializer that nothing else uses and no caller can override."""
    if value is None or value.const_value is None or not value.is_initializer() or value.is_graph_input():
        return None
    if len(value.uses()) != 1:  # a shared weight: folding would change its other users
        return None
    return value.const_value.numpy()


def _dtype_ok(value: ir.Value) -> bool:
    return value.dtype is not None and value.dtype.name in FOLDABLE_DTYPES


def _bias_vector(array: np.ndarray, out_features: int, max_rank: int | None) -> np.ndarray | None:
    """A bias that broadcasts over the last axis only, as a float64 [N] vector."""
    import numpy as np

    if array.ndim > 1 and (max_rank is None or array.ndim > max_rank or any(d != 1 for d in array.shape[:-1])):
        return None  # would broadcast the output to a higher rank, or vary along other axes
    if array.size not in (1, out_features):
        return None
    return np.broadcast_to(array.reshape(-1).astype(np.float64), (out_features,))


def _gemm(node: ir.Node) -> Affine | None:
    import numpy as np

    attrs = node.attributes
    if attrs.get_int("transA", 0) != 0:
        return None  # the activation would be the transposed operand
    a, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    weight = _constant(b)
    if a is None or weight is None or weight.ndim != 2 or not _dtype_ok(b):
        return None
    alpha, beta = attrs.get_float("alpha", 1.0), attrs.get_float("beta", 1.0)
    weight64 = weight.T if attrs.get_int("transB", 0) else weight
    bias = None
    initializers = [b]
    if c is not None:
        raw = _constant(c)
        if raw is None or c.dtype != b.dtype:
            return None
        bias = _bias_vector(raw, weight64.shape[1], max_rank=2)
        if bias is None:
            return None
        bias = beta * bias
        initializers.append(c)
    if alpha != 1.0:
        weight64 = alpha * weight64.astype(np.float64)
    return Affine([node], a, node.outputs[0], weight64, bias, b.dtype, initializers)


def _matmul(node: ir.Node, graph: ir.Graph) -> Affine | None:
    x, w = node.inputs[0], node.inputs[1]
    weight = _constant(w)
    if x is None or weight is None or weight.ndim != 2 or not _dtype_ok(w):
        return None
    out = node.outputs[0]
    op = Affine([node], x, out, weight, None, w.dtype, [w])
    uses = out.uses()
    if len(uses) != 1 or out.is_graph_output():
        return op
    add = uses[0].node
    if add.op_type != "Add" or add.domain != "" or len(add.inputs) != 2:
        return op
    other = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
    raw = _constant(other)
    if raw is None or other.dtype != w.dtype:
        return op
    rank = len(x.shape) if x.shape is not None else None
    bias = _bias_vector(raw, weight.shape[1], max_rank=rank)
    if bias is None:
        return op
    return Affine([node, add], x, add.outputs[0], weight, bias, w.dtype, [w, other])


def _chains(before: Affine, after: Affine) -> bool:
    """Whether ``after`` reads only ``before``'s output, and nothing else does."""
    link = before.output
    return (
        len(link.uses()) == 1
        and not link.is_graph_output()
        and before.dtype == after.dtype
        and before.out_features == after.in_features
    )


def _cost(in_features: int, out_features: int, bias: bool) -> int:
    """FLOPs per row: a multiply and an add per weight, plus the bias."""
    return 2 * in_features * out_features + (out_features if bias else 0)


def _cheaper_segments(chain: list[Affine]) -> list[list[Affine]]:
    """Split a chain greedily so that each folded segment costs no more than its parts."""
    segments = [[chain[0]]]
    for op in chain[1:]:
        segment = segments[-1]
        has_bias = any(o.bias is not None for o in segment + [op])
        merged = _cost(segment[0].in_features, op.out_features, has_bias)
        apart = sum(_cost(o.in_features, o.out_features, o.bias is not None) for o in segment + [op])
        if merged <= apart:
            segment.append(op)
        else:
            segments.append([op])
    return segments


def _product(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left @ right`` in float64, converting ``right`` a block of rows at a time so
    a 2 GB float32 weight never has a 4 GB float64 twin."""
    import numpy as np

    rows = max(1, PRODUCT_BLOCK_BYTES // (8 * max(right.shape[1], left.shape[0])))
    result = np.zeros((left.shape[0], right.shape[1]), dtype=np.float64)
    for start in range(0, right.shape[0], rows):
        result += left[:, start : start + rows] @ right[start : start + rows].astype(np.float64)
    return result


def _rows_per_sample(value: ir.Value) -> int:
    """Rows an affine op sees per sample: the static dims between batch and features."""
    shape = value.shape
    if shape is None or len(shape) < 3:
        return 1
    rows = 1
    for dim in list(shape)[1:-1]:
        rows *= dim if isinstance(dim, int) else 1  # a symbolic dim counts once
    return rows


def _replace(graph: ir.Graph, segment: list[Affine], stats: FoldStats) -> None:
    import onnx_ir as ir

    first, last = segment[0], segment[-1]
    weight = first.weight  # _product converts it to float64 a slice at a time
    bias = first.bias
    for op in segment[1:]:
        weight = _product(weight, op.weight)
        # The bias goes through the next weight too: (x W1 + b1) W2 + b2.
        if bias is not None:
            bias = _product(bias[None, :], op.weight)[0]
        if op.bias is not None:
            bias = op.bias if bias is None else bias + op.bias
    np_dtype = ir.DataType(first.dtype).numpy()
    name = _unique_name(graph, f"folded_{len(stats.chains)}")
    weight_value = ir.Value(name=f"{name}.weight", const_value=ir.tensor(weight.astype(np_dtype), name=f"{name}.weight"))
    weight_value.type = ir.TensorType(first.dtype)
    weight_value.shape = ir.Shape(weight.shape)
    graph.register_initializer(weight_value)
    inputs = [first.input, weight_value]
    bias_value = None
    if bias is not None:
        bias_value = ir.Value(name=f"{name}.bias", const_value=ir.tensor(bias.astype(np_dtype), name=f"{name}.bias"))
        bias_value.type = ir.TensorType(first.dtype)
        bias_value.shape = ir.Shape(bias.shape)
        graph.register_initializer(bias_value)
    if first.is_gemm:  # its input is 2-D, so one Gemm does it all
        new_nodes = [ir.node("Gemm", [*inputs, *([bias_value] if bias_value else [])], name=name)]
    else:
        new_nodes = [ir.node("MatMul", inputs, name=f"{name}_matmul")]
        new_nodes[0].outputs[0].type = ir.TensorType(first.dtype)
        new_nodes[0].outputs[0].shape = last.output.shape
        if bias_value is not None:
            new_nodes.append(ir.node("Add", [new_nodes[0].outputs[0], bias_value], name=f"{name}_add"))
    old_nodes = [node for op in segment for node in op.nodes]
    ir.convenience.replace_nodes_and_values(
        graph, last.nodes[-1], old_nodes, new_nodes, [last.output], [new_nodes[-1].outputs[0]]
    )
    for op in segment:
        for init in op.initializers:
            if not init.uses() and init.name in graph.initializers:
                del graph.initializers[init.name]
    rows = _rows_per_sample(first.input)
    flops_before = rows * sum(_cost(o.in_features, o.out_features, o.bias is not None) for o in segment)
    flops_after = rows * _cost(weight.shape[0], weight.shape[1], bias is not None)
    stats.flops_before += flops_before
    stats.flops_after += flops_after
    stats.nodes_removed += len(old_nodes) - len(new_nodes)
    stats.weights_removed += sum(o.weight.size + (0 if o.bias is None else o.bias.size) for o in segment) - (
        weight.size + (0 if bias is None else bias.size)
    )
    parts = " → ".join(f"{o.nodes[0].op_type}({o.in_features}→{o.out_features})" for o in segment)
    stats.chains.append(f"{parts} ⇒ {new_nodes[0].op_type}({weight.shape[0]}→{weight.shape[1]})")


def _unique_name(graph: ir.Graph, base: str) -> str:
    taken = set(graph.initializers) | {v.name for node in graph for v in node.outputs}
    name, index = base, 0
    while f"{name}.weight" in taken or f"{name}.bias" in taken or name in taken:
        index += 1
        name = f"{base}_{index}"
    return name
