"""What ``zoo export`` writes into a file's metadata, ``zoo verify`` builds again:
parameters of every type ``--param`` parses survive the JSON round trip, types it
cannot parse are refused at registration, and damaged metadata is called that."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from zoo import Architecture, Input, Output, hookimpl
from zoo.build.model import build_model
from zoo.errors import UsageError
from zoo.exporting.pipeline import export_model
from zoo.host.manager import load_zoo
from zoo.spec.architecture import Parameter
from zoo.spec.params import coerce_params, parse_params
from zoo.verification.artifact import verify_artifact


def stack(in_features: int = 4, sizes: list[int] = [4, 3], shape: tuple[int, int] | None = None) -> nn.Module:  # noqa: B006
    widths = [in_features, *sizes]
    return nn.Sequential(*(nn.Linear(a, b) for a, b in zip(widths, widths[1:])))


class Lists:
    @hookimpl
    def register_architectures(self, register):
        register(Architecture("listed", stack, (Input("x", ("batch", "in_features")),), (Output("y", task="regression"),)))


def test_a_list_parameter_exports_and_verifies(run, tmp_path: Path):
    the_zoo = load_zoo(entry_points=False, extra=[("lists", Lists())])
    assert not the_zoo.problems
    assert run("export", "listed", "-o", "default.onnx", zoo=the_zoo).exit_code == 0
    verified = run("verify", "default.onnx", zoo=the_zoo)
    assert verified.exit_code == 0, verified.output
    assert run("export", "listed", "-p", "sizes=5,2", "-p", "shape=1,2", "-o", "given.onnx", zoo=the_zoo).exit_code == 0
    result = verify_artifact(the_zoo, tmp_path / "given.onnx")
    assert result.ok and result.built.params == {"in_features": 4, "sizes": [5, 2], "shape": (1, 2)}


def test_json_lists_become_the_annotated_kind_item_by_item():
    params = {
        "sizes": Parameter("sizes", list[int], [4, 3]),
        "pair": Parameter("pair", tuple[int, float], (1, 2.0)),
        "maybe": Parameter("maybe", tuple[int, ...] | None, None),
    }
    assert coerce_params({"sizes": [5], "pair": [1, 2], "maybe": [3, 4]}, params, "a") == {"sizes": [5], "pair": (1, 2.0), "maybe": (3, 4)}
    assert parse_params(["sizes=1,2"], params, "a") == {"sizes": [1, 2]}
    with pytest.raises(UsageError, match="sizes=.*invalid"):
        coerce_params({"sizes": ["x"]}, params, "a")
    with pytest.raises(UsageError, match="expected 2 values"):
        coerce_params({"pair": [1]}, params, "a")


class Unparseable:
    @staticmethod
    def build(table: dict[str, int] = {}) -> nn.Module:  # noqa: B006
        return nn.Linear(2, 2)

    @hookimpl
    def register_architectures(self, register):
        register(Architecture("table", self.build, (Input("x", ("batch", 2)),), (Output("y", task="regression"),)))


def test_a_parameter_type_param_cannot_parse_is_refused_at_registration():
    the_zoo = load_zoo(entry_points=False, extra=[("unparseable", Unparseable())])
    assert "table" not in {a.name for a in the_zoo.architectures}
    assert any("build parameter 'table' has type dict" in p for p in the_zoo.problems), the_zoo.problems


@pytest.fixture
def exported(zoo, tmp_path: Path) -> Path:
    path = tmp_path / "m.onnx"
    assert export_model(build_model(zoo.architecture("binary")), zoo.exporter("onnx"), path).ok
    return path


def rewrite(path: Path, **meta: str) -> None:
    import onnx

    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key.removeprefix("zoo.") in meta:
            prop.value = meta[prop.key.removeprefix("zoo.")]
    onnx.save(model, str(path))


@pytest.mark.parametrize(("meta", "needle"), [({"params": "[1, 2]"}, "zoo.params"), ({"seed": "-5"}, "zoo.seed is -5")])
def test_damaged_metadata_is_called_so(zoo, exported, meta, needle):
    rewrite(exported, **meta)
    with pytest.raises(UsageError) as info:
        verify_artifact(zoo, exported)
    assert "m.onnx has damaged zoo metadata" in str(info.value) and needle in str(info.value)
    assert "--seed" not in str(info.value)
