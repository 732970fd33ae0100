"""Stage progress on a terminal, and nothing extra elsewhere."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

from tests.installing import zoo_command


def run_with_terminal_stderr(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run zoo with stderr on a pseudo-terminal (stdout a pipe); what each got."""
    leader, follower = pty.openpty()
    env = {**os.environ, "ZOO_LOAD_PLUGINS": ""}
    process = subprocess.Popen([*zoo_command(), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=follower, env=env)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    stdout = process.stdout.read().decode()
    os.close(leader)
    return process.wait(timeout=120), stdout, seen.decode(errors="replace")


def test_a_single_export_shows_its_stages_on_a_terminal_only(tmp_path: Path) -> None:
    code, stdout, terminal = run_with_terminal_stderr(["export", "binary", "-o", "b.onnx"], tmp_path)
    assert code == 0, terminal
    for stage in ("check", "export", "verify"):
        assert f"binary-sigmoid: {stage} …" in terminal
    # how far through the weights and the cases (what a 2 GB export spends minutes on)
    assert "binary-sigmoid: check: backward, gradients of 220 B of 220 B of weights checked …" in terminal, terminal
    assert "binary-sigmoid: verify: loading b.onnx into onnxruntime …" in terminal
    assert "binary-sigmoid: verify: case 1 of 3 (batch=" in terminal
    assert terminal.endswith("\r\x1b[K")  # the line is cleared before the summary
    assert " …" not in stdout and stdout.splitlines()[-1] == "ok"
    piped = subprocess.run(
        [*zoo_command(), "export", "binary", "-o", "c.onnx"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "ZOO_LOAD_PLUGINS": ""},
    )
    assert piped.returncode == 0 and piped.stderr == ""  # not a terminal: nothing extra


def test_json_shows_no_progress_even_on_a_terminal(tmp_path: Path) -> None:
    code, stdout, terminal = run_with_terminal_stderr(["export", "binary", "-o", "b.onnx", "--json"], tmp_path)
    assert code == 0 and terminal == ""
    assert stdout.startswith("{")



