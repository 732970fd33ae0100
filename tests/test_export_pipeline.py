"""Export pipeline behaviour that every format relies on."""

from __future__ import annotations

from pathlib import Path

import pytest

import zoo
from zoo.build.model import build_model
from zoo.errors import UsageError
from zoo.exporting.pipeline import export_model
from zoo.host.manager import load_zoo


def two_heads(in_features: int = 4):
    import torch
    from torch import nn

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.score = nn.Linear(in_features, 1)
            self.value = nn.Linear(in_features, 3)

        def forward(self, x):
            # "value" first: the opposite of the declared order below
            return {"value": self.value(x), "score": torch.sigmoid(self.score(x))}

    return TwoHeads()


class DictOutputs:
    @zoo.hookimpl
    def register_architectures(self, register):
        register(
            zoo.Architecture(
                name="dict-outputs",
                build=two_heads,
                inputs=(zoo.Input("x", ("batch", "in_features")),),
                outputs=(
                    zoo.Output("score", task="binary", head="sigmoid", shape=("batch", 1)),
                    zoo.Output("value", task="regression", shape=("batch", 3)),
                ),
            )
        )


def test_dict_outputs_in_another_order_export_under_their_own_names(tmp_path: Path) -> None:
    the_zoo = load_zoo(entry_points=False, extra=[("dict-outputs", DictOutputs())])
    built = build_model(the_zoo.architecture("dict-outputs"))
    result = export_model(built, the_zoo.exporter("onnx"), tmp_path / "m.onnx")
    assert result.ok, result.error
    # Shapes differ ((batch,1) vs (batch,3)), so a swapped label would fail as a shape mismatch.
    assert {name for case in result.verification.cases for name in case.outputs} == {"score", "value"}


def test_opset_is_refused_for_a_format_without_opsets(tmp_path: Path) -> None:
    def never(*args, **kwargs):
        raise AssertionError("the exporter must not be called")

    archive = zoo.Exporter(name="archive", suffix=".bin", export=never, load=never, read_metadata=never)
    the_zoo = load_zoo(entry_points=False)
    built = build_model(the_zoo.architecture("binary"))
    with pytest.raises(UsageError, match="archive format has no operator set"):
        export_model(built, archive, tmp_path / "m.bin", opset=18)
    assert list(tmp_path.iterdir()) == []
