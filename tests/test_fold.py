"""--fold-linear: chains of affine ops fold into one, and nothing else does.

Every graph here is a real export (torch.onnx.export or onnx.helper) run by
onnxruntime before and after folding.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from zoo.exporters.fold import fold_linear

from zoo import Architecture, Input, Output
from zoo import hookimpl as zoo_hookimpl
from zoo.build.model import build_model
from zoo.exporting.pipeline import export_model
from zoo.host.manager import load_zoo
from zoo.host.plugin_calls import quiet_exporter
from zoo.spec.exporter import Exporter


def export_ir(module: nn.Module, *sample: torch.Tensor, dynamic_batch: bool = True) -> ir.Model:
    shapes = tuple({0: torch.export.Dim("batch")} for _ in sample) if dynamic_batch else None
    with quiet_exporter():
        program = torch.onnx.export(module.eval(), sample, dynamo=True, dynamic_shapes=shapes, verbose=False)
    return program.model


def ops(model: ir.Model) -> Counter[str]:
    return Counter(node.op_type for node in model.graph)


def run_ort(model: ir.Model, tmp_path: Path, *inputs: torch.Tensor) -> list[np.ndarray]:
    path = tmp_path / "model.onnx"
    ir.save(model, path)
    onnx.checker.check_model(str(path), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
    return session.run(None, feed)


def torch_outputs(module: nn.Module, *inputs: torch.Tensor) -> list[np.ndarray]:
    with torch.inference_mode():
        out = module(*inputs)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def assert_same(module: nn.Module, model: ir.Model, tmp_path: Path, *inputs: torch.Tensor) -> None:
    for got, want in zip(run_ort(model, tmp_path, *inputs), torch_outputs(module, *inputs), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "flops_before", "flops_after"),
    [
        # binary: 2·8·4+4 + 2·4·3+3 + 2·3·1+1 = 102  →  2·8·1+1 = 17
        ("binary-sigmoid", 102, 17),
        # multiclass: 68 + 27 + (2·3·4+4) = 123  →  2·8·4+4 = 68
        ("multiclass-softmax", 123, 68),
        # stack: 2·10·18+18 + 2·18·20+20 + 2·20·5+5 = 378+740+205  →  2·10·5+5 = 105
        ("three-layer-stack", 1323, 105),
    ],
)
def test_seed_architectures_fold_to_one_gemm_and_verify(zoo, tmp_path: Path, name, flops_before, flops_after) -> None:
    built = build_model(zoo.architecture(name))
    result = export_model(built, zoo.exporter("onnx"), tmp_path / "m.onnx", options={"fold_linear": True})
    assert result.ok, result.error
    fold = result.export_stats["fold_linear"]
    assert fold["chains_folded"] == 1
    assert fold["nodes_removed"] == 2
    assert (fold["flops_per_sample_before"], fold["flops_per_sample_after"]) == (flops_before, flops_after)
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert [n.op_type for n in model.graph.node if n.op_type in ("Gemm", "MatMul")] == ["Gemm"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["zoo.options"]) == {"fold_linear": True}
    assert result.to_dict()["export_stats"]["fold_linear"]["flops_per_sample_removed"] == flops_before - flops_after


def test_relu_between_layers_is_not_folded(zoo, tmp_path: Path) -> None:
    built = build_model(zoo.architecture("stack"), {"activation": "relu"})
    result = export_model(built, zoo.exporter("onnx"), tmp_path / "m.onnx", options={"fold_linear": True})
    assert result.ok, result.error
    assert result.export_stats["fold_linear"]["chains_folded"] == 0
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert Counter(n.op_type for n in model.graph.node)["Gemm"] == 3


def test_only_the_linear_runs_around_a_nonlinearity_fold(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 4), nn.Linear(4, 2))
    model = export_ir(module, torch.randn(3, 6))
    stats = fold_linear(model)
    assert len(stats.chains) == 2
    assert ops(model)["Gemm"] == 2 and ops(model)["Tanh"] == 1
    assert_same(module, model, tmp_path, torch.randn(7, 6))


class SharedWeight(nn.Module):
    """The same Linear applied twice: its weight is one initializer with two users."""

    def __init__(self) -> None:
        super().__init__()
        self.square = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.square(self.square(x)))


def test_shared_weights_are_not_folded(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = SharedWeight()
    model = export_ir(module, torch.randn(3, 4))
    shared = [v for v in model.graph.initializers.values() if len(v.uses()) > 1]
    assert shared, "the export should keep one weight for both uses"
    stats = fold_linear(model)
    assert stats.chains == []  # head's input comes from a Gemm with a shared weight
    assert ops(model)["Gemm"] == 3
    assert_same(module, model, tmp_path, torch.randn(5, 4))


class Sequence3d(nn.Module):
    """Linear layers on a batch×seq×features input export as MatMul + Add."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, 6), nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.b(self.a(x)))


def test_matmul_add_chain_folds(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = Sequence3d()
    model = export_ir(module, torch.randn(2, 7, 8))
    assert ops(model)["MatMul"] == 3 and ops(model)["Add"] == 3
    stats = fold_linear(model)
    assert stats.chains == ["MatMul(8→6) → MatMul(6→5) → MatMul(5→3) ⇒ MatMul(8→3)"]
    assert stats.nodes_removed == 4
    assert ops(model) == Counter({"MatMul": 1, "Add": 1})
    # Per sample: 7 rows of (2·8·6+6 + 2·6·5+5 + 2·5·3+3) = 7·(102+65+33) before, 7·(2·8·3+3) after.
    assert (stats.flops_before, stats.flops_after) == (7 * 200, 7 * 51)
    assert_same(module, model, tmp_path, torch.randn(4, 7, 8))


class OutputInTheMiddle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.a(x)
        return hidden, self.b(hidden)


class TwoConsumers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 5), nn.Linear(5, 3), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.a(x)
        return self.b(hidden) * self.c(hidden)


class Bottleneck(nn.Module):
    """64→2→64: folding would turn 2·(128+128) multiply-adds into 64·64."""

    def __init__(self) -> None:
        super().__init__()
        self.down, self.up = nn.Linear(64, 2), nn.Linear(2, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


@pytest.mark.parametrize("module_type", [OutputInTheMiddle, TwoConsumers, Bottleneck])
def test_intermediates_that_are_used_elsewhere_or_cheap_are_kept(tmp_path: Path, module_type) -> None:
    torch.manual_seed(0)
    module = module_type()
    in_features = 64 if module_type is Bottleneck else 6
    model = export_ir(module, torch.randn(3, in_features))
    before = ops(model)
    assert fold_linear(model).chains == []
    assert ops(model) == before
    assert_same(module, model, tmp_path, torch.randn(4, in_features))


class InputWeight(nn.Module):
    """x @ w with w a graph input: not a constant, so not foldable."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.head(x @ w)


def test_non_constant_weights_are_not_folded(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = InputWeight()
    model = export_ir(module, torch.randn(3, 5), torch.randn(5, 4), dynamic_batch=False)
    before = ops(model)
    assert fold_linear(model).chains == []
    assert ops(model) == before
    assert_same(module, model, tmp_path, torch.randn(3, 5), torch.randn(5, 4))


def test_gemm_alpha_beta_and_untransposed_weights_fold(tmp_path: Path) -> None:
    """Gemm as other exporters write it: transB=0, alpha and beta not 1, a [1, N] bias."""
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((1, 4)).astype(np.float32)
    w2, b2 = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], alpha=0.5, beta=2.0),
            helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], transB=1, beta=-1.0),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    x = rng.standard_normal((5, 6)).astype(np.float32)
    expected = (0.5 * x @ w1 + 2.0 * b1) @ w2.T - b2
    model = ir.from_proto(proto)
    stats = fold_linear(model)
    assert stats.chains == ["Gemm(6→4) → Gemm(4→3) ⇒ Gemm(6→3)"]
    (got,) = run_ort(model, tmp_path, torch.from_numpy(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def must_not_export(job):
    raise AssertionError("refused options must stop the export before it starts")


def test_an_exporter_without_the_option_is_refused_before_any_work(zoo, tmp_path: Path) -> None:
    from zoo.exporters import onnx as onnx_exporter

    from zoo.errors import UsageError

    plain = Exporter("plain", ".onnx", must_not_export, onnx_exporter.load, onnx_exporter.read_metadata, plugin="test")
    built = build_model(zoo.architecture("binary"))
    with pytest.raises(UsageError, match="the plain exporter \\(plugin 'test'\\) does not support --fold-linear"):
        export_model(built, plain, tmp_path / "m.onnx", options={"fold_linear": True})
    assert list(tmp_path.iterdir()) == []


def test_an_exporter_that_declares_the_option_but_ignores_it_fails(zoo, tmp_path: Path) -> None:
    """The safety net: a file must not say (in zoo.options) it was folded when it was not."""
    from dataclasses import replace

    from zoo.exporters import onnx as onnx_exporter

    from zoo.errors import PluginError

    def export_without_options(job):
        return onnx_exporter.export(replace(job, options={}, stats={}))  # a real export; the option is dropped

    liar = Exporter(
        "liar", ".onnx", export_without_options, onnx_exporter.load, onnx_exporter.read_metadata,
        default_opset=onnx_exporter.DEFAULT_OPSET, options=("fold_linear",), plugin="test",
    )
    built = build_model(zoo.architecture("binary"))
    with pytest.raises(PluginError, match="declares fold_linear but did not apply it"):
        export_model(built, liar, tmp_path / "m.onnx", options={"fold_linear": True})
    assert list(tmp_path.iterdir()) == []


class NoFoldFormat:
    """A format without --fold-linear, and an architecture that counts its builds."""

    builds = 0

    @staticmethod
    def counted(width: int = 4):
        NoFoldFormat.builds += 1
        return nn.Linear(width, 2)

    @zoo_hookimpl
    def register_architectures(self, register):
        register(Architecture("counted", self.counted, (Input("x", ("batch", "width")),), (Output("y", task="regression"),)))

    @zoo_hookimpl
    def register_exporters(self, register):
        from zoo.exporters import onnx as onnx_exporter

        register(Exporter("nofold", ".nofold", must_not_export, onnx_exporter.load, onnx_exporter.read_metadata))


def test_cli_refuses_an_unsupported_option_before_building_the_model(run) -> None:
    the_zoo = load_zoo(entry_points=False, extra=[("nofold", NoFoldFormat())])
    NoFoldFormat.builds = 0
    result = run("export", "counted", "--format", "nofold", "--fold-linear", zoo=the_zoo)
    assert result.exit_code == 2
    assert result.output.splitlines() == ["zoo: error: the nofold exporter (plugin 'nofold') does not support --fold-linear"]
    assert NoFoldFormat.builds == 0


def test_cli_summary_and_report_name_what_folding_removed(run, tmp_path: Path) -> None:
    result = run("export", "binary", "--fold-linear", "--report", "r.json")
    assert result.exit_code == 0, result.output
    assert "fold      1 chain(s): removed 2 node(s) and 85 FLOPs per sample (102 → 17)" in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["export_stats"]["fold_linear"]["nodes_removed"] == 2
