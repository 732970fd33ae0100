"""zoo export / zoo verify: real torch.onnx exports checked by real onnxruntime sessions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

from zoo import hookimpl
from zoo.build.model import build_model
from zoo.cli.commands import cli
from zoo.host.manager import load_zoo

SEED_ARCHS = ["binary-sigmoid", "multiclass-softmax", "three-layer-stack"]


def invoke(*args, zoo=None):
    return CliRunner().invoke(cli, [str(a) for a in args], obj=zoo, catch_exceptions=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each seed architecture exported once, with its report."""
    folder = tmp_path_factory.mktemp("exported")
    results = {}
    for name in SEED_ARCHS:
        path, report = folder / f"{name}.onnx", folder / f"{name}.json"
        result = invoke("export", name, "-o", path, "--report", report, "--seed", 7)
        assert result.exit_code == 0, result.output
        results[name] = (path, json.loads(report.read_text()), result.stdout)
    return results


@pytest.mark.parametrize("name", SEED_ARCHS)
def test_round_trip_at_several_batch_sizes(exported, name):
    path, report, stdout = exported[name]
    assert report["status"] == "ok" and stdout.rstrip().endswith("ok")
    assert [c["sizes"] for c in report["verification"]["cases"]] == [{"batch": 2}, {"batch": 1}, {"batch": 64}]
    # Independently of zoo's own comparison: onnxruntime vs the rebuilt torch model at a new batch size.
    built = build_model(load_zoo(entry_points=False).architecture(name), seed=7)
    x = torch.randn(37, built.params["in_features"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(got, built.module(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    onnx.checker.check_model(onnx.load(path), full_check=True)


def test_report_records_everything(exported):
    path, report, _ = exported["multiclass-softmax"]
    assert report["architecture"] == "multiclass-softmax" and report["plugin"] == "seed"
    assert report["params"]["n_classes"] == 4 and report["seed"] == 7 and report["device"] == "cpu"
    assert report["exporter"] == {"name": "onnx", "plugin": "onnx", "opset": 20, "static": False}
    (file,) = report["files"]
    assert file["path"] == str(path) and file["bytes"] == path.stat().st_size and len(file["sha256"]) == 64
    assert report["check"]["losses"][0]["ok"]
    verification = report["verification"]
    assert verification["execution_providers"] == ["CPUExecutionProvider"]
    assert verification["tolerances"] == {"probabilities": {"rtol": 1e-4, "atol": 1e-5}}
    case = verification["cases"][2]["outputs"]["probabilities"]
    assert case["ok"] and case["argmax_agreement"] == 1.0
    assert case["loss"]["torch"] == pytest.approx(case["loss"]["exported"], rel=1e-5)
    assert set(report["timings_s"]) == {"check", "export", "verify"}
    assert set(report["versions"]) >= {"zoo", "torch", "onnx", "onnxruntime"}


def test_metadata_lets_verify_rebuild_the_model(exported):
    path, _, _ = exported["three-layer-stack"]
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta["zoo.architecture"] == "three-layer-stack" and meta["zoo.seed"] == "7"
    assert json.loads(meta["zoo.params"])["hidden"] == [18, 20]
    assert meta["zoo.torch_version"] == torch.__version__ and meta["zoo.onnx_version"] == onnx.__version__
    result = invoke("verify", path)
    assert result.exit_code == 0, result.output
    assert "verify three-layer-stack" in result.stdout and "batch=64" in result.stdout


def test_batch_dimension_stays_dynamic(exported):
    path, _, _ = exported["binary-sigmoid"]
    (graph_input,) = onnx.load(path).graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 8


def test_static_fixes_the_sample_shape(tmp_path):
    result = invoke("export", "binary", "--static", "-o", tmp_path / "s.onnx")
    assert result.exit_code == 0, result.output
    (graph_input,) = onnx.load(tmp_path / "s.onnx").graph.input
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim] == [2, 8]


def test_export_is_byte_identical_and_leaks_no_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out in ("a.onnx", "b.onnx"):
        assert invoke("export", "multiclass", "-p", "activation=relu", "-o", out).exit_code == 0
    data = Path("a.onnx").read_bytes()
    assert data == Path("b.onnx").read_bytes()
    for marker in (b"site-packages", str(Path(__file__).parents[1]).encode(), b"File \""):
        assert marker not in data


def test_perturbed_weight_fails_verification(exported, tmp_path):
    """Edit one weight inside the ONNX graph: zoo verify must fail, naming output and case."""
    path, _, _ = exported["binary-sigmoid"]
    model = onnx.load(path)
    init = next(i for i in model.graph.initializer if numpy_helper.to_array(i).ndim == 2)
    weights = numpy_helper.to_array(init).copy()
    weights.flat[0] += 0.5
    init.CopyFrom(numpy_helper.from_array(weights, init.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, tampered)
    result = invoke("verify", tampered)
    assert result.exit_code == 1
    assert "output 'probability' differs from PyTorch: max abs error" in result.stdout
    assert "verification failed: batch=2: output 'probability'" in result.stderr


class WrongExporter:
    """Exports a subtly different model: what a buggy exporter plugin would do."""

    @hookimpl
    def register_exporters(self, register):
        from zoo.exporters import onnx as onnx_exporter

        from zoo import Exporter

        def export(job):
            with torch.no_grad():
                next(job.module.parameters()).add_(1e-2)
            try:
                return onnx_exporter.export(job)
            finally:
                with torch.no_grad():
                    next(job.module.parameters()).sub_(1e-2)

        register(Exporter("wrong", ".wrong.onnx", export, onnx_exporter.load, onnx_exporter.read_metadata, default_opset=20))


def test_broken_exporter_fails_and_leaves_no_file(tmp_path):
    zoo = load_zoo(entry_points=False, extra=[("wrong", WrongExporter())])
    out = tmp_path / "m.wrong.onnx"
    result = invoke("export", "stack", "--format", "wrong", "-o", out, zoo=zoo)
    assert result.exit_code == 1
    assert "verification failed" in result.stderr and "differs from PyTorch" in result.stdout
    assert list(tmp_path.iterdir()) == []  # neither the file nor the staging folder


class CrashingExporter:
    @hookimpl
    def register_exporters(self, register):
        from zoo.exporters import onnx as onnx_exporter

        from zoo import Exporter

        def export(job):
            job.path.write_bytes(b"half an onnx file")  # a partial write, then a crash
            raise OSError("device went away")

        register(Exporter("crash", ".onnx", export, onnx_exporter.load, onnx_exporter.read_metadata))


def test_failed_export_is_atomic(tmp_path):
    zoo = load_zoo(entry_points=False, extra=[("crash", CrashingExporter())])
    result = invoke("export", "binary", "--format", "crash", "-o", tmp_path / "m.onnx", zoo=zoo)
    assert result.exit_code == 1
    assert "crash could not export binary-sigmoid: OSError: device went away" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_trained_weights_are_exported_and_required_by_verify(tmp_path, fmt):
    from safetensors.torch import save_file

    trained = build_model(load_zoo(entry_points=False).architecture("binary"), seed=123).module.state_dict()
    weights = tmp_path / f"trained.{fmt}"
    save_file(trained, weights) if fmt == "safetensors" else torch.save(trained, weights)
    out = tmp_path / "trained.onnx"
    assert invoke("export", "binary", "--weights", weights, "-o", out).exit_code == 0
    (w0,) = [numpy_helper.to_array(i) for i in onnx.load(out).graph.initializer if i.name == "0.weight"]
    np.testing.assert_array_equal(w0, trained["0.weight"].numpy())  # seed 0 would give other weights
    missing = invoke("verify", out)
    assert missing.exit_code == 2 and "pass them with --weights FILE" in missing.stderr
    assert invoke("verify", out, "--weights", weights).exit_code == 0


def test_weights_for_another_architecture_are_named(tmp_path):
    other = build_model(load_zoo(entry_points=False).architecture("stack")).module.state_dict()
    torch.save(other, tmp_path / "stack.pt")
    result = invoke("export", "binary", "--weights", tmp_path / "stack.pt", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 2
    assert "shape mismatches 0.weight (18, 10) != (4, 8)" in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_export_all_summarises_every_architecture(tmp_path):
    report = tmp_path / "all.json"
    result = invoke("export", "--all", "-o", tmp_path, "--report", report)
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.stdout.splitlines()[1:]] == [[n, "ok"] for n in SEED_ARCHS]
    records = json.loads(report.read_text())
    assert [r["architecture"] for r in records] == SEED_ARCHS
    assert all((tmp_path / f"{n}.onnx").exists() for n in SEED_ARCHS)


def test_export_all_goes_on_after_a_failure(tmp_path):
    zoo = load_zoo(entry_points=False)
    (tmp_path / "binary-sigmoid.onnx").write_text("already here")  # refused without --force
    result = invoke("export", "--all", "-o", tmp_path, zoo=zoo)
    assert result.exit_code == 1
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert rows == {"binary-sigmoid": "FAILED", "multiclass-softmax": "ok", "three-layer-stack": "ok"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the missing-CUDA path")
def test_cuda_without_cuda_is_a_usage_error(tmp_path):
    result = invoke("export", "binary", "--device", "cuda", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 2
    assert result.stderr.strip() == "zoo: error: --device cuda: this PyTorch has no CUDA device available; use --device cpu"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", SEED_ARCHS)
def test_cuda_export_verifies(tmp_path, name):
    report = tmp_path / "r.json"
    result = invoke("export", name, "--device", "cuda", "-o", tmp_path / "m.onnx", "--report", report)
    assert result.exit_code == 0, result.output
    record = json.loads(report.read_text())
    assert record["device"] == "cuda"
    providers = record["verification"]["execution_providers"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert providers[0] == "CUDAExecutionProvider"
    else:
        assert "no CUDAExecutionProvider" in record["verification"]["note"]


def test_export_all_refuses_per_architecture_options(tmp_path):
    result = invoke("export", "--all", "-o", tmp_path, "-p", "hidden=3")
    assert result.exit_code == 2 and "export it by NAME instead of --all" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cuda_reference_runs_in_full_float32():
    """cuDNN defaults to TF32; the PyTorch reference must not be the inexact side."""
    from zoo.build.model import ieee_float32

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with ieee_float32("cuda"):
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before
