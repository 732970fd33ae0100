"""Proof on the user's own data: models trained here on scikit-learn's bundled data sets,
scored on held-out labelled rows (accuracy, RMSE, flips), variants gated on the metric,
int8 calibrated on the user's rows, and the variant timed against the float32 file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.metrics import accuracy_score, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from zoo.build.model import build_model
from zoo.cli.commands import cli
from zoo.host.manager import load_zoo
from zoo.spec.params import parse_params
from zoo.verification.metrics import score

DIGITS = ["multiclass", "-p", "in_features=64", "-p", "hidden=32,16", "-p", "n_classes=10", "-p", "activation=relu"]
CANCER = ["binary", "-p", "in_features=30", "-p", "hidden=16,8", "-p", "activation=relu"]


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def trained(name: str, params: list[str], X: np.ndarray, y: np.ndarray, loss, steps: int = 300, zoo=None):
    """A seed architecture trained full-batch with Adam for ``steps`` steps (about a second)."""
    zoo = zoo or load_zoo(entry_points=False)
    arch = zoo.architecture(name)
    built = build_model(arch, parse_params(params, arch.parameters, arch.name), seed=0)
    optimizer = torch.optim.Adam(built.module.parameters(), lr=0.01)
    inputs, targets = torch.from_numpy(X), torch.from_numpy(y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small full batches: threads only contend on a shared machine
    try:
        for _ in range(steps):
            optimizer.zero_grad()
            loss(built.module(inputs), targets).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return built.module.eval()


def split(X: np.ndarray, y: np.ndarray):
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train).astype("float32"), scaler.transform(X_test).astype("float32"), y_train, y_test


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict:
    """digits → multiclass-softmax 64→32→16→10, weights and a held-out test.npz with class labels."""
    folder = tmp_path_factory.mktemp("digits")
    X_train, X_test, y_train, y_test = split(*load_digits(return_X_y=True))
    nll = lambda p, t: torch.nn.functional.nll_loss(p.clamp_min(1e-12).log(), t.long())  # noqa: E731
    params = [p for p in DIGITS[1:] if p != "-p"]
    module = trained("multiclass", params, X_train, y_train, nll)
    save_file(module.state_dict(), folder / "digits.safetensors")
    np.savez(folder / "test.npz", x=X_test, probabilities=y_test.astype("int64"))
    np.savez(folder / "calib.npz", x=X_train)
    with torch.no_grad():
        probabilities = module(torch.from_numpy(X_test)).numpy()
    return {"folder": folder, "weights": folder / "digits.safetensors", "test": folder / "test.npz", "calib": folder / "calib.npz",
            "X": X_test, "y": y_test, "probabilities": probabilities}


def metrics_of(case: dict, output: str) -> dict:
    return case["outputs"][output]["metrics"]


def test_int8_of_a_trained_classifier_is_scored_on_the_held_out_rows_and_its_acceptance_includes_them(digits, tmp_path) -> None:
    out = tmp_path / "digits.int8.onnx"
    args = [*DIGITS, "--weights", digits["weights"], "--inputs", digits["test"], "--quantize", "int8", "-o", out]
    result = invoke("export", *args, "--report", tmp_path / "r.json")
    assert result.exit_code == 0, result.stderr
    record = json.loads((tmp_path / "r.json").read_text())
    cases = record["variant"]["verification"]["cases"]
    assert [c.get("source") for c in cases] == [None, None, None, "test.npz"]  # the user's case is judged too
    accuracy = metrics_of(cases[-1], "probabilities")["accuracy"]
    by_hand = accuracy_score(digits["y"], digits["probabilities"].argmax(1))
    assert accuracy["torch"] == pytest.approx(by_hand) and accuracy["rows"] == 540
    assert accuracy["torch"] > 0.9 and accuracy["max_drop"] == 0.01 and accuracy["ok"]
    flipped = accuracy["right_to_wrong"] - accuracy["wrong_to_right"]
    assert accuracy["change"] == pytest.approx(-flipped / 540)  # the change is exactly the net flips
    low, high = accuracy["interval"]
    assert low <= accuracy["change"] <= high and high - low < 0.05
    float_accuracy = metrics_of(record["verification"]["cases"][-1], "probabilities")["accuracy"]
    assert float_accuracy["candidate"] == pytest.approx(by_hand)  # the float32 file decides as PyTorch does
    text = result.stdout
    assert "metric    test.npz probabilities: accuracy  torch " in text and "  onnx " in text and "  int8 " in text
    assert "right→wrong" in text and "95% interval of the change" in text
    # the loss on a labelled case is the loss on its labels, not on random targets
    log_p = np.log(np.maximum(digits["probabilities"], np.finfo(np.float32).tiny)).clip(min=-100)
    by_hand_loss = -log_p[np.arange(540), digits["y"]].mean()
    assert record["verification"]["cases"][-1]["outputs"]["probabilities"]["loss"]["torch"] == pytest.approx(by_hand_loss, rel=1e-5)
    assert "loss      test.npz probabilities: on its labels  torch " in text
    speed = record["variant"]["speed"]["rows"]
    assert [row["sizes"] for row in speed] == [{"batch": 1}, {"batch": 540}] and all(row["speedup"] > 0 for row in speed)

    verified = invoke("verify", out, "--weights", digits["weights"], "--inputs", digits["test"], "--json")
    assert verified.exit_code == 0, verified.stderr
    again = metrics_of(json.loads(verified.stdout)["verification"]["cases"][-1], "probabilities")["accuracy"]
    assert (again["torch"], again["candidate"]) == pytest.approx((accuracy["torch"], accuracy["candidate"]))


def test_a_variant_that_loses_more_accuracy_than_allowed_fails_with_the_drop_and_leaves_no_file(tmp_path) -> None:
    """Seeded (untrained) 10-class weights give near-uniform softmax rows, whose argmax int8
    rounding flips; labels = PyTorch's own decisions make every flip a right→wrong one."""
    params = ["in_features=8", "hidden=4,3", "n_classes=10"]
    zoo = load_zoo(entry_points=False)
    arch = zoo.architecture("multiclass")
    built = build_model(arch, parse_params(params, arch.parameters, arch.name), seed=0)
    x = np.random.default_rng(0).normal(size=(2000, 8)).astype("float32")
    with torch.no_grad():
        decided = built.module(torch.from_numpy(x)).argmax(1).numpy()
    np.savez(tmp_path / "own.npz", x=x, probabilities=decided)
    out = tmp_path / "m.int8.onnx"
    flags = [f for p in params for f in ("-p", p)]
    # how many rows flip depends on the CPU's int8 kernels (about 2% on an AMD EPYC, fewer on a Xeon with VNNI): allow none
    result = invoke("export", "multiclass", *flags, "--inputs", tmp_path / "own.npz", "--quantize", "int8", "-o", out,
                    "--max-metric-drop", "accuracy=0", "--json")
    assert result.exit_code == 1, result.stdout
    record = json.loads(result.stdout)
    accuracy = metrics_of(record["variant"]["verification"]["cases"][-1], "probabilities")["accuracy"]
    assert accuracy["torch"] == 1.0 and accuracy["drop"] > 0 and not accuracy["ok"]
    assert f"accuracy {accuracy['candidate']:.2%} vs 100.00% in PyTorch" in record["error"]
    assert "(at most 0.00 pp allowed, --max-metric-drop)" in record["error"]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["own.npz"]
    # a larger allowance accepts the same variant
    allowed = invoke("export", "multiclass", *flags, "--inputs", tmp_path / "own.npz", "--quantize", "int8", "-o", out,
                     "--max-metric-drop", f"accuracy={accuracy['drop'] + 0.01:.3f}")
    assert allowed.exit_code == 0, allowed.stderr
    assert out.exists()


def test_labels_are_checked_like_inputs_before_any_work(digits, tmp_path) -> None:
    X, y = digits["X"], digits["y"]
    cases = {
        "class 10": (dict(x=X, probabilities=np.where(np.arange(len(y)) == 3, 10, y)), "labels 'probabilities' holds class 10, outside 0 to 9"),
        "floats": (dict(x=X, probabilities=y.astype("float32")), "labels 'probabilities' is float32: give class indices as integers"),
        "rows": (dict(x=X, probabilities=y[:-1]), "labels 'probabilities' has shape [539], multiclass-softmax gives [540, 10] there"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / "bad.npz", **arrays)
        result = invoke("export", *DIGITS, "--inputs", tmp_path / "bad.npz", "-o", tmp_path / "m.onnx")
        assert result.exit_code == 2, name
        (line,) = result.stderr.strip().splitlines()  # one line, no traceback
        assert line.startswith(f"zoo: error: --inputs bad.npz: {message}"), (name, line)
        assert not (tmp_path / "m.onnx").exists()
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 30), "float32"), probability=np.array([[0], [1], [2], [1]]))
    result = invoke("export", *CANCER, "--inputs", tmp_path / "bad.npz")
    assert result.exit_code == 2 and "labels 'probability' holds 2: binary labels are 0 or 1" in result.stderr


def test_breast_cancer_binary_and_diabetes_regression_are_scored_as_scikit_learn_scores_them(tmp_path) -> None:
    zoo = load_zoo(entry_points=False)
    X_train, X_test, y_train, y_test = split(*load_breast_cancer(return_X_y=True))
    bce = lambda p, t: torch.nn.functional.binary_cross_entropy(p, t.float().reshape(-1, 1))  # noqa: E731
    cancer = trained("binary", [p for p in CANCER[1:] if p != "-p"], X_train, y_train, bce, zoo=zoo)
    X, y = load_diabetes(return_X_y=True)
    Xd_train, Xd_test, yd_train, yd_test = split(X, ((y - y.mean()) / y.std()).astype("float32"))
    mse = lambda p, t: torch.nn.functional.mse_loss(p, t.reshape(-1, 1))  # noqa: E731
    stack = trained("stack", ["out_features=1"], Xd_train, yd_train, mse, zoo=zoo)
    with torch.no_grad():
        probability = cancer(torch.from_numpy(X_test)).numpy()
        prediction = stack(torch.from_numpy(Xd_test)).numpy()
    binary = score(zoo.architecture("binary"), {"probability": probability}, {"probability": y_test.reshape(-1, 1)})
    assert binary["probability"].values == {"accuracy": pytest.approx(accuracy_score(y_test, probability[:, 0] > 0.5))}
    assert binary["probability"].values["accuracy"] > 0.9 and binary["probability"].rows == len(y_test)
    regression = score(zoo.architecture("stack"), {"prediction": torch.from_numpy(prediction)}, {"prediction": yd_test.reshape(-1, 1)})
    assert regression["prediction"].values == {
        "rmse": pytest.approx(mean_squared_error(yd_test, prediction[:, 0]) ** 0.5),
        "r2": pytest.approx(r2_score(yd_test, prediction[:, 0])),
    }
    assert regression["prediction"].values["r2"] > 0.3  # a model that learned something

    save_file(stack.state_dict(), tmp_path / "stack.safetensors")
    np.savez(tmp_path / "held-out.npz", x=Xd_test, prediction=yd_test.reshape(-1, 1))
    result = invoke("export", "stack", "-p", "out_features=1", "--weights", tmp_path / "stack.safetensors",
                    "--inputs", tmp_path / "held-out.npz", "--quantize", "int8", "-o", tmp_path / "s.int8.onnx", "--json")
    assert result.exit_code == 0, result.stdout
    rmse = metrics_of(json.loads(result.stdout)["variant"]["verification"]["cases"][-1], "prediction")["rmse"]
    assert rmse["torch"] == pytest.approx(regression["prediction"].values["rmse"], rel=1e-5)
    assert (rmse["higher_is_better"], rmse["relative"], rmse["max_drop"]) == (False, True, 0.05) and rmse["ok"]


def test_options_that_judge_or_calibrate_a_variant_are_refused_without_one(digits, tmp_path) -> None:
    for flags, message in (
        (["--calibration", digits["calib"]], "--calibration calibrates an int8 variant: add --quantize int8"),
        (["--min-speedup", "2"], "--min-speedup judges a variant"),
        (["--max-metric-drop", "0.02"], "--max-metric-drop judge a variant"),
        (["--quantize", "int8", "--max-metric-drop", "accuracy=lots"], "--max-metric-drop 'accuracy=lots': give NUMBER"),
        (["--quantize", "int8", "--min-speedup", "0"], "--min-speedup 0.0: give a ratio above 0"),
        (["--quantize", "int8", "--calibration", digits["test"]], "--calibration test.npz: unknown key(s) probabilities"),
    ):
        result = invoke("export", *DIGITS, *flags, "-o", tmp_path / "m.int8.onnx")
        assert result.exit_code == 2 and message in result.stderr, (flags, result.stderr)


def test_a_variant_not_as_fast_as_required_is_refused_with_its_measured_speed(tmp_path) -> None:
    out = tmp_path / "b.int8.onnx"
    result = invoke("export", "binary", "--quantize", "int8", "--min-speedup", "1000", "-o", out)
    assert result.exit_code == 1
    assert "as fast as the float32 file" in result.stderr and "at least 1000× required (--min-speedup)" in result.stderr
    assert not out.exists()
    slow = invoke("export", "binary", "--quantize", "int8", "-o", out)  # 55 weights: int8 only adds its scales
    assert slow.exit_code == 0 and "warning   the int8 file is larger than the float32 file" in slow.stdout


def test_a_cnn_calibrated_on_the_users_rows_says_so_and_scores_at_least_as_well_as_on_generated_inputs(example_zoo, digits, tmp_path) -> None:
    from zoo.exporting.pipeline import export_built
    from zoo.exporting.plan import ExportPlan, Target, resolve_acceptance
    from zoo.verification.input_files import load_input_files

    X_train, X_test, y_train, y_test = train_test_split(*load_digits(return_X_y=True), test_size=0.3, random_state=0)
    # raw 8-bit pixel values (0-255), as images usually come: far from zoo's generated inputs
    images = lambda X: np.repeat((X * 255 / 16).reshape(-1, 1, 8, 8), 3, axis=1).astype("float32")  # noqa: E731
    ce = lambda p, t: torch.nn.functional.cross_entropy(p, t.long())  # noqa: E731
    cnn = trained("small-cnn", ["height=8", "width=8"], images(X_train), y_train, ce, steps=150, zoo=example_zoo)
    save_file(cnn.state_dict(), tmp_path / "cnn.safetensors")
    np.savez(tmp_path / "test.npz", image=images(X_test), logits=y_test)
    np.savez(tmp_path / "calib.npz", image=images(X_train[:500]))
    exporter = example_zoo.exporter("onnx")
    arch = example_zoo.architecture("small-cnn")
    params = {**arch.defaults, "height": 8, "width": 8}
    accuracy = {}
    for calibrated in (False, True):
        built = build_model(arch, {"height": 8, "width": 8}, weights=tmp_path / "cnn.safetensors")
        path = tmp_path / f"cnn-{calibrated}.int8.onnx"
        plan = ExportPlan(exporter, [Target(arch, path)], opset=20, variant="int8", acceptance=resolve_acceptance(exporter, "int8", {}),
                          inputs=load_input_files([tmp_path / "test.npz"], arch, params),
                          calibration=load_input_files([tmp_path / "calib.npz"], arch, params, labels=False) if calibrated else [])
        result = export_built(plan, built, path)
        calibration = result.variant["calibration"]
        expected = "calibrated on calib.npz, 500 rows" if calibrated else "calibrated on 8 batches of generated inputs, unlike real data"
        assert calibration["text"] == expected and calibration["representative"] == calibrated
        found = result.variant_verification.cases[-1].outputs["logits"]["metrics"]["accuracy"]
        accuracy[calibrated] = found["candidate"]
        torch_accuracy = found["torch"]
    print(f"small-cnn on digits: torch {torch_accuracy:.2%}, int8 on generated {accuracy[False]:.2%}, on calib.npz {accuracy[True]:.2%}")
    assert torch_accuracy > 0.5, torch_accuracy  # it learned the digits (10 classes: chance is 0.1)
    # generated inputs (about N(0, 1)) set activation ranges far too small for 0-255 pixels: the
    # variant saturates; calibrated on real rows it stays near PyTorch
    assert accuracy[True] >= accuracy[False] + 0.2 and accuracy[True] >= torch_accuracy - 0.05, (accuracy, torch_accuracy)
