"""The exporter's ATen → ONNX table is built once per process, and each export gets its own copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from click.testing import CliRunner

from zoo.cli.commands import cli


def test_each_export_gets_a_copy_of_one_table_and_custom_ops_stay_in_theirs(tmp_path: Path) -> None:
    from torch.onnx._internal.exporter._registration import ONNXRegistry

    assert CliRunner().invoke(cli, ["export", "binary", "-o", str(tmp_path / "b.onnx")]).exit_code == 0  # installs the reuse
    first, second = ONNXRegistry.from_torchlib(opset_version=20), ONNXRegistry.from_torchlib(opset_version=20)
    assert first is not second and first.functions.keys() == second.functions.keys()
    target = "aten::addmm"
    assert first.functions[target] is not second.functions[target]
    assert first.functions[target][0] is second.functions[target][0]  # the same entries: built once, not parsed again

    first.register_op(torch.ops.aten.relu.default, lambda x: x)  # as torch.onnx.export(custom_translation_table=...) does
    assert len(first.functions["aten::relu"]) == len(second.functions["aten::relu"]) + 1
    third = ONNXRegistry.from_torchlib(opset_version=20)
    assert len(third.functions["aten::relu"]) == len(second.functions["aten::relu"])  # the custom op stayed in its copy
    assert ONNXRegistry.from_torchlib(opset_version=18).opset_version == 18  # one table per opset


def test_a_model_exported_with_the_kept_table_is_the_file_a_fresh_process_writes(tmp_path: Path) -> None:
    args = ["export", "multiclass", "-p", "activation=relu"]
    fresh = subprocess.run([sys.executable, "-m", "zoo", *args, "-o", "fresh.onnx"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    runner = CliRunner()
    for name in ("warm.onnx", "again.onnx"):  # the second export in this process uses the kept table
        assert runner.invoke(cli, [*args, "-o", str(tmp_path / name)]).exit_code == 0
    assert (tmp_path / "fresh.onnx").read_bytes() == (tmp_path / "warm.onnx").read_bytes() == (tmp_path / "again.onnx").read_bytes()
