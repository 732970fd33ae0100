"""Numerics of the checks: saturated (confident) models, half precision, large logits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from zoo import Architecture, Input, hookimpl
from zoo.build.model import build_model
from zoo.checking.checks import check_model
from zoo.checking.task_calls import agreement, closed_form_loss, head_checks, loss_slack, losses_agree, torch_loss
from zoo.cli.commands import cli
from zoo.host.manager import load_zoo
from zoo.spec.architecture import Output


def invoke(*args, zoo=None):
    return CliRunner().invoke(cli, [str(a) for a in args], obj=zoo, catch_exceptions=False)


def scaled_weights(name: str, scale: float, folder: Path) -> Path:
    """The seed weights times ``scale``: a stand-in for a confident trained model."""
    module = build_model(load_zoo(entry_points=False).architecture(name), seed=0).module
    path = folder / f"{name}-x{scale:g}.pt"
    torch.save({k: v * scale for k, v in module.state_dict().items()}, path)
    return path


# -- finding 1: saturated sigmoid/softmax outputs ---------------------------------------


@pytest.mark.filterwarnings("error::RuntimeWarning")  # numpy's log(0) must not reach the terminal
@pytest.mark.parametrize(("name", "scale"), [("binary", 8), ("binary", 30), ("multiclass", 8)])
def test_saturated_model_checks_exports_and_verifies(tmp_path, name, scale):
    weights = scaled_weights(name, scale, tmp_path)
    built = build_model(load_zoo(entry_points=False).architecture(name), seed=0, weights=weights)
    result = check_model(built)
    assert result.ok, result.failures
    (loss,) = result.losses
    assert math.isfinite(loss.closed_form) and loss.torch == pytest.approx(loss.closed_form, rel=1e-4)
    out = tmp_path / "m.onnx"
    exported = invoke("export", name, "--weights", weights, "-o", out)
    assert exported.exit_code == 0, exported.output
    verified = invoke("verify", out, "--weights", weights)
    assert verified.exit_code == 0, verified.output


def test_saturated_sigmoid_is_noted_not_failed(tmp_path):
    weights = scaled_weights("binary", 30, tmp_path)
    built = build_model(load_zoo(entry_points=False).architecture("binary"), seed=0, weights=weights)
    probabilities = built.forward(built.sample_inputs())["probability"]
    assert set(probabilities.flatten().tolist()) <= {0.0, 1.0}  # the premise: float32 saturates
    (head,) = check_model(built).heads
    assert head.ok and "saturated to exactly 0 or 1" in head.detail


def test_sigmoid_head_still_fails_outside_0_1_and_on_nan():
    spec = Output("p", task="binary", head="sigmoid")
    for bad in ([0.5, 1.5], [-0.1, 0.5], [0.5, float("nan")]):
        (head,) = head_checks(spec, np.array(bad, dtype=np.float32))
        assert not head.ok, bad
    (head,) = head_checks(spec, np.array([0.0, 0.3, 1.0], dtype=np.float32))
    assert head.ok and "2 of 3 saturated" in head.detail


@pytest.mark.parametrize(
    ("spec", "prediction"),
    [
        (Output("p", task="binary", head="sigmoid"), [[0.0], [1.0], [1.0], [0.0]]),
        (Output("p", task="multiclass", head="softmax"), [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_closed_form_clips_logs_as_torch_does(spec, prediction, dtype):
    # half the rows are confidently wrong: log(0) on both sides, clipped the same way
    y = torch.tensor(prediction, dtype=dtype)
    t = torch.tensor([[1.0], [0.0], [1.0], [1.0]] if spec.task == "binary" else [[0, 1, 0], [0, 0, 1], [1, 0, 0], [1, 0, 0]], dtype=dtype)
    with np.errstate(all="raise"):
        closed = closed_form_loss(spec, y.double().numpy(), t.double().numpy(), str(dtype))
    framework = torch_loss(spec, y, t).item()
    assert math.isfinite(closed) and closed == pytest.approx(framework, rel=1e-2)


def test_losses_agree_handles_nan_and_infinity():
    assert losses_agree(1.0, 1.0 + 1e-9, 1e-6, 0.0)
    assert losses_agree(math.inf, math.inf, 1e-6, 0.0)
    assert not losses_agree(math.inf, 100.0, 1e-6, 1e9)
    assert not losses_agree(math.nan, math.nan, 1e-6, 1e9)
    assert not losses_agree(1.0, math.nan, 1e-6, 1e9)


def test_loss_slack_covers_saturation_and_not_more():
    spec = Output("p", task="binary", head="sigmoid")
    near_one = np.array([[1 - 6e-8]], dtype=np.float64)
    target = np.zeros((1, 1))
    one = closed_form_loss(spec, np.ones((1, 1), dtype=np.float32), target)
    near = closed_form_loss(spec, near_one, target, "float32")
    assert one == pytest.approx(100) and near == pytest.approx(16.6, abs=0.1)
    assert loss_slack(spec, near_one, target, 1e-4, 1e-5, "float32") >= one - near  # within tolerance: may move that far
    mid = np.array([[0.5]])
    assert loss_slack(spec, mid, target, 1e-4, 1e-5) < 1e-3  # a well-conditioned loss gets no such allowance


# -- finding 2: float16 and bfloat16 architectures --------------------------------------


def _half_net(dtype: str):
    def build(in_features: int = 8, n_classes: int = 4):
        from torch import nn

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.binary = nn.Linear(in_features, 1)
                self.classes = nn.Linear(in_features, n_classes)

            def forward(self, x):
                logits = self.classes(x)
                return torch.sigmoid(self.binary(x)), torch.softmax(logits, -1), logits

        return Net().to(getattr(torch, dtype))

    return build


class HalfPlugin:
    """Inputs, weights and outputs in float16 or bfloat16."""

    @staticmethod
    def arch(dtype: str):
        return Architecture(
            name=f"half-{dtype}",
            build=_half_net(dtype),
            inputs=(Input("x", ("batch", "in_features"), dtype=dtype),),
            outputs=(
                Output("p", task="binary", head="sigmoid"),
                Output("q", task="multiclass", head="softmax"),
                Output("z", task="multiclass"),
            ),
        )

    @hookimpl
    def register_architectures(self, register):
        register(self.arch("float16"))
        register(self.arch("bfloat16"))


@pytest.fixture
def half_zoo():
    return load_zoo(entry_points=False, extra=[("half", HalfPlugin())])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_architecture_checks(half_zoo, dtype):
    built = build_model(half_zoo.architecture(f"half-{dtype}"))
    assert built.forward(built.sample_inputs())["p"].dtype == getattr(torch, dtype)  # the premise
    result = check_model(built)
    assert result.ok, result.failures
    assert len(result.losses) == 3 and all(loss.ok for loss in result.losses)
    assert invoke("check", f"half-{dtype}", zoo=half_zoo).exit_code == 0


def test_float16_exports_and_verifies_on_cpu(half_zoo, tmp_path):
    out = tmp_path / "half.onnx"
    exported = invoke("export", "half-float16", "-o", out, zoo=half_zoo)
    assert exported.exit_code == 0, exported.output
    import onnxruntime as ort

    (x,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_inputs()
    assert x.type == "tensor(float16)"
    assert invoke("verify", out, zoo=half_zoo).exit_code == 0


def test_bfloat16_is_refused_before_the_export(half_zoo, tmp_path):
    # onnxruntime's Python API has no bfloat16 arrays (and its CPU provider no bfloat16 Gemm):
    # refused from the runtime's declared refused_dtypes, before the build and the export
    result = invoke("export", "half-bfloat16", "-o", tmp_path / "half.onnx", zoo=half_zoo)
    assert result.exit_code == 2, result.output
    assert "zoo: error: half-bfloat16: input 'x' is bfloat16, which onnxruntime cannot take; export a float32 or float16" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []
    # with --all, that architecture fails alone and the others are exported
    every = invoke("export", "--all", "half", "-o", tmp_path / "all", zoo=half_zoo)
    assert every.exit_code == 1, every.output
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["half-float16.onnx"]
    assert "input 'x' is bfloat16" in every.output


# -- finding 7: argmax/threshold margin scales with the values --------------------------


def _near_tie(features: int = 64):
    """Two classes with almost the same weights, logits around 3000 ± 1000: rounding
    differences between runtimes flip many argmaxes, all within tolerance."""
    from torch import nn

    layer = nn.Linear(features, 2)
    with torch.no_grad():
        layer.weight[1] = layer.weight[0] * (1 + 1e-6 * torch.randn(features))
        layer.weight *= 1e3
        layer.bias[:] = 3000.0
    return layer


class NearTiePlugin:
    @hookimpl
    def register_architectures(self, register):
        from zoo import Dim

        x = Input("x", (Dim("batch", sample=512), "features"))
        register(Architecture(name="near-tie", build=_near_tie, inputs=(x,), outputs=(Output("z", task="multiclass"),)))


def test_large_logits_near_ties_do_not_fail_a_correct_export(tmp_path):
    zoo = load_zoo(entry_points=False, extra=[("tie", NearTiePlugin())])
    result = invoke("export", "near-tie", "-o", tmp_path / "tie.onnx", "--report", tmp_path / "r.json", zoo=zoo)
    assert result.exit_code == 0, result.output
    # the premise: onnxruntime and PyTorch do pick different classes on some rows
    import onnxruntime as ort

    built = build_model(zoo.architecture("near-tie"))
    x = built.sample_inputs()["x"]
    (got,) = ort.InferenceSession(str(tmp_path / "tie.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    flips = int((got.argmax(-1) != built.forward({"x": x})["z"].numpy().argmax(-1)).sum())
    if not flips:
        pytest.skip("on this CPU both runtimes round identically: no near-tie flips to forgive")


def test_agreement_margin_is_relative():
    spec = Output("z", task="multiclass")
    ref = np.array([[10000.0, 10000.0005], [1.0, 0.0]])
    cand = np.array([[10000.0006, 10000.0004], [1.0, 0.0]])  # 6e-4 apart: within rtol 1e-4 of 1e4
    assert agreement(spec, ref, cand, 1e-4, 1e-5) == ("argmax", 1.0)
    flipped = np.array([[10000.0006, 10000.0004], [0.0, 1.0]])  # a decisive row that flips still counts
    assert agreement(spec, ref, flipped, 1e-4, 1e-5) == ("argmax", 0.0)
    binary = Output("z", task="binary")
    assert agreement(binary, np.array([1e-6, 5.0]), np.array([-1e-6, 5.0]), 1e-4, 1e-5) == ("threshold", 1.0)
    assert agreement(binary, np.array([1e-6, 5.0]), np.array([-1e-6, -5.0]), 1e-4, 1e-5) == ("threshold", 0.0)
