"""Issue 6: every bad input gets one clear line, the right exit code, no traceback,
and no file (nor hidden staging folder) left behind."""

from __future__ import annotations

import builtins
import logging
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from installing import zoo_command
from reliability_fakes import FakeArchitectures, assert_clean_failure, leftovers

from zoo.cli.commands import cli
from zoo.host.manager import load_zoo

OUT = "out.onnx"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real export shared by the tests that need a good file (exports take seconds)."""
    folder = tmp_path_factory.mktemp("exported")
    path = folder / "binary.onnx"
    result = CliRunner().invoke(cli, ["export", "binary", "-o", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def fake_zoo():
    return load_zoo(entry_points=False, extra=[("fakes", FakeArchitectures())])


def fails_cleanly(run, tmp_path: Path, code: int, args: list[str], *needles: str, zoo=None) -> str:
    line = assert_clean_failure(run(*args, zoo=zoo), code, *needles)
    assert leftovers(tmp_path) == [], "a failed command left files behind"
    return line


# -- names ------------------------------------------------------------------------


def test_unknown_name_suggests_close_matches(run, tmp_path):
    fails_cleanly(run, tmp_path, 2, ["export", "binry", "-o", OUT], "unknown architecture 'binry'", "did you mean", "binary")


def test_unknown_name_without_close_match_points_to_list(run, tmp_path):
    fails_cleanly(run, tmp_path, 2, ["export", "qqqqqq", "-o", OUT], "zoo list")


def test_ambiguous_prefix_lists_candidates(run, tmp_path, fake_zoo):
    # "forward" starts both forward-raises and forward-nan
    fails_cleanly(run, tmp_path, 2, ["export", "forward", "-o", OUT], "ambiguous", "forward-nan", "forward-raises", zoo=fake_zoo)


def test_empty_name_asks_for_one(run, tmp_path):
    fails_cleanly(run, tmp_path, 2, ["export", "", "-o", OUT], "give an architecture name", "zoo list")


def test_unknown_format_points_to_zoo_plugins_which_lists_exporters(run, tmp_path):
    line = fails_cleanly(run, tmp_path, 2, ["export", "binary", "--format", "tflite", "-o", OUT], "unknown exporter 'tflite'")
    assert "run 'zoo plugins' to see the 1 available exporter" in line
    assert "onnx" in run("plugins").stdout  # where the hint sends the user, the exporters are


def test_empty_format_asks_for_an_exporter_name(run, tmp_path):
    fails_cleanly(run, tmp_path, 2, ["export", "binary", "--format", "", "-o", OUT], "give an exporter name", "zoo plugins")


# -- parameters -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "param", "needles"),
    [
        ("binary", "nope=1", ("no parameter 'nope'", "valid parameters", "in_features")),
        ("binary", "in_features", ("KEY=VALUE",)),
        ("binary", "hidden=x", ("hidden='x'", "expected an integer")),
        ("binary", "in_features=2.5", ("expected an integer",)),
        ("binary", "activation=relux", ("expected one of", "relu")),
        ("binary", "in_features=-3", ("positive",)),
        ("binary", "hidden=0", ("positive",)),
        ("stack", "out_features=0", ("positive",)),
        ("multiclass", "n_classes=1", ("n_classes>=2",)),
        ("multiclass", "n_classes=0", ("n_classes>=2",)),
    ],
)
def test_bad_param_is_a_usage_error(run, tmp_path, name, param, needles):
    fails_cleanly(run, tmp_path, 2, ["export", name, "-p", param, "-o", OUT], *needles)


@pytest.mark.parametrize("width", ["-1", "0"])
def test_non_positive_size_is_refused_before_the_plugin_builds(run, tmp_path, fake_zoo, width):
    # the fake's build does not validate width: the core must, before torch raises in Linear(-1, 2)
    fails_cleanly(run, tmp_path, 2, ["show", "wrong-shape", "-p", f"width={width}"], f"width={width}", "positive integer", zoo=fake_zoo)


def test_empty_token_range_is_refused(run, tmp_path, fake_zoo):
    # ids are drawn from [0, vocab_size): vocab_size=0 used to crash in torch.randint
    fails_cleanly(run, tmp_path, 2, ["check", "token-bag", "-p", "vocab_size=0"], "range", "vocab_size", zoo=fake_zoo)


def test_seed_out_of_range(run, tmp_path):
    fails_cleanly(run, tmp_path, 2, ["export", "binary", "--seed", str(2**70), "-o", OUT], "--seed")


@pytest.mark.parametrize("flag", ["--atol", "--rtol"])
def test_negative_tolerance_is_refused_before_work(run, tmp_path, flag):
    fails_cleanly(run, tmp_path, 2, ["export", "binary", flag, "-1", "-o", OUT], flag, ">= 0")


# -- devices ----------------------------------------------------------------------


def test_cuda_without_cuda(run, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    fails_cleanly(run, tmp_path, 2, ["export", "binary", "--device", "cuda", "-o", OUT], "--device cpu")


def test_nonsense_device(run, tmp_path):
    fails_cleanly(run, tmp_path, 2, ["export", "binary", "--device", "tpu9", "-o", OUT], "--device", "cpu", "--help")


# -- click's own parse errors get the same one-line form -----------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--bogus"], ("no such option '--bogus'", " --help')")),
        (["export", "binary", "--bogus"], ("no such option '--bogus'", "export --help")),
        (["verify"], ("missing argument 'FILE'", "verify --help")),
        (["exprot", "binary"], ("no such command 'exprot'",)),
    ],
)
def test_click_usage_errors_are_one_line(run, tmp_path, args, needles):
    fails_cleanly(run, tmp_path, 2, args, *needles)


def test_bare_zoo_still_prints_help(run):
    result = run()
    assert "Commands:" in result.output and "zoo: error" not in result.output


# -- output paths -----------------------------------------------------------------


def test_output_in_missing_folder(run, tmp_path):
    fails_cleanly(run, tmp_path, 2, ["export", "binary", "-o", "no/such/out.onnx"], "does not exist", "create it")


def test_output_under_a_file(run, tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    fails_cleanly(run, tmp_path, 2, ["export", "binary", "-o", "notes.txt/out.onnx"], "is a file, not a folder")


@pytest.mark.parametrize("folder", ["/proc", "/sys"])
def test_output_in_unwritable_folder(run, tmp_path, folder):
    # root passes os.access everywhere; /proc and /sys refuse new files even for root
    if not Path(folder).is_dir():
        pytest.skip(f"no {folder} here")
    fails_cleanly(run, tmp_path, 2, ["export", "binary", "-o", f"{folder}/out.onnx"], "not writable", "-o")
    assert not Path(folder, "out.onnx").exists()


def test_output_is_an_existing_directory(run, tmp_path):
    (tmp_path / "models").mkdir()
    fails_cleanly(run, tmp_path, 2, ["export", "binary", "-o", "models"], "is a directory", "models/model.onnx")
    assert list((tmp_path / "models").iterdir()) == []


def test_report_path_is_a_directory(run, tmp_path):
    (tmp_path / "reports").mkdir()
    fails_cleanly(run, tmp_path, 2, ["verify", "missing.onnx", "--report", "reports"], "is a directory")


@pytest.mark.parametrize("command", [["export", "binary", "-o", OUT], ["verify", OUT]])
def test_report_in_a_missing_folder_is_refused_before_any_work(run, tmp_path, exported, command):
    """A bad --report must not surface after the export: the model file would already be placed."""
    if command[0] == "verify":
        shutil.copy(exported, tmp_path / OUT)
    before = leftovers(tmp_path)
    assert_clean_failure(run(*command, "--report", "nodir/r.json"), 2, "report folder", "does not exist")
    assert leftovers(tmp_path) == before


def test_existing_file_needs_force(run, tmp_path, exported):
    target = tmp_path / OUT
    shutil.copy(exported, target)
    before = target.read_bytes()
    assert_clean_failure(run("export", "binary", "-o", OUT), 2, "already exists", "--force")
    assert target.read_bytes() == before  # refused means untouched
    result = run("export", "binary", "--seed", "7", "-o", OUT, "--force")
    assert result.exit_code == 0, result.output
    assert target.read_bytes() != before  # seed 7 has other weights: the file really was replaced
    assert leftovers(tmp_path) == [OUT]  # and no staging folder is left


# -- opset ------------------------------------------------------------------------


@pytest.mark.parametrize("opset", ["0", "17", "24", "-1"])
def test_opset_out_of_range_is_refused_before_any_work(run, tmp_path, fake_zoo, opset):
    # not-a-module would fail at build time: the opset error must come first
    fails_cleanly(run, tmp_path, 2, ["export", "not-a-module", "--opset", opset, "-o", OUT], f"--opset {opset}", "18 to 23", zoo=fake_zoo)


# -- weights ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch
    from zoo.plugins.seed import binary_sigmoid, multiclass_softmax

    folder = tmp_path_factory.mktemp("weights")
    good = folder / "binary.pt"
    torch.save(binary_sigmoid().state_dict(), good)
    other = folder / "multiclass.pt"
    torch.save(multiclass_softmax().state_dict(), other)
    data = good.read_bytes()
    (folder / "truncated.pt").write_bytes(data[: len(data) // 2])
    (folder / "notes.pt").write_text("these are not weights\n")
    (folder / "weights.txt").write_text("1 2 3\n")
    (folder / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    return {p.name: p for p in folder.iterdir()}


def test_good_weights_load(weight_files):
    # the positive control: the failures below are about the files, not the loader
    from zoo.build.model import build_model

    zoo = load_zoo(entry_points=False)
    built = build_model(zoo.architecture("binary"), weights=weight_files["binary.pt"])
    assert built.weights["sha256"]


@pytest.mark.parametrize(
    ("key", "needles"),
    [
        ("truncated.pt", ("truncated or not a PyTorch weights file", "torch.save")),
        ("notes.pt", ("truncated or not a PyTorch weights file",)),
        ("weights.txt", ("use a .safetensors",)),
        ("truncated.safetensors", ("not a safetensors",)),
        ("multiclass.pt", ("does not fit binary-sigmoid", "shape mismatches")),  # weights of another architecture
    ],
)
def test_bad_weights(run, tmp_path, weight_files, key, needles):
    path = weight_files[key]
    fails_cleanly(run, tmp_path, 2, ["export", "binary", "--weights", str(path), "-o", OUT], *needles)


def test_missing_weights(run, tmp_path):
    fails_cleanly(run, tmp_path, 2, ["export", "binary", "--weights", "nope.pt", "-o", OUT], "does not exist")


class _Payload:
    """Unpickling this opens (creates) the marker file: code run from a weights file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_malicious_pickle_never_runs(run, tmp_path, how):
    import torch

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    payload = {"0.weight": _Payload(marker)}
    if how == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload))
    # Prove the payload is live: an unsafe load does create the marker.
    if how == "torch.save":
        torch.load(evil, weights_only=False)
    else:
        pickle.loads(evil.read_bytes())
    assert marker.exists()
    marker.unlink()
    line = fails_cleanly(run, tmp_path, 2, ["export", "binary", "--weights", str(evil), "-o", OUT], "refused to load", ".safetensors")
    assert not marker.exists(), "zoo ran code from a weights file"
    assert "weights_only=False" not in line  # never advise the unsafe way out


# -- zoo verify -------------------------------------------------------------------


def test_verify_missing_file(run, tmp_path):
    fails_cleanly(run, tmp_path, 2, ["verify", "gone.onnx"], "does not exist")


def test_verify_a_folder(run, tmp_path):
    (tmp_path / "dir.onnx").mkdir()
    assert_clean_failure(run("verify", "dir.onnx"), 2, "is a folder")


def test_verify_unknown_suffix(run, tmp_path):
    Path("model.txt").write_text("hello")
    assert_clean_failure(run("verify", "model.txt"), 2, "not a file any installed exporter reads", "onnx (.onnx)")


def test_verify_non_onnx_file(run, tmp_path):
    Path("fake.onnx").write_text("I am a text file\n")
    assert_clean_failure(run("verify", "fake.onnx"), 2, "not a readable onnx file")


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.95])
def test_verify_truncated_onnx(run, tmp_path, exported, fraction):
    data = exported.read_bytes()
    Path("cut.onnx").write_bytes(data[: int(len(data) * fraction)])
    assert_clean_failure(run("verify", "cut.onnx"), 2, "cut.onnx")


def test_verify_onnx_without_zoo_metadata(run, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    onnx.save(helper.make_model(graph), "plain.onnx")
    assert_clean_failure(run("verify", "plain.onnx"), 2, "no zoo metadata", "zoo export")


def test_verify_with_missing_weights_file(run, tmp_path, exported):
    assert_clean_failure(run("verify", str(exported), "--weights", "nope.pt"), 2, "does not exist")


def test_verify_good_file_passes(run, exported):
    # the positive control for the verify failures above
    result = run("verify", str(exported))
    assert result.exit_code == 0, result.output


# -- architectures with bugs ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        ("forward-raises", ("forward-raises", "forward pass raised", "matmul shapes do not fit")),
        ("forward-nan", ("forward-nan", "NaN")),
        ("wrong-shape", ("wrong-shape", "shape (2, 2), expected (2, 3)")),
        ("not-a-module", ("not-a-module", "plugin 'fakes'", "not a torch.nn.Module")),
    ],
)
def test_broken_architecture_fails_export_cleanly(run, tmp_path, fake_zoo, name, needles):
    fails_cleanly(run, tmp_path, 1, ["export", name, "-o", OUT], *needles, zoo=fake_zoo)


@pytest.mark.parametrize(("mode", "reason"), [("raises", "RuntimeError: no gradient formula for this layer"), ("exits", "SystemExit: 3")])
def test_a_backward_that_raises_is_a_failed_check_in_one_line(run, fake_zoo, mode, reason):
    result = run("check", "backward-plugin", "-p", f"mode={mode}", zoo=fake_zoo)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr == f"zoo: error: backward-plugin: backward pass raised {reason}\n"


def test_a_backward_that_prints_and_warns_keeps_stdout_clean(run, fake_zoo):
    import json

    result = run("check", "backward-plugin", "-p", "mode=talks", "--json", zoo=fake_zoo)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["gradients"]["checked"] is True  # stdout is the JSON alone
    assert "backward says hello" in result.stderr and "backward is approximate" not in result.stderr  # the warning goes to zoo's log (-v)


@pytest.mark.parametrize("name", ["forward-nan", "wrong-shape"])
def test_broken_architecture_fails_check(run, fake_zoo, name):
    result = run("check", name, zoo=fake_zoo)
    assert result.exit_code == 1
    assert "check FAILED" in result.stdout and "Traceback" not in result.output


def test_unexportable_model_names_architecture_and_reason(run, tmp_path, fake_zoo):
    line = fails_cleanly(run, tmp_path, 1, ["export", "data-dependent", "-o", OUT], "could not export data-dependent", "-v", zoo=fake_zoo)
    assert "data-dependent expression" in line  # torch.export's root cause, not its boilerplate
    assert "\x1b[" not in line  # no colour codes from the exporter


def test_unexportable_model_verbose_shows_exporter_reason(run, tmp_path, fake_zoo, caplog):
    # -v logs at INFO (to stderr in a real run; pytest owns the handlers here)
    result = run("-v", "export", "data-dependent", "-o", OUT, zoo=fake_zoo)
    assert result.exit_code == 1
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("zoo."))
    assert "onnx could not export data-dependent" in logged
    assert "torch.export" in logged  # the exporter's own explanation, in full
    assert leftovers(tmp_path) == []


def test_unexportable_model_quiet_logs_nothing(run, tmp_path, fake_zoo, caplog):
    result = run("export", "data-dependent", "-o", OUT, zoo=fake_zoo)
    assert result.exit_code == 1
    assert not [r for r in caplog.records if r.name.startswith("zoo.") and r.levelno < logging.ERROR]


# -- the real console script: no traceback reaches a user ------------------------


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["export", "binry", "-o", OUT], 2, "did you mean"),
        (["export", "binary", "--device", "nonsense", "-o", OUT], 2, "--device"),
        (["export", "binary", "-p", "n_classes=3", "-o", OUT], 2, "no parameter"),
        (["verify", "fake.onnx"], 2, "not a readable onnx file"),
        (["export", "binary", "--weights", "evil.pt", "-o", OUT], 2, "refused to load"),
    ],
)
def test_console_script(tmp_path, args, code, needle):
    import torch

    torch.save({"w": _Payload(tmp_path / "PWNED")}, tmp_path / "evil.pt")
    (tmp_path / "fake.onnx").write_text("not onnx")
    env = {**os.environ, "ZOO_LOAD_PLUGINS": ""}
    proc = subprocess.run(zoo_command() + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [proc.stderr.strip()]
    assert proc.stderr.startswith("zoo: error: ") and needle in proc.stderr
    assert not (tmp_path / "PWNED").exists()
    assert not (tmp_path / OUT).exists()
