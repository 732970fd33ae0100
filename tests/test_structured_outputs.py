"""Outputs picked out of what forward returns: by name from a dict holding more, and by path
into nested entries (a cache's tensors, tuple items), each its own verified ONNX output."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from torch import nn

from zoo import Architecture, Input, Output, hookimpl
from zoo.host.manager import load_zoo


class DictNet(nn.Module):
    """A forward returning a dict with more than is declared, and nested entries."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        h = self.a(x)
        return {"extra": h * 2, "y": h, "nested": (self.b(x), [torch.tanh(h)])}


X = (Input("x", ("batch", 4)),)


class Plugin:
    @hookimpl
    def register_architectures(self, register):
        register(Architecture("dict-paths", DictNet, X, (
            Output("y", task="regression"), Output("inner", path="nested.1.0"), Output("second", path="nested.0"))))
        register(Architecture("dict-pick", DictNet, X, (Output("y", task="regression"),)))
        register(Architecture("dict-wrong", DictNet, X, (Output("z"),)))
        register(Architecture("dict-bad-path", DictNet, X, (Output("y", path="nested.5"),)))


@pytest.fixture
def dict_zoo():
    return load_zoo(entry_points=False, extra=[("dicts", Plugin())])


def test_outputs_by_path_are_exported_in_declared_order_and_verified(run, tmp_path, dict_zoo):
    result = run("export", "dict-paths", "--json", zoo=dict_zoo)
    assert result.exit_code == 0, result.output
    model = onnx.load(tmp_path / "dict-paths.onnx")
    assert [o.name for o in model.graph.output] == ["y", "inner", "second"]
    cases = json.loads(result.stdout)["verification"]["cases"]
    assert len(cases) == 3 and all(set(case["outputs"]) == {"y", "inner", "second"} for case in cases)
    # the values are the entries the paths name, not others of the same shape
    import onnxruntime as ort

    from zoo.build.model import build_model

    module = build_model(dict_zoo.architecture("dict-paths")).module  # seed 0, as exported
    x = torch.randn(5, 4)
    y, inner, second = ort.InferenceSession(str(tmp_path / "dict-paths.onnx")).run(None, {"x": x.numpy()})
    with torch.no_grad():
        want = module(x)
    for got, expected in ((y, want["y"]), (inner, want["nested"][1][0]), (second, want["nested"][0])):
        assert torch.allclose(torch.from_numpy(got), expected, atol=1e-6)
    assert run("verify", "dict-paths.onnx", zoo=dict_zoo).exit_code == 0


def test_entries_no_output_takes_are_left_out_and_said_once(run, tmp_path, dict_zoo):
    result = run("export", "dict-pick", zoo=dict_zoo)
    assert result.exit_code == 0, result.output
    warning = "forward also returns extra, nested, which no declared output takes: they are left out of the export"
    assert result.output.count(warning) == 1
    assert [o.name for o in onnx.load(tmp_path / "dict-pick.onnx").graph.output] == ["y"]


@pytest.mark.parametrize(("name", "message"), [
    ("dict-wrong", "dict-wrong: output 'z': forward's result has no 'z' at 'z' (there is a dict with keys extra, y, nested); "
                   "declare the outputs it returns, or give Output(path=...)"),
    ("dict-bad-path", "dict-bad-path: output 'y': forward's result has no '5' at 'nested.5' (there is a tuple)"),
])
def test_an_output_forward_does_not_return_is_one_line(run, dict_zoo, name, message):
    result = run("check", name, zoo=dict_zoo)
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.output, result.output


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a.", "a-b", 3])
def test_a_malformed_path_is_refused_where_the_output_is_written(path):
    with pytest.raises(ValueError, match="must be dot-separated names and indices"):
        Output("y", path=path)
