"""What ``zoo export`` and ``zoo verify`` read and write: refusals before any
work, reports that never overwrite what they describe, and records that say
what is on disk."""

from __future__ import annotations

import pytest
from torch import nn

from zoo import Architecture, Input, Output, hookimpl
from zoo.manager import Zoo, load_zoo


class Counted:
    """An architecture that counts its builds."""

    builds = 0

    @staticmethod
    def build(width: int = 4):
        Counted.builds += 1
        return nn.Linear(width, 2)

    @hookimpl
    def register_architectures(self, register):
        register(Architecture("counted", self.build, (Input("x", ("batch", "width")),), (Output("y", task="regression"),)))


@pytest.fixture
def counted_zoo() -> Zoo:
    Counted.builds = 0
    return load_zoo(entry_points=False, extra=[("counted", Counted())])


def test_an_existing_output_is_refused_before_the_model_is_built(run, tmp_path, counted_zoo):
    (tmp_path / "existing.onnx").write_bytes(b"keep me")
    result = run("export", "counted", "-o", "existing.onnx", zoo=counted_zoo)
    assert result.exit_code == 2
    assert "already exists; pass --force" in result.output
    assert Counted.builds == 0
    assert (tmp_path / "existing.onnx").read_bytes() == b"keep me"
