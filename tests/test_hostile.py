"""Issue 10: hostile files given to ``zoo verify``, and hostile or buggy plugins.

Each test names the item of the issue it covers. Files are real exports, edited
with the onnx library the way an attacker (or a damaged disk) would.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from reliability_fakes import assert_clean_failure

import zoo
from zoo import Architecture, Input, Output
from zoo.host.manager import DEFAULT_PLUGINS, load_zoo
from zoo.spec.architecture import DEFAULT_TOLERANCES, Tolerance

X = Input("x", ("batch", 4))
Y = Output("y", task="regression", shape=("batch", 2))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """Real exports, made once: binary and three-layer-stack."""
    from click.testing import CliRunner

    from zoo.cli.commands import cli

    folder = tmp_path_factory.mktemp("exports")
    files = {}
    for name in ("binary", "stack"):
        path = folder / f"{name}.onnx"
        result = CliRunner().invoke(cli, ["export", name, "-o", str(path)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        files[name] = path
    return files


def with_metadata(source: Path, target: Path, **changes: str) -> Path:
    """A copy of ``source`` whose ``zoo.*`` metadata has ``changes``."""
    model = onnx.load(source)
    props = {p.key: p.value for p in model.metadata_props}
    props.update({f"zoo.{k}": v for k, v in changes.items()})
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, target)
    return target


# -- 8: metadata decides how much is built ------------------------------------------------


def test_8_metadata_that_would_build_far_more_than_the_file_holds_is_refused(run, exported, tmp_path):
    wide = with_metadata(exported["stack"], tmp_path / "wide.onnx", params=json.dumps({"width": 20000}))
    start = time.perf_counter()
    result = run("verify", str(wide))
    line = assert_clean_failure(result, 2, "zoo.params would build", "the metadata does not describe this file")
    assert time.perf_counter() - start < 10, "refused from sizes, before a 1.9 GB build"
    assert "holds 683" in line

    deep = with_metadata(exported["binary"], tmp_path / "deep.onnx", params=json.dumps({"hidden": [4] * 200_000}))
    start = time.perf_counter()
    assert_clean_failure(run("verify", str(deep)), 2, "the metadata does not describe this file")
    assert time.perf_counter() - start < 10, "the dry build stops at the file's size, not after 200,000 layers"


def test_8_a_folded_file_still_verifies(run, tmp_path):
    assert run("export", "stack", "--fold-linear", "-o", "folded.onnx").exit_code == 0
    result = run("verify", "folded.onnx")
    assert result.exit_code == 0, result.output


def test_8_the_onnx_exporter_counts_the_weights_a_file_holds(exported):
    from zoo.exporters.onnx import count_weights

    assert count_weights(exported["binary"]) == (55, 220)


# -- 9: a Loop of 2**62 iterations ----------------------------------------------------------


def endless_loop(metadata_from: Path, target: Path) -> Path:
    """A valid graph with binary-sigmoid's inputs, outputs and zoo metadata whose
    Loop runs 2**62 times."""
    real = onnx.load(metadata_from)
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["batch", 8]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["batch", 8]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Loop", ["trips", "go", "x"], ["v"], body=body),
            helper.make_node("ReduceSum", ["v", "axes"], ["s"], keepdims=1),
            helper.make_node("Sigmoid", ["s"], ["probability"]),
        ],
        "endless",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            helper.make_tensor("trips", TensorProto.INT64, [], [2**62]),
            helper.make_tensor("go", TensorProto.BOOL, [], [True]),
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=real.ir_version)
    helper.set_model_props(model, {p.key: p.value for p in real.metadata_props})
    onnx.save(model, target)
    return target


def test_9_verify_stops_an_endless_loop_at_the_timeout(run, exported, tmp_path):
    loop = endless_loop(exported["binary"], tmp_path / "loop.onnx")
    start = time.perf_counter()
    result = run("verify", str(loop), "--timeout", "2")
    elapsed = time.perf_counter() - start
    assert_clean_failure(result, 1, "verification timed out after 2 s (--timeout)")
    assert elapsed < 2 + 4, elapsed


def test_9_the_running_session_itself_is_stopped(exported, tmp_path):
    from zoo.exporters.onnx import load

    from zoo.errors import VerificationFailed
    from zoo.verification.run import run_stoppable

    runner = load(endless_loop(exported["binary"], tmp_path / "loop.onnx"), "cpu")
    feed = {"x": np.zeros((2, 8), np.float32)}
    before = {t.ident for t in threading.enumerate()}
    start = time.perf_counter()
    with pytest.raises(VerificationFailed, match="timed out after 1 s"):
        run_stoppable(runner, feed, time.monotonic() + 1, 1)
    assert time.perf_counter() - start < 1 + 2
    left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == [], "RunOptions.terminate ended onnxruntime's run: no thread keeps spinning"


def test_9_ctrl_c_interrupts_a_running_session(exported, tmp_path):
    """Ctrl-C (a real SIGINT) while onnxruntime runs: before, the main thread sat in
    session.run and never saw it."""
    from zoo.exporters.onnx import load

    from zoo.verification.run import run_stoppable

    runner = load(endless_loop(exported["binary"], tmp_path / "loop.onnx"), "cpu")
    before = {t.ident for t in threading.enumerate()}
    ctrl_c = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    ctrl_c.start()
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_stoppable(runner, {"x": np.zeros((2, 8), np.float32)}, None, None)
    assert time.perf_counter() - start < 1 + 2
    ctrl_c.join()
    assert [t for t in threading.enumerate() if t.ident not in before and t.is_alive()] == []


# -- 10: a side file far larger than its tensors ------------------------------------------


@pytest.fixture
def external(run, monkeypatch) -> Path:
    from zoo.exporters import onnx as onnx_exporter

    monkeypatch.setattr(onnx_exporter, "EXTERNAL_DATA_BYTES", 0)  # every model counts as large
    assert run("export", "stack", "-p", "width=64", "-o", "m.onnx").exit_code == 0  # tensors over 1 kB go to the side file
    assert Path("m.onnx.data").stat().st_size > 16_000
    return Path("m.onnx")


def test_10_a_huge_sparse_side_file_is_refused_before_it_is_read(run, external):
    assert run("verify", str(external)).exit_code == 0  # parsed and cached: the check must run again
    with open("m.onnx.data", "r+b") as f:
        f.truncate(50 * 2**30)  # sparse: 50 GiB that cost nothing on disk
    start = time.perf_counter()
    result = run("verify", str(external))
    assert_clean_failure(result, 2, "side file m.onnx.data is 53,687,091,200 bytes", "it is not this model's data")
    assert time.perf_counter() - start < 5, "refused from sizes, not after reading 50 GiB"


def test_10_a_tensor_past_the_end_of_its_side_file_is_refused(run, external):
    with open("m.onnx.data", "r+b") as f:
        f.truncate(16)
    assert_clean_failure(run("verify", str(external)), 2, "lies past the end of m.onnx.data")


def test_10_a_side_file_outside_the_model_folder_is_refused(run, external):
    model = onnx.load(external, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../../etc/passwd"
    onnx.save(model, "evil.onnx")
    assert_clean_failure(run("verify", "evil.onnx"), 2, "only a file beside the model is read")


# -- 16: a model that cannot be built ---------------------------------------------------


@pytest.mark.parametrize("value", ["1000000", str(10**30)])
def test_16_parameters_that_cannot_be_built_are_a_usage_error(run, value):
    line = assert_clean_failure(run("show", "stack", "-p", f"width={value}"), 2, "three-layer-stack", f"width={value}")
    assert "plugin" not in line and "frame" not in line.lower()


def test_16_damaged_metadata_for_a_tuple_parameter_is_a_usage_error(run, exported, tmp_path):
    damaged = with_metadata(exported["binary"], tmp_path / "d.onnx", params=json.dumps({"hidden": 4}))
    assert_clean_failure(run("verify", str(damaged)), 2, "binary-sigmoid cannot be built with hidden=4", "TypeError")


def test_16_a_build_that_fails_with_its_defaults_is_still_the_plugins_fault(run):
    def broken():
        raise RuntimeError("weights.bin missing")

    class Plugin:
        @zoo.hookimpl
        def register_architectures(self, register):
            register(Architecture(name="broken-defaults", build=broken, inputs=(X,), outputs=(Y,)))

    z = load_zoo(entry_points=False, extra=[("brokenplug", Plugin())])
    assert_clean_failure(run("check", "broken-defaults", zoo=z), 1, "plugin 'brokenplug'", "failed to build")


# -- 11, 12: plugin prints and sys.exit ----------------------------------------------------


def noisy_build():
    from torch import nn

    print("hello from build")
    return nn.Linear(4, 2)


def exits_in_build():
    sys.exit(5)


class Noisy:
    @zoo.hookimpl
    def register_architectures(self, register):
        print("hello from the hook")
        register(Architecture(name="noisy-net", build=noisy_build, inputs=(X,), outputs=(Y,)))
        register(Architecture(name="noisy-exits", build=exits_in_build, inputs=(X,), outputs=(Y,)))


def plugin_module(tmp_path: Path, monkeypatch, name: str, source: str) -> str:
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_11_plugin_prints_never_reach_stdout(run, tmp_path, monkeypatch, capsys):
    module = plugin_module(tmp_path, monkeypatch, "loud_plugin", "print('hello from import')\n")
    z = load_zoo(builtins=(*DEFAULT_PLUGINS, module), entry_points=False, extra=[("noisy", Noisy())])
    out, err = capsys.readouterr()
    assert out == "" and "hello from import" in err and "hello from the hook" in err
    listed = run("list", "--json", zoo=z)
    assert {"noisy-exits", "noisy-net"} <= {a["name"] for a in json.loads(listed.stdout)}
    exported = run("export", "noisy-net", "--json", zoo=z)
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["architecture"] == "noisy-net"
    assert "hello from build" in exported.stderr


def test_12_sys_exit_in_a_build_is_that_architectures_failure(run):
    z = load_zoo(entry_points=False, extra=[("noisy", Noisy())])
    result = run("export", "noisy-*", "--all", "--json", zoo=z)
    assert result.exit_code == 1
    records = {r["architecture"]: r for r in json.loads(result.stdout)}
    assert records["noisy-net"]["status"] == "ok", records["noisy-net"]
    assert "plugin 'noisy'" in records["noisy-exits"]["error"] and "SystemExit" in records["noisy-exits"]["error"]


def test_12_a_real_ctrl_c_still_stops_everything(run):
    def interrupted():
        raise KeyboardInterrupt

    class Plugin:
        @zoo.hookimpl
        def register_architectures(self, register):
            register(Architecture(name="ctrlc-a", build=interrupted, inputs=(X,), outputs=(Y,)))
            register(Architecture(name="ctrlc-b", build=noisy_build, inputs=(X,), outputs=(Y,)))

    z = load_zoo(entry_points=False, extra=[("ctrlc", Plugin())])
    result = run("export", "ctrlc-*", "--all", zoo=z)
    assert result.exit_code == 130
    assert "ctrlc-b" not in result.stderr  # the second export never started


def test_12_a_base_exception_at_import_names_the_plugin(tmp_path, monkeypatch):
    module = plugin_module(tmp_path, monkeypatch, "odd_plugin", "class Odd(BaseException): pass\nraise Odd('no')\n")
    z = load_zoo(builtins=(*DEFAULT_PLUGINS, module), entry_points=False)
    assert z.plugins["odd_plugin"].status == "failed"
    assert any("odd_plugin" in p and "Odd" in p for p in z.problems)


# -- 13: shared tables are read-only ------------------------------------------------------


def test_13_a_plugin_cannot_loosen_the_default_tolerances(tmp_path, monkeypatch):
    source = (
        "from zoo.spec.architecture import DEFAULT_TOLERANCES, Tolerance\n"
        "DEFAULT_TOLERANCES[('cpu', 'float32')] = Tolerance(1.0, 1.0)\n"
    )
    module = plugin_module(tmp_path, monkeypatch, "loosening_plugin", source)
    z = load_zoo(builtins=(*DEFAULT_PLUGINS, module), entry_points=False)
    assert z.plugins["loosening_plugin"].status == "failed"
    assert DEFAULT_TOLERANCES[("cpu", "float32")] == Tolerance(1e-4, 1e-5)
    from zoo.plugins.tasks import BUILTIN_TASKS

    from zoo.checking.task_calls import LOSS_TOLERANCES, SUM_TOLERANCES, TINY
    from zoo.spec.architecture import DEFAULT_SAMPLE

    for table in (DEFAULT_SAMPLE, BUILTIN_TASKS, LOSS_TOLERANCES, SUM_TOLERANCES, TINY):
        with pytest.raises(TypeError):
            table["x"] = 1  # type: ignore[index]


# -- 14: a plugin whose import hangs ------------------------------------------------------


def test_14_a_slow_plugin_import_is_named(tmp_path, monkeypatch, capsys):
    from zoo.host import manager

    monkeypatch.setattr(manager, "SLOW_IMPORT_S", 0.2)
    module = plugin_module(tmp_path, monkeypatch, "sleepy_plugin", "import time\ntime.sleep(1.0)\n")
    load_zoo(builtins=(*DEFAULT_PLUGINS, module), entry_points=False)
    err = capsys.readouterr().err
    assert "zoo: still importing plugin 'sleepy_plugin'" in err and "ZOO_LOAD_PLUGINS= skips third-party plugins" in err
    assert "still importing plugin 'seed'" not in err  # fast imports say nothing


# -- 15: no traceback ----------------------------------------------------------------------


def test_15_metadata_nested_100000_deep_is_damaged_metadata(run, exported, tmp_path):
    nested = with_metadata(exported["binary"], tmp_path / "n.onnx", params="[" * 100_000)
    assert_clean_failure(run("verify", str(nested)), 2, "damaged zoo metadata", "RecursionError")


@pytest.mark.parametrize(
    "args", [("verify", "{long}.onnx"), ("export", "binary", "-o", "{long}.onnx"), ("export", "binary", "--report", "{long}.json")]
)
def test_15_a_file_name_over_255_bytes_is_one_line(run, args):
    long = "a" * 300
    assert_clean_failure(run(*(a.format(long=long) for a in args)), 2, "File name too long")


def test_15_a_folder_without_search_permission_is_one_line(run, exported, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root bypasses folder permissions: nothing to refuse")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        assert_clean_failure(run("verify", str(locked / "m.onnx")), 2, "Permission denied")
    finally:
        locked.chmod(0o700)


def test_15_bench_refuses_a_batch_that_would_not_fit_before_any_work(run):
    start = time.perf_counter()
    assert_clean_failure(run("bench", "binary", "--batch-sizes", "1000000000"), 2, "batch=1000000000", "memory available")
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("command", [["list"], ["list", "--json"]])
def test_15_a_full_stdout_is_one_line(command):
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "zoo", *command], stdout=full, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "ZOO_LOAD_PLUGINS": ""}, timeout=120,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "zoo: error: cannot write to standard output: No space left on device (ENOSPC); the result was not printed (files written stay)"
    ]


def test_15_a_memory_limit_is_one_line(tmp_path):
    """Under ``ulimit -v`` torch's allocator fails: one line, exit 2, no C++ frames."""
    script = (
        "import resource, sys, torch\n"
        "resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))\n"
        "from zoo.entry import main\n"
        "sys.argv = ['zoo', 'show', 'stack', '-p', 'width=40000']\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "ZOO_LOAD_PLUGINS": ""}, timeout=120
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error: three-layer-stack"), lines


# -- 17: tolerances and repeated parameters ------------------------------------------------


@pytest.mark.parametrize("flag,value", [("--rtol", "1"), ("--atol", "5"), ("--rtol", "inf"), ("--atol", "nan")])
def test_17_tolerances_must_be_finite_and_below_1(run, exported, flag, value):
    assert_clean_failure(run("verify", str(exported["binary"]), flag, value), 2, flag, ">= 0 and below 1")


def test_17_a_repeated_parameter_is_an_error(run):
    assert_clean_failure(run("show", "binary", "-p", "hidden=4", "-p", "hidden=5"), 2, "--param hidden is given twice")


# -- 19: strict JSON, NaN reported as NaN --------------------------------------------------


def test_19_nan_is_reported_as_nan_not_inf():
    from zoo.verification.compare import compare

    ref = np.array([1.0, 2.0], np.float32)
    stats = compare(ref, np.array([1.0, np.nan], np.float32), Tolerance(1e-4, 1e-5))
    assert math.isnan(stats["max_abs"]) and not stats["ok"]
    stats = compare(ref, np.array([1.0, np.inf], np.float32), Tolerance(1e-4, 1e-5))
    assert stats["max_abs"] == math.inf and not stats["ok"]


def nan_default(scale: float = float("nan")):
    from torch import nn

    return nn.Linear(4, 2)


def test_19_a_nan_parameter_default_is_strict_json(run):
    class Plugin:
        @zoo.hookimpl
        def register_architectures(self, register):
            register(Architecture(name="nan-default", build=nan_default, inputs=(X,), outputs=(Y,)))

    z = load_zoo(entry_points=False, extra=[("nanplug", Plugin())])
    for args in (["list", "--json"], ["show", "nan-default", "--json"]):
        text = run(*args, zoo=z).stdout
        assert "NaN" in text
        json.loads(text, parse_constant=lambda token: pytest.fail(f"non-strict JSON token {token}"))


@pytest.mark.parametrize("budget", ["nan", "inf"])
def test_19_bench_refuses_a_budget_that_is_not_a_number(run, budget):
    assert_clean_failure(run("bench", "binary", "--budget", budget), 2, "--budget")


# -- 20: static metadata, ZOO_LOAD_PLUGINS, warnings -------------------------------------


def test_20_static_metadata_on_a_dynamic_file_is_refused(run, exported, tmp_path):
    lying = with_metadata(exported["binary"], tmp_path / "s.onnx", static="true")
    assert_clean_failure(run("verify", str(lying)), 1, "zoo.static", "dynamic dimensions (batch)")


def test_20_zoo_load_plugins_accepts_zoos_own_distribution():
    z = load_zoo(env={"ZOO_LOAD_PLUGINS": "zoo-onnx"})
    assert z.problems == []


def warning_build():
    import warnings

    from torch import nn

    warnings.warn("enable_nested_tensor is True, but self.use_nested_tensor is False", UserWarning, stacklevel=1)
    return nn.Linear(4, 2)


def test_20_plugin_warnings_go_to_zoos_log(run, caplog):
    class Plugin:
        @zoo.hookimpl
        def register_architectures(self, register):
            register(Architecture(name="warns", build=warning_build, inputs=(X,), outputs=(Y,)))

    z = load_zoo(entry_points=False, extra=[("warnplug", Plugin())])
    with caplog.at_level(logging.INFO, logger="zoo"):
        quiet = run("check", "warns", zoo=z)
    assert quiet.exit_code == 0 and "nested" not in quiet.output + quiet.stderr
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("zoo.host.") and r.levelname == "INFO"]
    assert any("UserWarning: enable_nested_tensor is True" in m for m in logged)  # shown with -v


def test_18_a_model_that_changes_its_input_in_place_verifies(run):
    """onnxruntime gets copies taken before PyTorch's forward changed the inputs."""
    from torch import nn

    class Doubling(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x):
            x.mul_(2)  # in place, on the caller's tensor
            return self.linear(x)

    class Plugin:
        @zoo.hookimpl
        def register_architectures(self, register):
            register(Architecture(name="doubling", build=Doubling, inputs=(Input("x", ("batch", 4)),), outputs=(Output("y"),)))

    z = load_zoo(entry_points=False, extra=[("doubling", Plugin())])
    result = run("export", "doubling", "-o", "d.onnx", zoo=z)
    assert result.exit_code == 0, result.stderr
