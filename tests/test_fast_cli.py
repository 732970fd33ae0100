"""The commands a user runs to look around stay fast: no torch, onnx, onnxruntime
(or numpy) while only the built-in plugins are loaded. Checked in a fresh
interpreter, since this test process has imported them all already."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "onnx", "onnxruntime", "onnxscript", "onnx_ir", "numpy", "matplotlib")

PROBE = """
import json, sys
from zoo.cli.commands import cli
try:
    cli(sys.argv[1:], prog_name="zoo")
except SystemExit as exit:
    code = exit.code
sys.stderr.write("\\nLOADED " + json.dumps([m for m in {heavy!r} if m in sys.modules]) + "\\n")
sys.exit(code)
"""


@pytest.mark.parametrize("args", [["list"], ["list", "--json"], ["plugins"], ["--help"], ["export", "--help"], ["bench", "--help"]])
def test_looking_around_imports_no_heavy_module(args: list[str]) -> None:
    env = {**os.environ, "ZOO_LOAD_PLUGINS": ""}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stderr.rsplit("LOADED ", 1)[1])
    assert loaded == [], f"zoo {' '.join(args)} imported {loaded}"


def test_the_probe_sees_heavy_imports() -> None:
    """The check above can fail: a command that builds a model does import torch."""
    env = {**os.environ, "ZOO_LOAD_PLUGINS": ""}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), "show", "binary"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "torch" in json.loads(done.stderr.rsplit("LOADED ", 1)[1])
