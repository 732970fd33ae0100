"""Exporter noise (torch's log lines, warnings, prints) reaches the terminal only
with -v: without it, a failing command prints its one ``zoo: error:`` line alone.

These run the real console script in a subprocess: torch binds its log handlers
to the process's own stderr, which an in-process CliRunner does not see.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from installing import zoo_command

BRANCHY = """
import zoo

def build(width: int = 3):
    from torch import nn

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(width, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.export cannot trace it
                return self.lin(x)
            return -self.lin(x)

    return Branchy()

@zoo.hookimpl
def register_architectures(register):
    register(zoo.Architecture(name="branchy", build=build,
        inputs=(zoo.Input("x", ("batch", "width")),), outputs=(zoo.Output("y", task="regression"),)))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An installed distribution 'zoo-branchy' with one architecture no exporter can trace."""
    folder = tmp_path_factory.mktemp("site")
    (folder / "zoo_branchy.py").write_text(textwrap.dedent(BRANCHY))
    info = folder / "zoo_branchy-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-branchy\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[zoo]\nzoo_branchy = zoo_branchy\n")
    return folder


def zoo_run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "ZOO_LOAD_PLUGINS": "zoo-branchy"}
    return subprocess.run([*zoo_command(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def test_a_failing_export_prints_one_line_and_the_exporter_speaks_only_with_v(site, tmp_path):
    quiet = zoo_run(site, tmp_path, "export", "branchy")
    assert quiet.returncode == 1, quiet.stderr
    assert quiet.stdout == ""
    assert quiet.stderr.count("\n") == 1 and quiet.stderr.startswith("zoo: error: onnx could not export branchy: "), quiet.stderr
    assert "-v" in quiet.stderr  # it says where the rest is

    loud = zoo_run(site, tmp_path, "-v", "export", "branchy")
    assert loud.returncode == 1
    assert "onnx could not export branchy" in loud.stderr  # the exporter's own reason, at -v
    assert loud.stderr.rstrip().splitlines()[-1].startswith("zoo: error: ")
    assert list(tmp_path.iterdir()) == []
