"""Issue 10: nothing lost, nothing replaced, nothing hangs.

zoo never replaces what it did not write (data files an old model names, links,
devices, a file that appeared meanwhile), never overwrites what a command reads,
and leaves no staging folder behind, whatever signal ends it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import onnx
import pytest
from installing import zoo_command
from onnx import TensorProto, helper
from reliability_fakes import assert_clean_failure, leftovers

from zoo import Architecture, Exporter, Input, Output, hookimpl
from zoo.errors import OutputPathError
from zoo.files.paths import check_output_path
from zoo.files.staging import old_side_files, place, staging, sweep_leftovers
from zoo.files.writing import write_atomically
from zoo.host.manager import load_zoo

ENV = {**os.environ, "ZOO_LOAD_PLUGINS": ""}
ROOT = os.geteuid() == 0


def model_naming(path: Path, locations: list[str], zoo_metadata: bool) -> None:
    """An ONNX file whose initializers are external, stored in ``locations``."""
    initializers = []
    for index, location in enumerate(locations):
        tensor = helper.make_tensor(f"w{index}", TensorProto.FLOAT, [1], [0.0])
        tensor.ClearField("float_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", "4")):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        initializers.append(tensor)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y], initializers))
    if zoo_metadata:
        helper.set_model_props(model, {"zoo.architecture": "binary-sigmoid", "zoo.exporter": "onnx"})
    path.write_bytes(model.SerializeToString())


def exported_with_data(run, tmp_path: Path, name: str = "model.onnx") -> Path:
    """A real zoo export whose weights were moved into ``NAME.data``, as zoo writes big models."""
    assert run("export", "binary", "-o", name).exit_code == 0
    path = tmp_path / name
    onnx.save_model(onnx.load(path), path, save_as_external_data=True, location=f"{name}.data", size_threshold=0)
    return path


# 1. --force deletes only the side file zoo wrote for the replaced model


def test_force_leaves_files_the_replaced_model_names_but_zoo_did_not_write(run, tmp_path):
    for name in ("precious.txt", "README.md", "other.onnx", "model.onnx.data"):
        (tmp_path / name).write_text(f"{name} contents")
    model_naming(tmp_path / "model.onnx", ["precious.txt", "README.md", "other.onnx", "model.onnx.data"], zoo_metadata=True)
    result = run("export", "binary", "-o", "model.onnx", "--force")
    assert result.exit_code == 0, result.output
    for name in ("precious.txt", "README.md", "other.onnx"):
        assert (tmp_path / name).read_text() == f"{name} contents"
        assert f"zoo: warning: left {name}: the replaced model.onnx named it as data, but zoo did not write it" in result.stderr
    assert not (tmp_path / "model.onnx.data").exists()  # zoo's own NAME.onnx.data of a zoo file: stale, removed
    assert run("verify", "model.onnx").exit_code == 0


def test_side_file_of_a_file_zoo_did_not_write_is_not_zoos(tmp_path):
    (tmp_path / "model.onnx.data").write_text("someone's data")
    model_naming(tmp_path / "model.onnx", ["model.onnx.data"], zoo_metadata=False)
    old = old_side_files(load_zoo(entry_points=False).exporter("onnx"), tmp_path / "model.onnx")
    assert old.own == [] and old.foreign == [tmp_path / "model.onnx.data"]


# 2. links, devices and FIFOs are written through or refused, never replaced


def write_text(path: Path, text: str = "report\n") -> None:
    write_atomically(path, lambda handle: handle.write(text.encode()), "--report")


def test_report_through_a_link_writes_its_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to("real.json")
    write_text(link)
    assert link.is_symlink() and os.readlink(link) == "real.json"
    assert target.read_text() == "report\n"


@pytest.mark.skipif(not ROOT, reason="mknod needs root")
def test_report_to_a_character_device_writes_through_it(run, tmp_path):
    os.mknod(tmp_path / "nulldev", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
    result = run("export", "binary", "-o", "m.onnx", "--report", "nulldev")
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.lstat(tmp_path / "nulldev").st_mode)


def test_report_to_a_fifo_writes_through_it(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while True:  # until the reader has opened its end
        try:
            write_text(fifo, "through the pipe\n")
            break
        except OutputPathError:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    reader.join(10)
    assert got == [b"through the pipe\n"] and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_report_to_a_fifo_nobody_reads_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    start = time.monotonic()
    with pytest.raises(OutputPathError, match="FIFO .*nobody is reading"):
        write_text(tmp_path / "pipe")
    assert time.monotonic() - start < 5 and stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)


@pytest.mark.parametrize("kind", ["link", "fifo", "device"])
def test_output_that_is_not_a_regular_file_is_refused_even_with_force(tmp_path, kind):
    path = tmp_path / "m.onnx"
    if kind == "link":
        (tmp_path / "real.onnx").write_text("model")
        path.symlink_to("real.onnx")
    elif kind == "fifo":
        os.mkfifo(path)
    elif ROOT:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    else:
        pytest.skip("mknod needs root")
    before = os.lstat(path)
    with pytest.raises(OutputPathError, match="symbolic link|FIFO|character device"):
        check_output_path(path, force=True)
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "m.onnx").write_text("new model")
    with pytest.raises(OutputPathError, match="symbolic link|FIFO|character device"):  # at the instant of placing, too
        place([staged / "m.onnx"], staged / "m.onnx", path, force=True)
    assert os.lstat(path).st_mode == before.st_mode and os.lstat(path).st_ino == before.st_ino
    if kind == "link":
        assert (tmp_path / "real.onnx").read_text() == "model"


# 3. without --force, placing fails if anything is there at that instant


def staged_export(tmp_path: Path) -> tuple[Path, Path]:
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "m.onnx").write_text("graph")
    (staged / "m.onnx.data").write_text("weights")
    return staged / "m.onnx", staged / "m.onnx.data"


@pytest.mark.parametrize("appears", ["m.onnx", "m.onnx.data"])
def test_file_that_appears_between_check_and_place_is_left_untouched(tmp_path, appears):
    main, side = staged_export(tmp_path)
    final = tmp_path / "m.onnx"
    check_output_path(final, force=False)  # nothing there yet
    (tmp_path / appears).write_text("another run's file")  # ...then another run places its file
    with pytest.raises(OutputPathError, match="appeared while exporting|already exists"):
        place([main, side], main, final)
    assert (tmp_path / appears).read_text() == "another run's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"staged", appears})  # nothing of ours left


def test_two_concurrent_exports_to_one_path_one_wins(tmp_path):
    procs = [
        subprocess.Popen(zoo_command() + ["export", "binary", "-o", "m.onnx"], cwd=tmp_path, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = sorted((p.wait(timeout=300), p.stderr.read()) for p in procs)
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    loser = [line for line in outcomes[1][1].splitlines() if line.strip()]
    assert len(loser) == 1 and loser[0].startswith("zoo: error: ") and "m.onnx" in loser[0]
    assert leftovers(tmp_path) == ["m.onnx"]
    done = subprocess.run(zoo_command() + ["verify", "m.onnx"], cwd=tmp_path, env=ENV, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr


# 4. a report never replaces a file the command reads


@pytest.mark.parametrize("fails_its_check", [False, True])
def test_verify_report_never_replaces_the_data_file_it_verifies(run, tmp_path, fails_its_check):
    path = exported_with_data(run, tmp_path)
    if fails_its_check:  # the record of a failed check was written over the data file
        model = onnx.load(path, load_external_data=False)
        model.graph.node[0].op_type = "NoSuchOp"
        path.write_bytes(model.SerializeToString())
    data = (tmp_path / "model.onnx.data").read_bytes()
    result = run("verify", "model.onnx", "--report", "model.onnx.data")
    assert_clean_failure(result, 2, "would overwrite", "model.onnx.data")
    assert (tmp_path / "model.onnx.data").read_bytes() == data
    assert run("verify", "model.onnx").exit_code == (1 if fails_its_check else 0)


# 5-7. signals


def start_export(tmp_path: Path, *args: str, python: list[str] | None = None) -> subprocess.Popen[str]:
    command = python or zoo_command()
    return subprocess.Popen(command + ["export", "stack", "-o", "out.onnx", *args], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_staging(proc: subprocess.Popen[str], tmp_path: Path) -> None:
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.onnx.*.tmp")):
        assert proc.poll() is None, f"zoo ended before exporting: {proc.communicate()}"
        assert time.monotonic() < deadline, "no staging folder appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_clean_up_like_ctrl_c(tmp_path, signum):
    proc = start_export(tmp_path)
    try:
        wait_for_staging(proc, tmp_path)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, (proc.returncode, stderr)
    assert stderr.strip() == f"zoo: interrupted ({signal.Signals(signum).name})"
    assert leftovers(tmp_path) == []


def test_staging_folder_of_a_killed_export_is_removed_by_the_next(run, tmp_path):
    proc = start_export(tmp_path)
    try:
        wait_for_staging(proc, tmp_path)
        proc.kill()  # SIGKILL: no cleanup runs
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    dead = list(tmp_path.glob(".out.onnx.*.tmp"))
    assert len(dead) == 1 and dead[0].is_dir()
    assert run("export", "binary", "-o", "next.onnx").exit_code == 0
    assert leftovers(tmp_path) == ["next.onnx"]


def test_staging_folder_of_a_live_export_is_never_removed(tmp_path):
    with staging(tmp_path / "m.onnx") as live:
        (live / "m.onnx").write_text("half written")
        assert sweep_leftovers(tmp_path) == []
        assert (live / "m.onnx").exists()
    assert list(tmp_path.iterdir()) == []


def swallowing_exporter(real: Exporter) -> Exporter:
    """An exporter whose library swallows Ctrl-C and fails later, as a torch
    import cut in half does (``module 'torch._dynamo' has no attribute 'exc'``)."""

    def export(job):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the signal arrives here
        except BaseException:  # noqa: BLE001 - what the library does
            pass
        raise AttributeError("module 'torch._dynamo' has no attribute 'exc'")

    return Exporter(name="onnx-swallows", suffix=".onnx", export=export, load=real.load,
                    read_metadata=real.read_metadata, default_opset=real.default_opset, opsets=real.opsets)


def test_an_interrupt_a_library_swallowed_still_exits_130(run, tmp_path):
    zoo_ = load_zoo(entry_points=False)
    zoo_.exporters.add(swallowing_exporter(zoo_.exporters.get("onnx")).with_plugin("test"))
    result = run("export", "binary", "--format", "onnx-swallows", "-o", "out.onnx", zoo=zoo_)
    assert result.exit_code == 130, result.output
    assert result.stderr.strip() == "zoo: interrupted"
    assert leftovers(tmp_path) == []


def swallow_a_ctrl_c() -> None:
    """Ctrl-C, lost as one that lands in a ``__del__`` or a weakref callback is:
    Python reports the exception raised there (to stderr, which zoo captures) and goes on."""

    class Finalizer:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the signal arrives by here

    Finalizer()


def quietly_swallowing_exporter(real: Exporter) -> Exporter:
    """An exporter whose library swallows Ctrl-C and succeeds anyway."""

    def export(job):
        swallow_a_ctrl_c()
        return real.export(job)

    return Exporter(name="onnx-swallows-quietly", suffix=".onnx", export=export, load=real.load,
                    read_metadata=real.read_metadata, default_opset=real.default_opset, opsets=real.opsets)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed interrupt, as designed
def test_an_interrupt_a_library_swallowed_stops_an_export_that_went_on(run, tmp_path):
    zoo_ = load_zoo(entry_points=False)
    zoo_.exporters.add(quietly_swallowing_exporter(zoo_.exporters.get("onnx")).with_plugin("test"))
    result = run("export", "binary", "--format", "onnx-swallows-quietly", "-o", "out.onnx", zoo=zoo_)
    assert result.exit_code == 130, result.output
    assert result.stderr.strip().endswith("zoo: interrupted")
    assert leftovers(tmp_path) == []  # the verified file was not placed


def test_a_signal_while_files_are_placed_waits_until_all_are_in_place(run, tmp_path, monkeypatch):
    # The export writes out.onnx.data, then out.onnx. A SIGTERM sent (by another thread,
    # so the kernel may deliver it to any) between the two moves used to leave the
    # side file alone: placing is now uncut, and the signal ends zoo once both are there.
    from zoo.exporters import onnx as onnx_exporter

    from zoo.files import staging as artifacts

    monkeypatch.setattr(onnx_exporter, "EXTERNAL_DATA_BYTES", 0)  # every model counts as large
    real_move = artifacts._move

    def move(source, target, force):
        real_move(source, target, force)
        if target.name.endswith(".data"):
            sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM))
            sender.start()
            sender.join()
            time.sleep(0.2)  # the handler has run by now

    monkeypatch.setattr(artifacts, "_move", move)
    result = run("export", "stack", "-o", "out.onnx")
    assert result.exit_code == 143, result.output
    assert result.stderr.strip() == "zoo: interrupted (SIGTERM)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "out.onnx.data"]  # all placed, none orphaned


class SwallowsWhenAsked:
    """A plugin whose model's forward swallows a Ctrl-C once ``swallow`` is set."""

    swallow = False

    @hookimpl
    def register_architectures(self, register):
        def build(features: int = 4):
            import torch

            class Net(torch.nn.Linear):
                def forward(self, x):
                    if SwallowsWhenAsked.swallow:
                        swallow_a_ctrl_c()
                    return super().forward(x)

            return Net(features, 1)

        register(Architecture("swallower", build, (Input("x", ("batch", "features")),), (Output("y"),)))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_a_models_forward_swallowed_stops_the_export_before_the_exporter_runs(run, tmp_path):
    exported = []
    zoo_ = load_zoo(entry_points=False, extra=[("swallows", SwallowsWhenAsked())])
    real = zoo_.exporters.get("onnx")
    zoo_.exporters.add(dataclasses.replace(real, name="onnx-counted", export=lambda job: exported.append(job) or real.export(job)).with_plugin("test"))
    SwallowsWhenAsked.swallow = True
    try:
        result = run("export", "swallower", "--format", "onnx-counted", "-o", "out.onnx", zoo=zoo_)
    finally:
        SwallowsWhenAsked.swallow = False
    assert result.exit_code == 130, result.output
    assert exported == [] and leftovers(tmp_path) == []  # stopped after the check's forward pass, not at the end


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_a_library_swallowed_stops_a_verify_before_its_verdict(run, tmp_path):
    zoo_ = load_zoo(entry_points=False, extra=[("swallows", SwallowsWhenAsked())])
    assert run("export", "swallower", "-o", "out.onnx", zoo=zoo_).exit_code == 0
    SwallowsWhenAsked.swallow = True
    try:
        result = run("verify", "out.onnx", "--report", "verdict.json", zoo=zoo_)
    finally:
        SwallowsWhenAsked.swallow = False
    assert result.exit_code == 130, result.output
    assert result.stdout == "" and result.stderr.strip().endswith("zoo: interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]  # no report


def test_ctrl_c_after_the_work_is_done_keeps_its_exit_status(tmp_path):
    # Ctrl-C right after the summary, or in a slow interpreter shutdown (Python code at exit, as torch's)
    busy = "lambda: [time.sleep(0.01) for _ in range(6000)]"
    slow_exit = [sys.executable, "-u", "-c", f"import atexit, time; atexit.register({busy}); from zoo.entry import main; main()"]
    proc = subprocess.Popen(slow_exit + ["export", "binary", "-o", "out.onnx"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not lines or lines[-1] != "ok\n":
            line = proc.stdout.readline()
            assert line, f"no summary: {lines} {proc.stderr.read()}"
            lines.append(line)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read()
    assert time.monotonic() - start < 20
    assert (tmp_path / "out.onnx").is_file()


# item 20: paths that are not what they seem, and messages that are true


def test_output_with_a_trailing_slash_names_a_folder(run, tmp_path):
    result = run("export", "binary", "-o", "newdir/")
    assert_clean_failure(result, 2, "-o 'newdir/' names a folder", "newdir/binary-sigmoid.onnx", "create the folder")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_verify_says_what_a_path_that_is_not_a_file_is(run, tmp_path, kind):
    expected = {"folder": "is a folder", "fifo": "is a FIFO", "device": "is a character device"}[kind]
    path = {"folder": "sub", "fifo": "pipe", "device": "/dev/zero"}[kind]
    if kind == "folder":
        (tmp_path / "sub").mkdir()
    elif kind == "fifo":
        os.mkfifo(tmp_path / "pipe")
    assert_clean_failure(run("verify", path), 2, expected, "not a regular file", "give the file 'zoo export' wrote")


def test_full_disk_on_report_says_the_model_was_placed(run, tmp_path):
    from test_interrupt import tmpfs

    with tmpfs(tmp_path / "small", "size=64k") as small:
        (small / "filler").write_bytes(b"\0" * 64 * 1024)  # the file system is full
        result = run("export", "binary", "-o", "m.onnx", "--report", "small/r.json")
        line = assert_clean_failure(result, 1, "No space left on device", "--report", "the report was not written", "m.onnx placed")
        assert "-o" not in line.split("choose another folder")[-1] and "nothing was written" not in line
        assert not (small / "r.json").exists() and (tmp_path / "m.onnx").is_file()


def dead_pid() -> str:
    return subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()


def test_a_folder_or_file_that_merely_looks_like_zoos_is_never_swept(run, tmp_path):
    """Round three: a user's ``.notes.zoo-4000000-ab.tmp`` and a folder of photos with such a
    name, owner PID dead, were deleted by the next export. Only folders carrying zoo's marker go."""
    pid = dead_pid()
    notes = tmp_path / f".notes.zoo-{pid}-ab.tmp"
    notes.write_text("my notes")
    photos = tmp_path / f".photos.zoo-{pid}-cd.tmp"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"\xff\xd8 a photo")
    locked = tmp_path / f".album.zoo-{pid}-ef.tmp"  # even with a '.lock' of its own
    locked.mkdir()
    (locked / ".lock").write_text("mine")
    report = tmp_path / f".r.json.zoo-{pid}-0a1b2c3d.tmp.json"
    report.write_text("kept")
    assert run("export", "binary", "-o", "m.onnx", "--report", "r.json").exit_code == 0
    assert notes.read_text() == "my notes" and (photos / "cat.jpg").exists() and (locked / ".lock").exists()
    assert report.read_text() == "kept"
    assert sweep_leftovers(tmp_path) == []


def test_a_report_staging_folder_left_by_a_killed_process_is_removed_by_the_next_write(tmp_path):
    code = (
        "import os, sys; from pathlib import Path; from zoo.files.writing import write_atomically\n"
        "write_atomically(Path(sys.argv[1]), lambda h: (h.write(b'{\"half\": '), h.flush(), os.kill(os.getpid(), 9)), '--report')"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.json")], check=False)
    left = list(tmp_path.glob(".r.json.zoo-*.tmp"))
    assert len(left) == 1 and (left[0] / "r.json").exists()
    write_atomically(tmp_path / "r.json", lambda handle: handle.write(b"{}"), "--report")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]

