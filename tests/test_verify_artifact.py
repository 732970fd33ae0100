"""zoo verify: what it refuses, what it checks, and which files it reports."""

from __future__ import annotations

import torch
from click.testing import CliRunner

from zoo.cli import cli
from zoo.manager import load_zoo
from zoo.model import build_model


def invoke(*args, zoo=None):
    return CliRunner().invoke(cli, [str(a) for a in args], obj=zoo, catch_exceptions=False)


# -- finding 19: --weights for a file exported without weights ---------------------------


def test_weights_for_a_file_exported_without_weights_is_a_usage_error(tmp_path):
    out = tmp_path / "seeded.onnx"
    assert invoke("export", "binary", "-o", out).exit_code == 0
    other = build_model(load_zoo(entry_points=False).architecture("binary"), seed=5).module.state_dict()
    torch.save(other, tmp_path / "other.pt")
    result = invoke("verify", out, "--weights", tmp_path / "other.pt")
    assert result.exit_code == 2
    assert "seeded.onnx was exported without weights" in result.stderr and "leave --weights out" in result.stderr
    assert "differs from PyTorch" not in result.output
    assert invoke("verify", out).exit_code == 0
