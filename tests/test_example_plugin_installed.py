"""The example plugin installed for real with pip, and the ``zoo`` command run
against it in a subprocess: entry-point discovery, distribution metadata,
plugin commands and exporters, exactly as a user gets them.

pip installs into a temporary ``--target`` folder (no network: no build
isolation, no dependencies; zoo itself comes from this test environment), put
on ``PYTHONPATH`` for the subprocesses only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from installing import Installed, pip_install, zoo_command

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "zoo-example-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    site = tmp_path_factory.mktemp("site") / "site-packages"
    pip_install(EXAMPLE, site)
    assert (site / "zoo_example_plugin" / "pt2.py").is_file()  # a real copy, not a link to the source tree
    return Installed(site)


def test_installed_plugin_shows_in_zoo_plugins_with_distribution_and_version(installed: Installed, tmp_path: Path) -> None:
    plugins = {p["name"]: p for p in json.loads(installed.zoo("plugins", "--json", cwd=tmp_path).stdout)}
    example = plugins["example"]
    assert (example["distribution"], example["version"], example["status"], example["builtin"]) == (
        "zoo-example-plugin",
        "0.1.0",
        "ok",
        False,
    )
    assert example["architectures"] == ["small-cnn", "token-classifier", "listing-model", "tag-model", "gru-regressor"]
    assert example["exporters"] == ["pt2"] and example["commands"] == ["pt2-info"]
    text = installed.zoo("plugins", cwd=tmp_path).stdout
    assert any(line.split()[:3] == ["example", "zoo-example-plugin", "0.1.0"] for line in text.splitlines()), text


def test_installed_plugin_shows_in_zoo_list_without_importing_torch(installed: Installed, tmp_path: Path) -> None:
    listed = installed.zoo("list", cwd=tmp_path).stdout
    rows = {line.split()[0]: line for line in listed.splitlines()[1:]}
    assert rows["token-classifier"].split()[-1] == "example"
    assert "tokens: batch×seq int64" in rows["token-classifier"]
    assert "image: batch×3×32×32" in rows["small-cnn"]
    probe = "import sys; from zoo.cli.commands import cli; cli(['list'], standalone_mode=False); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], env=installed.env(), capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "False", "zoo list imported torch"


def test_installed_plugin_exports_verifies_and_runs_its_command(installed: Installed, tmp_path: Path) -> None:
    exported = installed.zoo("export", "text", "--format", "pt2", "--report", "report.json", cwd=tmp_path)
    assert (tmp_path / "token-classifier.pt2").is_file(), exported.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "ok" and report["plugin"] == "example"
    seen = {(case["sizes"]["batch"], case["sizes"]["seq"]) for case in report["verification"]["cases"]}
    assert {b for b, _ in seen} >= {1, 2, 64} and {s for _, s in seen} >= {2, 12, 25}  # dynamic batch and seq
    verified = installed.zoo("verify", "token-classifier.pt2", cwd=tmp_path)
    assert verified.stdout.splitlines()[-1] == "ok"
    info = installed.zoo("pt2-info", "token-classifier.pt2", cwd=tmp_path).stdout
    assert info.startswith("token-classifier.pt2: token-classifier (plugin example, seed 0)")
    missing = installed.zoo("pt2-info", "nowhere.pt2", cwd=tmp_path, expect=2)  # a user error: exit 2, one line
    assert missing.stderr == "zoo: error: 'nowhere.pt2' does not exist\n"
    installed.zoo("export", "listing", "-o", "listing.onnx", cwd=tmp_path)
    assert installed.zoo("verify", "listing.onnx", cwd=tmp_path).stdout.splitlines()[-1] == "ok"


def test_a_file_of_another_format_gets_one_line_not_a_torch_traceback(installed: Installed, tmp_path: Path) -> None:
    """torch.export.load logs a traceback on stderr for a file that is not an
    archive; with the pt2 format installed, neither zoo nor pt2-info may show it."""
    installed.zoo("export", "binary", cwd=tmp_path)
    (tmp_path / "fake.onnx").write_text("not onnx")
    for args in (("pt2-info", "binary-sigmoid.onnx"), ("verify", "fake.onnx")):
        done = installed.zoo(*args, cwd=tmp_path, expect=2)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("zoo: error: "), done.stderr


def test_zoo_load_plugins_leaves_out_an_installed_plugin(installed: Installed, tmp_path: Path) -> None:
    done = subprocess.run(
        [*zoo_command(), "plugins", "--json"], cwd=tmp_path, env=installed.env(ZOO_LOAD_PLUGINS=""), capture_output=True, text=True, check=True
    )
    assert "example" not in {p["name"] for p in json.loads(done.stdout)}
