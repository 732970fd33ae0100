"""Issue 23: the third hostile round — task plugins, --jobs, npz members, foreign files.

Each test names the case of the issue it covers, and fails without its fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from reliability_fakes import assert_clean_failure

import zoo
from zoo.host.manager import load_zoo

REPO = Path(__file__).resolve().parent.parent


# -- npz members -----------------------------------------------------------------------------------


def npy_bytes(header: str) -> bytes:
    """A .npy member with ``header`` (a dict literal) and no data."""
    text = header.encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    return b"\x93NUMPY\x01\x00" + (len(text) + pad + 1).to_bytes(2, "little") + text + b" " * pad + b"\n"


def write_zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def good_x() -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 8), np.float32))
    return buffer.getvalue()


def npz_case(tmp_path: Path, case: str) -> Path:
    path = tmp_path / "in.npz"
    if case == "huge header shape":
        return write_zip(path, {"x.npy": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4000000000, 8000000000), }")})
    if case == "pickled member":
        return write_zip(path, {"x.npy": npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (2, 8), }") + b"\x80\x04N."})
    if case == "not an npy member":
        return write_zip(path, {"x.npy": good_x(), "notes.txt": b"hello"})
    if case == "bzip2 member":
        return write_zip(path, {"x.npy": good_x()}, zipfile.ZIP_BZIP2)
    if case == "encrypted member":
        write_zip(path, {"x.npy": good_x()})
        data = bytearray(path.read_bytes())
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the general-purpose flag: bit 0, encrypted
            at = data.find(signature)
            data[at + offset] |= 1
        path.write_bytes(bytes(data))
        return path
    if case == "truncated data":
        return write_zip(path, {"x.npy": good_x()[:-16]})
    raise AssertionError(case)


NPZ_CASES = {
    "huge header shape": "over the",
    "pickled member": "needs pickle",
    "not an npy member": "not an .npy array",
    "bzip2 member": "compression method",
    "encrypted member": "encrypted",
    "truncated data": "damaged",
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_npz_members_are_validated_before_any_array_is_built(run, tmp_path, case):
    npz_case(tmp_path, case)
    assert_clean_failure(run("export", "binary", "-o", "m.onnx", "--inputs", "in.npz"), 2, "--inputs in.npz", NPZ_CASES[case])


def test_a_good_npz_still_reads(run, tmp_path):
    np.savez_compressed(tmp_path / "in.npz", x=np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32))
    assert run("export", "binary", "-o", "m.onnx", "--inputs", "in.npz").exit_code == 0


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero"])
def test_an_inputs_path_that_is_not_a_file_says_what_it_is(run, tmp_path, kind):
    if kind == "fifo":
        os.mkfifo(tmp_path / "in.npz")
    else:
        os.symlink("/dev/zero", tmp_path / "in.npz")
    expected = "is a FIFO" if kind == "fifo" else "is a character device"
    line = assert_clean_failure(run("export", "binary", "-o", "m.onnx", "--inputs", "in.npz"), 2, expected, "not a regular file")
    assert "does not exist" not in line


def test_many_unknown_keys_make_a_short_line(run, tmp_path):
    np.savez(tmp_path / "in.npz", x=np.zeros((2, 8), np.float32), **{f"k{i}": np.zeros(1) for i in range(900)})
    line = assert_clean_failure(run("export", "binary", "-o", "m.onnx", "--inputs", "in.npz"), 2, "unknown key(s)", "and 895 more")
    assert len(line) < 400


# -- task plugins run guarded ----------------------------------------------------------------------


def _mse(output, prediction, target):
    return ((prediction - target) ** 2).mean()


def _mse_numpy(output, y, t, dtype):
    return float(np.mean((y - t) ** 2))


def _normal(output, prediction, generator):
    import torch

    return torch.randn(prediction.shape, generator=generator)


def _raise(error):
    def function(*args):
        raise error

    return function


def _returns(value):
    return lambda *args: value() if callable(value) else value


def _exits(*args):
    sys.exit(0)


def _prints_then(function):
    def printing(*args):
        print("hello from the task")
        os.write(1, b"raw fd 1 from the task\n")
        return function(*args)

    return printing


def _wrong_shape_target(output, prediction, generator):
    import torch

    return torch.zeros(3)


def _tensor_loss(output, prediction, target):
    return (prediction - target) ** 2  # not reduced: a tensor of the output's shape


BAD_TASK_FUNCTIONS = {
    "torch_loss raises": ("torch_loss", _raise(RuntimeError("loss exploded")), "RuntimeError: loss exploded"),
    "closed form divides by zero": ("closed_form_loss", _raise(ZeroDivisionError("division by zero")), "ZeroDivisionError"),
    "targets raise": ("make_target", _raise(KeyError("labels")), "KeyError"),
    "head checks raise": ("head_checks", _raise(RuntimeError("no checks")), "head_checks raised"),
    "torch_loss returns a float": ("torch_loss", _returns(0.5), "not a one-element tensor"),
    "torch_loss returns a tensor of the wrong shape": ("torch_loss", _tensor_loss, "not a one-element tensor"),
    "closed form returns a string": ("closed_form_loss", _returns("zero"), "not a number"),
    "targets of the wrong shape": ("make_target", _wrong_shape_target, "not a tensor of shape"),
    "head checks return garbage": ("head_checks", _returns([1, 2]), "not a list of zoo.HeadCheck"),
    "sys.exit in the loss": ("torch_loss", _exits, "SystemExit"),
}


def task_zoo(**functions):
    """A zoo with task 'custom' (an MSE regression task with ``functions`` replaced) and architecture 'custom-net'."""
    task = zoo.Task(name="custom", heads={None: "mse"}, torch_loss=_mse, closed_form_loss=_mse_numpy, make_target=_normal)
    task = dataclasses.replace(task, **functions)

    class Plugin:
        @zoo.hookimpl
        def register_tasks(self, register):
            register(task)

        @zoo.hookimpl
        def register_architectures(self, register):
            def build(features: int = 4):
                from torch import nn

                return nn.Sequential(nn.Linear(features, 8), nn.ReLU(), nn.Linear(8, 2))

            register(zoo.Architecture(name="custom-net", build=build, inputs=(zoo.Input("x", ("batch", "features")),),
                                      outputs=(zoo.Output("y", task="custom", shape=("batch", 2)),)))

    the_zoo = load_zoo(entry_points=False, extra=[("custom-tasks", Plugin())])
    assert not the_zoo.problems, the_zoo.problems
    return the_zoo


@pytest.mark.parametrize("case", sorted(BAD_TASK_FUNCTIONS))
@pytest.mark.parametrize("as_json", [False, True])
def test_a_task_that_breaks_its_contract_fails_check_in_one_line_naming_it(run, case, as_json):
    field, function, needle = BAD_TASK_FUNCTIONS[case]
    result = run("check", "custom-net", *(["--json"] if as_json else []), zoo=task_zoo(**{field: function}))
    assert_clean_failure(result, 1, "task 'custom' (plugin 'custom-tasks')", field, needle)
    if as_json:
        record = json.loads(result.stdout)
        assert record["status"] == "failed" and record["exit_code"] == 1


@pytest.mark.parametrize("garbage", [("threshold", float("nan")), ("threshold", 7.0), "all good", ("threshold", "1")])
def test_a_task_agreement_that_returns_garbage_or_nan_fails_the_export(run, tmp_path, garbage):
    result = run("export", "custom-net", "-o", "m.onnx", zoo=task_zoo(agreement=_returns(garbage)))
    assert result.exit_code == 1, result.output
    assert "agreement returned" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("command", [["check", "custom-net"], ["export", "custom-net", "-o", "m.onnx"], ["bench", "custom-net", "--batch-sizes", "1"]])
def test_a_task_that_prints_cannot_break_json(run, command):
    the_zoo = task_zoo(torch_loss=_prints_then(_mse), closed_form_loss=_prints_then(_mse_numpy), make_target=_prints_then(_normal))
    result = run(*command, "--json", zoo=the_zoo)
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)
    assert "hello from the task" in result.stderr


# -- stdout owned by zoo at the file descriptor -----------------------------------------------------

FD_PLUGIN = '''
import os
import zoo
from zoo import Architecture, Input, Output

os.write(1, b"import writes to fd 1\\n")

def build(width: int = 3):
    from torch import nn
    os.write(1, b"build writes to fd 1\\n")
    print("build prints")
    return nn.Linear(4, width)

@zoo.hookimpl
def register_architectures(register):
    os.write(1, b"hook writes to fd 1\\n")
    for name in ("fd-net", "fd-net2"):
        register(Architecture(name=name, build=build, inputs=(Input("x", ("batch", 4)),),
                              outputs=(Output("y", task="regression", shape=("batch", "width")),)))
'''


def zoo_program(tmp_path: Path, *args: str, plugin: str | None = None, **kw) -> subprocess.CompletedProcess[str]:
    """The real ``zoo`` program, with ``plugin`` (module source) installed as distribution zoo-hostile."""
    from test_faults import write_distribution

    env = {**os.environ, "ZOO_LOAD_PLUGINS": ""}
    if plugin is not None:
        site = tmp_path / "site"
        if not site.exists():
            write_distribution(site, "zoo-hostile", {"hostile": "zoo_hostile_plugin"}, {"zoo_hostile_plugin": plugin})
        env.update(PYTHONPATH=str(site), ZOO_LOAD_PLUGINS="zoo-hostile")
    env.update(kw.pop("env", {}))
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=kw.pop("timeout", 300), **kw)


@pytest.mark.parametrize("command", [["show", "fd-net", "--json"], ["export", "fd-net", "-o", "m.onnx", "--json"]])
def test_plugin_writes_to_descriptor_1_land_on_stderr(tmp_path, command):
    done = zoo_program(tmp_path, *command, plugin=FD_PLUGIN)
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)  # strict JSON: nothing of the plugin's in it
    for line in ("import writes to fd 1", "hook writes to fd 1", "build writes to fd 1", "build prints"):
        assert line in done.stderr


def test_workers_writes_to_descriptor_1_land_on_stderr(tmp_path):
    done = zoo_program(tmp_path, "export", "--all", "fd-*", "-o", "out", "--jobs", "2", "--json", plugin=FD_PLUGIN)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 2
    assert "build writes to fd 1" in done.stderr


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_a_closed_standard_stream_is_one_line_not_a_traceback(tmp_path, closed):
    fd = 1 if closed == "stdout" else 2
    done = zoo_program(tmp_path, "export", "binary", "-o", "m.onnx", pass_fds=(), preexec_fn=lambda: os.close(fd))
    assert "Traceback" not in done.stderr + done.stdout
    if closed == "stdout":  # the model is placed; the summary could not be printed
        assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith("zoo: error: cannot write to standard output")
    else:
        assert done.returncode == 0
    assert (tmp_path / "m.onnx").exists()


def test_a_long_zoo_load_plugins_is_one_short_warning(tmp_path):
    done = zoo_program(tmp_path, "list", env={"ZOO_LOAD_PLUGINS": ",".join(f"d{i}" for i in range(20_000))})
    assert done.returncode == 0
    warnings = [line for line in done.stderr.splitlines() if line.startswith("zoo: warning")]
    assert len(warnings) == 1 and len(warnings[0]) < 300, done.stderr[:500]


# -- plugin commands, the environment, long user text -----------------------------------------------


def test_a_plugin_command_that_raises_is_one_line_naming_it(run):
    import click

    class Commands:
        @zoo.hookimpl
        def register_commands(self, cli):
            @cli.command("explode")
            def explode():
                click.echo("before")
                raise ZeroDivisionError("division by zero")

    result = run("explode", zoo=load_zoo(entry_points=False, extra=[("boom", Commands())]))
    assert_clean_failure(result, 1, "command 'explode' (plugin 'boom') raised ZeroDivisionError")
    assert result.stdout == "before\n"


def test_a_deleted_working_folder_is_a_usage_error_with_a_json_record(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    code = f"import os, sys; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); sys.argv = ['zoo', 'show', 'binary', '--json']; from zoo.entry import main; main()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "ZOO_LOAD_PLUGINS": ""}, timeout=120)
    assert done.returncode == 2, done.stderr
    assert json.loads(done.stdout)["exit_code"] == 2
    assert done.stderr.strip() == "zoo: error: the current folder was deleted; cd into a folder that exists and run the command again"


def test_a_long_architecture_name_is_cut_in_the_error_line(run):
    line = assert_clean_failure(run("show", "a" * 10_000), 2, "unknown architecture")
    assert len(line) < 300


def test_a_shard_with_thousands_of_digits_is_a_usage_error(run):
    line = assert_clean_failure(run("export", "--all", "--shard", "1/" + "9" * 5000), 2, "--shard", "write I/N")
    assert len(line) < 300


def _with_labels():
    import torch
    from torch import nn

    class WithLabels(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

        def forward(self, x):
            y = self.body(x)
            return y, torch.argmax(y, dim=-1)

    return WithLabels()


def test_an_int8_variant_of_a_model_with_an_int64_output_prints_its_summary(run, tmp_path):
    class Plugin:
        @zoo.hookimpl
        def register_architectures(self, register):
            register(zoo.Architecture(name="labels-net", build=_with_labels, inputs=(zoo.Input("x", ("batch", 8)),),
                                      outputs=(zoo.Output("y", task="regression", shape=("batch", 3)), zoo.Output("label", shape=("batch",)))))

    result = run("export", "labels-net", "-o", "m.onnx", "--quantize", "int8", "--max-error", "1", "--max-loss-change", "1",
                 zoo=load_zoo(entry_points=False, extra=[("labels", Plugin())]))
    assert "Traceback" not in result.output and "KeyError" not in result.output
    if result.exit_code == 0:
        assert (tmp_path / "m.onnx").exists() and "label" in result.stdout
    else:  # not accepted: then nothing is placed
        assert result.exit_code == 1 and not (tmp_path / "m.onnx").exists(), result.output


# -- a file does not choose its own verdict ----------------------------------------------------------


def off_by(source: Path, target: Path, factor: float, **meta: str) -> Path:
    """``source`` with every weight scaled by ``factor`` and ``meta`` added to its zoo metadata."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(source)
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array((array * factor).astype(np.float32), init.name))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({f"zoo.{k}": v for k, v in meta.items()})
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, target)
    return target


def test_a_file_cannot_loosen_its_own_acceptance_criteria(run, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    assert run("export", "stack", "-o", "good.onnx").exit_code == 0
    loose = json.dumps({"min_agreement": 0.0, "max_loss_change": 1.0, "max_error": 1.0})
    off_by(tmp_path / "good.onnx", tmp_path / "scaled.onnx", 1.05)  # weights 5% off, then really int8
    quantize_dynamic(tmp_path / "scaled.onnx", tmp_path / "int8.onnx", weight_type=QuantType.QInt8)
    off_by(tmp_path / "int8.onnx", tmp_path / "off.onnx", 1.0, variant="int8", acceptance=loose)
    result = run("verify", "off.onnx", "--json")
    assert result.exit_code == 1, result.output
    record = json.loads(result.stdout)
    assert record["variant"]["criteria_from"] == {"min_agreement": "default", "max_loss_change": "default", "max_error": "default"}
    assert "looser than zoo's" in result.stderr and "zoo: error:" in result.stderr and "Traceback" not in result.output
    confirmed = run("verify", "off.onnx", "--accept-recorded", "--json")
    assert confirmed.exit_code == 0, confirmed.output
    assert json.loads(confirmed.stdout)["variant"]["criteria_from"]["max_error"] == "file"
    again = run("verify", "off.onnx", "--max-error", "1", "--max-loss-change", "1", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["variant"]["criteria_from"]["max_error"] == "option"


def test_a_float_file_does_not_earn_a_variants_criteria_by_claiming_one(run, tmp_path):
    """zoo.variant on a file with no int8 computation: judged by tolerances, not by int8's looser criteria."""
    assert run("export", "stack", "-o", "good.onnx").exit_code == 0
    loose = json.dumps({"min_agreement": 0.0, "max_loss_change": 1.0, "max_error": 1.0})
    off_by(tmp_path / "good.onnx", tmp_path / "off.onnx", 1.05, variant="int8", acceptance=loose)
    for extra in ((), ("--accept-recorded",)):
        result = run("verify", "off.onnx", *extra, "--json")
        assert "Traceback" not in result.output
        assert "off.onnx claims to be an int8 variant (zoo.variant), but it holds no int8 computation: judged as a float file" in result.stderr
        if extra:  # nothing recorded is applied to a float file
            assert result.exit_code == 2 and result.stderr.splitlines()[-1].startswith("zoo: error: off.onnx is not a variant"), result.stderr
        else:
            assert result.exit_code == 1 and json.loads(result.stdout)["variant"] is None, result.output
            assert "differs from PyTorch" in result.stderr
    assert run("verify", "good.onnx").exit_code == 0  # the same file, honestly labelled and unmodified, passes


@pytest.mark.parametrize("meta", [{"acceptance": "[" * 100_000 + "]" * 100_000}, {"opset": "²"}])
def test_damaged_metadata_is_one_line(run, tmp_path, meta):
    from test_hostile import with_metadata

    assert run("export", "binary", "--quantize", "int8", "-o", "good.onnx").exit_code == 0  # a variant: its zoo.acceptance is read
    with_metadata(tmp_path / "good.onnx", tmp_path / "bad.onnx", **meta)
    result = run("verify", "bad.onnx")
    assert "Traceback" not in result.output and result.exit_code in (0, 2), result.output
    if "acceptance" in meta:
        assert_clean_failure(result, 2, "damaged zoo metadata")


# -- --timeout covers session creation, and stops a runtime without aborting the process -----------


def test_timeout_covers_loading_the_file(run, tmp_path):
    import time

    the_zoo = load_zoo(entry_points=False)
    real = the_zoo.exporters.get("onnx")

    def slow_load(path, device):
        time.sleep(20)  # constant folding of a hostile graph at session creation
        return real.load(path, device)

    the_zoo.exporters.add(dataclasses.replace(real, name="onnx-slow", load=slow_load).with_plugin("test"))
    assert run("export", "stack", "-o", "m.onnx").exit_code == 0
    from zoo.build.model import build_model
    from zoo.errors import VerificationFailed
    from zoo.verification.run import verify_files

    built = build_model(the_zoo.architecture("stack"))
    started = time.monotonic()
    with pytest.raises(VerificationFailed, match=r"timed out after 1 s \(--timeout\)"):
        verify_files(built, the_zoo.exporters.get("onnx-slow"), tmp_path / "m.onnx", static=False, timeout=1.0)
    assert time.monotonic() - started < 10


def loop_bomb(target: Path) -> Path:
    """A model for 'stack' (x: batch×10 -> prediction: batch×5) whose Loop runs 10^15 times."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "zero"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.zeros(1, np.float32), "zero")],
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Loop", ["trips", "cond", "h"], ["prediction"], body=body)],
        "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 10])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["batch", 5])],
        [numpy_helper.from_array(np.zeros((10, 5), np.float32), "w"), numpy_helper.from_array(np.array(10**15, np.int64), "trips"),
         numpy_helper.from_array(np.array(True), "cond")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), target)
    return target


def test_a_loop_bomb_under_timeout_ends_in_one_line_and_exit_1(tmp_path):
    import time

    loop_bomb(tmp_path / "bomb.onnx")
    started = time.monotonic()
    done = zoo_program(tmp_path, "verify", "bomb.onnx", "--arch", "stack", "--timeout", "3")
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "timed out after 3 s" in done.stderr and "terminate called" not in done.stderr
    assert time.monotonic() - started < 120


THREAD_PLUGIN = FD_PLUGIN.replace("def build(width: int = 3):", """import threading, time

def build(width: int = 3):
    threading.Thread(target=time.sleep, args=(3600,)).start()  # not a daemon: the interpreter's exit waits for it""")


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_plugin_thread_that_is_not_a_daemon_does_not_hang_the_command(tmp_path, jobs):
    done = zoo_program(tmp_path, "export", "--all", "fd-*", "-o", "out", "--jobs", jobs, "--json", plugin=THREAD_PLUGIN, timeout=240)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 2


def test_ctrl_c_ends_every_process_of_jobs_whose_plugin_started_a_thread(tmp_path):
    """The plugin's non-daemon thread keeps no worker, and no zoo process, alive after Ctrl-C."""
    import signal

    from test_faults import write_distribution
    from test_scaleout import group_ends, wait_for_exports

    write_distribution(tmp_path / "site", "zoo-hostile", {"hostile": "zoo_hostile_plugin"}, {"zoo_hostile_plugin": THREAD_PLUGIN})
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "ZOO_LOAD_PLUGINS": "zoo-hostile"}
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "export", "--all", "-o", "out", "--jobs", "2"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_exports(proc, tmp_path / "out")
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert group_ends(proc.pid), "a process of zoo's outlived it"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and stderr.strip().splitlines()[-1] == "zoo: interrupted", stderr
    assert "Traceback" not in stderr and "race condition" not in stderr


# -- a large file that is no model is refused having read a few bytes of it ---------------------------


@pytest.mark.parametrize("kind", ["zeros", "a valid model padded with zeros"])
def test_a_2gb_file_that_is_no_model_costs_no_memory_to_refuse(run, tmp_path, kind):
    path = tmp_path / "big.onnx"
    if kind == "zeros":
        path.touch()
    else:
        assert run("export", "stack", "-o", "big.onnx").exit_code == 0
    os.truncate(path, 2**31 - 1)  # sparse: no disk is spent, but reading it whole would take 2 GiB
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        process = subprocess.Popen([sys.executable, "-c", "from zoo.entry import main; main()", "verify", str(path)], stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert process.returncode in (1, 2) and out == "", (out, err)
    assert err.count("\n") == 1 and "big.onnx is not an ONNX file: its bytes at offset" in err and "Traceback" not in err, err
    assert usage.ru_maxrss * 1024 < 2**30, f"peak RSS {usage.ru_maxrss / 2**20:.0f} MiB to refuse a file of 2 GiB"


RACE = '''
import os, signal
from zoo.exporting import workers
from zoo.interrupts import HANDLED, Interrupted

for signum in HANDLED:
    signal.signal(signum, workers._worker_signal)
workers._exporting = True  # inside an export: the first signal raises, its cleanup runs
signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C to the group, and the parent passing it on as SIGTERM,
os.kill(os.getpid(), signal.SIGTERM)  # both pending before the worker's handler has run once
try:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
    for _ in range(1000):
        pass
except Interrupted:
    print("interrupted once")
for _ in range(1000):  # the second signal's turn: handled quietly
    pass
'''


def test_a_second_signal_pending_with_the_first_is_quiet_in_a_worker(tmp_path):
    done = subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "interrupted once\n", (done.stdout, done.stderr)
    assert "race condition" not in done.stderr and done.stderr == "", done.stderr
