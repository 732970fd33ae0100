"""The one command that runs every CUDA path, proven on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_cuda_check_script_runs_every_step_and_prints_its_table() -> None:
    """``make cuda-check`` runs on a GPU machine; on the CPU the same steps prove the script."""
    script = Path(__file__).with_name("cuda_check.py")
    done = subprocess.run(
        [sys.executable, str(script), "--device", "cpu", "--only", "binary", "--no-tests"], capture_output=True, text=True,
        timeout=600, env={**os.environ, "ZOO_LOAD_PLUGINS": ""},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout.splitlines()
    assert table[-1] == "4 passed, 0 failed"
    assert [line.split()[:3] for line in table[-5:-1]] == [[s, "binary-sigmoid", "ok"] for s in ("check", "export", "verify", "bench")]


def test_without_a_gpu_it_says_so_once_and_exits_with_nothing_checked() -> None:
    script = Path(__file__).with_name("cuda_check.py")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 77, done.stdout + done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1 and "nothing was checked" in done.stderr
