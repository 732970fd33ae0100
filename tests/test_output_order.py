"""A model may return its outputs as a dict in any key order; the exported file
must still label each output with the right name."""

from __future__ import annotations

from pathlib import Path

import zoo
from zoo.exporting import export_model
from zoo.manager import load_zoo
from zoo.model import build_model


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
