"""What ``zoo export`` and ``zoo verify`` read and write: refusals before any
work, reports that never overwrite what they describe, and records that say
what is on disk."""

from __future__ import annotations

import json

import pytest
from torch import nn

from zoo import Architecture, Input, Output, hookimpl
from zoo.host.manager import Zoo, load_zoo


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


# -- --report never replaces what the command reads or writes --------------------


def test_report_over_the_output_is_refused_before_any_work(run, tmp_path, counted_zoo):
    for report in ("same.onnx", "./same.onnx", str(tmp_path / "same.onnx")):
        result = run("export", "counted", "-o", "same.onnx", "--report", report, zoo=counted_zoo)
        assert result.exit_code == 2, result.output
        assert "would overwrite" in result.output and "a file this command reads or writes" in result.output
    assert Counted.builds == 0
    assert list(tmp_path.iterdir()) == []


def test_report_over_the_default_output_is_refused(run, tmp_path):
    result = run("export", "binary", "--report", "binary-sigmoid.onnx")
    assert result.exit_code == 2, result.output
    assert list(tmp_path.iterdir()) == []


def test_report_over_the_weights_is_refused(run, tmp_path, counted_zoo):
    import torch

    torch.save(nn.Linear(4, 2).state_dict(), tmp_path / "w.pt")
    before = (tmp_path / "w.pt").read_bytes()
    result = run("export", "counted", "--weights", "w.pt", "--report", "w.pt", zoo=counted_zoo)
    assert result.exit_code == 2, result.output
    assert (tmp_path / "w.pt").read_bytes() == before
    assert Counted.builds == 0


def test_report_over_a_file_of_export_all_is_refused(run, tmp_path):
    (tmp_path / "out").mkdir()
    result = run("export", "--all", "bin*", "-o", "out", "--report", "out/binary-sigmoid.onnx")
    assert result.exit_code == 2, result.output
    assert list((tmp_path / "out").iterdir()) == []


def test_report_over_the_verified_file_is_refused(run, tmp_path):
    assert run("export", "binary", "-o", "v.onnx").exit_code == 0
    before = (tmp_path / "v.onnx").read_bytes()
    result = run("verify", "v.onnx", "--report", "v.onnx")
    assert result.exit_code == 2, result.output
    assert (tmp_path / "v.onnx").read_bytes() == before


@pytest.fixture
def external_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX exports keep their weights in NAME.onnx.data, as past 2 GB (tensors
    under 1 kB stay inline: use stack, not binary)."""
    from zoo.exporters import onnx as onnx_format

    monkeypatch.setattr(onnx_format, "EXTERNAL_DATA_BYTES", 0)


def test_report_over_a_side_file_is_refused_and_the_side_file_kept(run, tmp_path, external_data):
    result = run("export", "stack", "-o", "m.onnx", "--report", "m.onnx.data")
    assert result.exit_code == 2, result.output
    assert "m.onnx.data" in result.output
    data = (tmp_path / "m.onnx.data").read_bytes()
    verified = run("verify", "m.onnx", "--report", "m.onnx.data")
    assert verified.exit_code == 2, verified.output
    assert (tmp_path / "m.onnx.data").read_bytes() == data
    assert run("verify", "m.onnx").exit_code == 0


# -- a failed export's record describes no file ----------------------------------


def test_a_failed_verification_reports_no_size_or_hash_of_an_older_file(run, tmp_path):
    (tmp_path / "old.onnx").write_bytes(b"an older file")
    result = run("export", "stack", "-o", "old.onnx", "--force", "--rtol", "0", "--atol", "0", "--report", "r.json")
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "failed" and report["error"].startswith("verification failed")
    assert report["files"] == [{"path": "old.onnx", "written": False}]
    assert (tmp_path / "old.onnx").read_bytes() == b"an older file"


# -- --force leaves no orphans ---------------------------------------------------


def test_force_removes_the_side_file_of_the_replaced_export(run, tmp_path, monkeypatch):
    from zoo.exporters import onnx as onnx_format

    inline = onnx_format.EXTERNAL_DATA_BYTES
    monkeypatch.setattr(onnx_format, "EXTERNAL_DATA_BYTES", 0)
    assert run("export", "stack", "-o", "m.onnx").exit_code == 0
    assert (tmp_path / "m.onnx.data").is_file()
    (tmp_path / "m.onnx.data.keep").write_text("not listed by m.onnx")
    monkeypatch.setattr(onnx_format, "EXTERNAL_DATA_BYTES", inline)  # weights inline again
    result = run("export", "stack", "-o", "m.onnx", "--force", "--report", "r.json")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data.keep", "r.json"]
    assert run("verify", "m.onnx").exit_code == 0


def test_force_keeps_the_side_file_the_new_export_writes_again(run, tmp_path, external_data):
    assert run("export", "stack", "-o", "m.onnx").exit_code == 0
    assert run("export", "stack", "-o", "m.onnx", "--force", "-p", "hidden=7,5").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    assert run("verify", "m.onnx").exit_code == 0


# -- a failed single export or verify still leaves its record --------------------


class Branchy:
    """An architecture no exporter can trace: data-dependent control flow."""

    @staticmethod
    def build(width: int = 3):
        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(width, 2)

            def forward(self, x):
                if x.sum() > 0:
                    return self.lin(x)
                return -self.lin(x)

        return Model()

    @hookimpl
    def register_architectures(self, register):
        register(Architecture("branchy", self.build, (Input("x", ("batch", "width")),), (Output("y", task="regression"),)))


def test_a_failed_export_writes_its_record_to_report_and_json(run, tmp_path):
    the_zoo = load_zoo(entry_points=False, extra=[("branchy", Branchy())])
    result = run("export", "branchy", "--report", "r.json", "--json", zoo=the_zoo)
    assert result.exit_code == 1
    assert result.stderr.startswith("zoo: error: onnx could not export branchy") and result.stderr.count("\n") == 1
    record = json.loads(result.stdout)
    assert record == json.loads((tmp_path / "r.json").read_text())
    assert record["status"] == "failed" and record["architecture"] == "branchy"
    assert record["error"] == result.stderr.removeprefix("zoo: error: ").strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_file_failing_its_check_in_verify_writes_its_record(run, tmp_path):
    import onnx

    assert run("export", "binary", "-o", "v.onnx").exit_code == 0
    model = onnx.load(str(tmp_path / "v.onnx"))
    model.graph.node[0].op_type = "NoSuchOp"  # metadata intact, graph broken
    onnx.save(model, str(tmp_path / "v.onnx"))
    result = run("verify", "v.onnx", "--report", "r.json", "--json")
    assert result.exit_code == 1, result.output
    assert "fails the onnx check" in result.stderr
    record = json.loads((tmp_path / "r.json").read_text())
    assert record == json.loads(result.stdout)
    assert (record["status"], record["file"]) == ("failed", "v.onnx")
    assert record["error"] == result.stderr.removeprefix("zoo: error: ").strip()


def test_a_usage_error_writes_no_record(run, tmp_path):
    result = run("export", "binary", "-p", "nope=1", "--report", "r.json")
    assert result.exit_code == 2
    assert not (tmp_path / "r.json").exists()


def test_force_never_removes_the_weights_it_exports_with(run, tmp_path, external_data, zoo):
    """An old file's external data may name any file in the folder, --weights too."""
    import onnx
    import torch

    from zoo.build.model import build_model

    torch.save(build_model(zoo.architecture("stack"), seed=3).module.state_dict(), tmp_path / "w.pt")
    assert run("export", "stack", "-o", "m.onnx").exit_code == 0
    model = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "w.pt"
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = run("export", "stack", "--weights", "w.pt", "-o", "m.onnx", "--force")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "w.pt").is_file()
