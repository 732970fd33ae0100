"""Every code block in docs/plugins.md works.

The ``my-models/...`` blocks are written out as a package, installed with pip
and run with the ``zoo`` command and pytest, as a reader of the guide would.
Every other Python block is run on its own; what it defines is then used:
architectures are checked, exporters export and verify, commands are invoked.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner
from installing import Installed, pip_install

from zoo.build.model import build_model
from zoo.checking.checks import check_model
from zoo.cli.commands import cli
from zoo.exporting.pipeline import export_model
from zoo.host.manager import load_zoo
from zoo.spec.architecture import Architecture
from zoo.verification.artifact import verify_artifact

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
PACKAGE_FILE = re.compile(r"^# (my-models/\S+)\n")
NAMED_FILE = re.compile(r"^# [\w./-]+\.\w+\n")  # a file the reader writes; doc_console runs it with the console blocks


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", GUIDE.read_text(), flags=re.MULTILINE | re.DOTALL)


def package_files() -> dict[str, str]:
    return {m.group(1): block for block in code_blocks(r"\w+") if (m := PACKAGE_FILE.match(block))}


def snippets() -> list[str]:
    return [block for block in code_blocks("python") if not NAMED_FILE.match(block)]


def test_the_guide_has_a_minimal_plugin_of_about_15_lines() -> None:
    files = package_files()
    assert set(files) == {"my-models/my_models.py", "my-models/pyproject.toml", "my-models/tests/test_my_models.py"}
    code = [line for line in files["my-models/my_models.py"].splitlines()[1:] if line.strip()]
    assert len(code) <= 20, f"the minimal plugin grew to {len(code)} lines"


def test_the_minimal_plugin_installs_exports_and_passes_its_tests(tmp_path: Path) -> None:
    source = tmp_path / "src"
    for name, text in package_files().items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(PACKAGE_FILE.sub("", text))
    site = tmp_path / "site-packages"
    pip_install(source / "my-models", site)
    installed = Installed(site)
    env = installed.env(ZOO_LOAD_PLUGINS="my-models")
    plugins = json.loads(subprocess.run([sys.executable, "-c", "from zoo.entry import main; main()", "plugins", "--json"],
                                        env=env, capture_output=True, text=True, check=True).stdout)
    mine = {p["name"]: p for p in plugins}["my_models"]
    assert (mine["distribution"], mine["version"], mine["architectures"]) == ("my-models", "0.1.0", ["tiny-regressor"])
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(source / "my-models" / "tests")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "1 passed" in tests.stdout


def write_package(folder: Path) -> Path:
    for name, text in package_files().items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(PACKAGE_FILE.sub("", text))
    return folder / "my-models"


def test_the_minimal_plugins_tests_pass_in_a_checkout_that_is_not_installed(tmp_path: Path) -> None:
    project = write_package(tmp_path)
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, capture_output=True, text=True, timeout=120
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "1 passed" in tests.stdout


def test_the_example_plugins_tests_pass_in_a_copy_that_is_not_installed(tmp_path: Path) -> None:
    import shutil

    example = Path(__file__).resolve().parent.parent / "examples" / "zoo-example-plugin"
    copy = shutil.copytree(example, tmp_path / "zoo-example-plugin", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    (copy / "conftest.py").unlink(missing_ok=True)  # pyproject's pythonpath alone must do it
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "tag-model and onnx"],
        cwd=copy, capture_output=True, text=True, timeout=300, env=env,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "1 passed" in tests.stdout


@pytest.mark.parametrize("index", range(len(snippets())))
def test_python_snippet_runs_and_what_it_defines_works(index: int, tmp_path: Path) -> None:
    module = types.ModuleType(f"guide_snippet_{index}")
    exec(compile(snippets()[index], f"docs/plugins.md snippet {index}", "exec"), module.__dict__)  # noqa: S102
    the_zoo = load_zoo(entry_points=False, extra=[("guide", module)])
    assert not the_zoo.problems
    info = the_zoo.plugins["guide"]
    archs = [the_zoo.architecture(name) for name in info.architectures]
    archs += [value for value in vars(module).values() if isinstance(value, Architecture)]
    for arch in archs:
        result = check_model(build_model(arch))
        assert result.ok, result.failures
    for name in info.architectures:  # custom tasks, per-token outputs: exported and verified end to end
        path = tmp_path / f"{name}.onnx"
        result = export_model(build_model(the_zoo.architecture(name)), the_zoo.exporter("onnx"), path)
        assert result.ok, result.error
        assert verify_artifact(the_zoo, path).ok
    for name in info.exporters:
        exporter = the_zoo.exporter(name)
        output = tmp_path / f"binary{exporter.suffix}"
        result = export_model(build_model(the_zoo.architecture("binary")), exporter, output)
        assert result.ok, result.error
        assert verify_artifact(the_zoo, output).ok
    for name in info.runtimes:  # a runtime from the guide: listed, and it verifies a file the onnx format wrote
        listed = CliRunner().invoke(cli, ["plugins", "--json"], obj=the_zoo, catch_exceptions=False)
        (record,) = [r for p in json.loads(listed.output) if p["name"] == "guide" for r in p["runtimes"]]
        assert (record["name"], record["available"]) == (name, True)
        path = tmp_path / "binary-sigmoid.onnx"
        assert export_model(build_model(the_zoo.architecture("binary")), the_zoo.exporter("onnx"), path).ok
        ran = CliRunner().invoke(cli, ["verify", str(path), "--runtime", name, "--json"], obj=the_zoo, catch_exceptions=False)
        assert ran.exit_code == 0, ran.output
        verified = json.loads(ran.output)["verification"]
        assert verified["runtime_info"]["name"] == name and verified["max_abs_error"] < 1e-6
    for name in info.commands:
        ran = CliRunner().invoke(cli, [name, "binary"], obj=the_zoo, catch_exceptions=False)
        assert ran.exit_code == 0, ran.output
        assert ran.output.strip()


def test_every_console_block_of_the_guide_runs_as_printed(tmp_path: Path) -> None:
    from doc_console import run_document

    problems = run_document(GUIDE, tmp_path)
    assert not problems, "\n\n".join(problems)
