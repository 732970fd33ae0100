"""zoo verify: what it refuses, what it checks, and which files it reports."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from zoo.build.model import build_model
from zoo.cli.commands import cli
from zoo.host.manager import load_zoo


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


# -- finding 20: verify runs the exporter's check and lists side files -------------------


def test_verify_runs_the_onnx_checker(tmp_path):
    import numpy as np
    import onnx
    import onnxruntime as ort

    out = tmp_path / "m.onnx"
    assert invoke("export", "binary", "-o", out).exit_code == 0
    model = onnx.load(out)
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 7  # declared [batch, 7], computes [batch, 1]
    onnx.save(model, out)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.zeros((2, 8), np.float32)})[0].shape == (2, 1)  # onnxruntime alone lets it pass
    result = invoke("verify", out)
    assert result.exit_code == 1
    assert "m.onnx fails the onnx check" in result.stderr and "differ in dimension 1" in result.stderr


def test_verify_lists_the_external_data_file(tmp_path, monkeypatch):
    from zoo.exporters import onnx as onnx_exporter

    monkeypatch.setattr(onnx_exporter, "EXTERNAL_DATA_BYTES", 0)  # every model counts as large
    out = tmp_path / "big.onnx"
    assert invoke("export", "stack", "-o", out).exit_code == 0
    report = tmp_path / "r.json"
    result = invoke("verify", out, "--report", report)
    assert result.exit_code == 0, result.output
    files = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("  file")]
    assert [f.rsplit("/", 1)[-1] for f in files] == ["big.onnx", "big.onnx.data"]
    record = json.loads(report.read_text())
    assert [f["path"].rsplit("/", 1)[-1] for f in record["files"]] == ["big.onnx", "big.onnx.data"]
    assert record["files"][1]["bytes"] == (tmp_path / "big.onnx.data").stat().st_size


def test_verify_without_the_data_file_fails_the_check(tmp_path, monkeypatch):
    from zoo.exporters import onnx as onnx_exporter

    monkeypatch.setattr(onnx_exporter, "EXTERNAL_DATA_BYTES", 0)
    out = tmp_path / "big.onnx"
    assert invoke("export", "stack", "-o", out).exit_code == 0
    (tmp_path / "big.onnx.data").unlink()
    result = invoke("verify", out)
    assert result.exit_code == 1 and "big.onnx fails the onnx check" in result.stderr


# -- finding 21: an existing side file is refused like the main file ---------------------


def test_existing_side_file_is_refused_without_force(tmp_path, monkeypatch):
    from zoo.exporters import onnx as onnx_exporter

    monkeypatch.setattr(onnx_exporter, "EXTERNAL_DATA_BYTES", 0)  # the export writes m.onnx.data
    data = tmp_path / "m.onnx.data"
    data.write_bytes(b"someone else's weights")
    result = invoke("export", "stack", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 2
    assert "m.onnx.data" in result.stderr and "already exists; pass --force" in result.stderr
    assert data.read_bytes() == b"someone else's weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx.data"]  # no m.onnx, no staging folder
    forced = invoke("export", "stack", "-o", tmp_path / "m.onnx", "--force")
    assert forced.exit_code == 0, forced.output
    assert data.read_bytes() != b"someone else's weights"
    assert invoke("verify", tmp_path / "m.onnx").exit_code == 0


def test_place_checks_side_files_before_moving_anything(tmp_path):
    from zoo.errors import OutputPathError
    from zoo.files.staging import place

    staged = tmp_path / "staged"
    staged.mkdir()
    main, side = staged / "m.onnx", staged / "m.onnx.data"
    main.write_text("graph")
    side.write_text("new weights")
    (tmp_path / "m.onnx.data").write_text("old weights")
    with pytest.raises(OutputPathError, match="already exists"):
        place([main, side], main, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx.data").read_text() == "old weights" and not (tmp_path / "m.onnx").exists()
    assert main.exists() and side.exists()
    assert place([main, side], main, tmp_path / "m.onnx", force=True) == [tmp_path / "m.onnx", tmp_path / "m.onnx.data"]
    assert (tmp_path / "m.onnx.data").read_text() == "new weights"
