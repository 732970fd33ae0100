"""What the core hands every format: the job's torch dynamic shapes, and the
checks of a request that run before any model is built."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zoo.build.model import build_model
from zoo.errors import ParameterError
from zoo.exporting.pipeline import export_model
from zoo.exporting.plan import resolve_format
from zoo.spec.architecture import Architecture, Dim, Input, Output
from zoo.spec.job import ExportJob


def job(dynamic: dict[str, dict[int, Dim]]) -> ExportJob:
    arch = Architecture("pair", lambda: None, (Input("a", ("batch", 3)), Input("b", ("batch", "seq"))), (Output("y"),))
    sample = {"a": torch.zeros(2, 3), "b": torch.zeros(2, 8)}
    return ExportJob(arch, None, sample, dynamic, ["y"], Path("m"), None, {}, "cpu")


def test_torch_dynamic_shapes_share_one_dim_per_name_and_keep_ranges() -> None:
    seq = Dim("seq", min=2, max=64)
    a, b = job({"a": {0: Dim("batch")}, "b": {0: Dim("batch"), 1: seq}}).torch_dynamic_shapes()
    assert a[0] is b[0]  # "batch" is one symbol: torch.export then knows the two inputs agree
    assert (b[1].__name__, b[1].min, b[1].max) == ("seq", 2, 64)


def test_torch_dynamic_shapes_are_none_when_every_shape_is_static() -> None:
    assert job({"a": {}, "b": {}}).torch_dynamic_shapes() is None


def test_torch_dynamic_shapes_export_with_torch() -> None:
    class Add(torch.nn.Module):
        def forward(self, a, b):
            return a.sum(1) + b.sum(1)

    shapes = job({"a": {0: Dim("batch")}, "b": {0: Dim("batch"), 1: Dim("seq")}}).torch_dynamic_shapes()
    program = torch.export.export(Add(), (torch.zeros(2, 3), torch.zeros(2, 8)), dynamic_shapes=shapes)
    assert program.module()(torch.ones(5, 3), torch.ones(5, 11)).shape == (5,)


def test_resolve_format_resolves_the_default_opset(zoo) -> None:
    assert resolve_format(zoo.exporter("onnx")) == 20


@pytest.mark.parametrize(("settings", "needle"), [({"opset": 17}, "--opset 17"), ({"rtol": -1.0}, "--rtol -1.0")])
def test_export_model_refuses_a_bad_request_before_writing(zoo, tmp_path: Path, settings, needle) -> None:
    built = build_model(zoo.architecture("binary"))
    with pytest.raises(ParameterError, match=needle):
        export_model(built, zoo.exporter("onnx"), tmp_path / "m.onnx", **settings)
    assert list(tmp_path.iterdir()) == []
