"""Issue 6: Ctrl-C and a full disk during an export leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from installing import zoo_command
from reliability_fakes import assert_clean_failure, disk_full_exporter, leftovers

from zoo.host.manager import load_zoo


def test_sigint_during_export_leaves_nothing_and_exits_130(tmp_path):
    env = {**os.environ, "ZOO_LOAD_PLUGINS": ""}
    proc = subprocess.Popen(
        zoo_command() + ["export", "stack", "-o", "out.onnx"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # The staging folder appears once the checks passed and the exporter starts.
        deadline = time.monotonic() + 90
        while not list(tmp_path.glob(".out.onnx.*.tmp")):
            assert proc.poll() is None, f"zoo ended before exporting: {proc.communicate()}"
            assert time.monotonic() < deadline, "no staging folder appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert stderr.strip() == "zoo: interrupted"
    assert "Traceback" not in stdout + stderr
    assert leftovers(tmp_path) == []  # no out.onnx, no .out.onnx.*.tmp


CTRL_C_WHILE_CLICK_IMPORTS = """
import builtins, os, signal, sys
real_import = builtins.__import__

def importing(name, *args, **kwargs):
    if name == "click":
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)

from zoo.entry import main
builtins.__import__ = importing
sys.argv = ["zoo", "list"]
main()
"""


def test_ctrl_c_while_the_program_starts_is_one_line_and_exit_130(tmp_path):
    done = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_CLICK_IMPORTS], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip(), done.stdout) == (130, "zoo: interrupted", "")


def test_injected_disk_full_leaves_nothing(run, tmp_path):
    # Works everywhere (no mount needed): the exporter writes half a file, then ENOSPC.
    zoo_ = load_zoo(entry_points=False)
    zoo_.exporters.add(disk_full_exporter(zoo_.exporters.get("onnx")).with_plugin("test"))
    result = run("export", "binary", "--format", "onnx-full-disk", "-o", "out.onnx", zoo=zoo_)
    assert_clean_failure(result, 1, "No space left on device", "ENOSPC", "free some space", "nothing was written")
    assert leftovers(tmp_path) == []


@contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A real small file system, where this machine lets us mount one (root on Linux)."""
    folder.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, f"zoo-test-{uuid.uuid4().hex[:8]}", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_real_full_disk_leaves_nothing(run, tmp_path):
    with tmpfs(tmp_path / "small", "size=64k") as small:
        # width=200: about 170 kB of weights, more than the 64 kB file system holds
        result = run("export", "stack", "-p", "width=200", "-o", "small/out.onnx")
        assert_clean_failure(result, 1, "No space left on device", "free some space")
        assert list(small.iterdir()) == []


def test_read_only_folder_is_refused_before_work(run, tmp_path):
    # root ignores permission bits: a read-only mount is a folder even root cannot write
    with tmpfs(tmp_path / "ro", "size=64k,ro") as ro:
        result = run("export", "binary", "-o", "ro/out.onnx")
        assert_clean_failure(result, 2, "not writable", "Read-only file system", "-o")
        assert list(ro.iterdir()) == []
