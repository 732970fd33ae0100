"""Plugin discovery through real entry points, ZOO_LOAD_PLUGINS, and fault isolation."""

from __future__ import annotations

import importlib
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from zoo.host.manager import load_zoo

ROOT = Path(__file__).resolve().parents[1]

GOOD_PLUGIN = """
import zoo

def build(width: int = 3):
    from torch import nn
    return nn.Linear(width, 2)

@zoo.hookimpl
def register_architectures(register):
    register(zoo.Architecture(name="tiny-linear", aliases=("tiny",), build=build,
        inputs=(zoo.Input("x", ("batch", "width")),), outputs=(zoo.Output("y", task="regression"),)))
"""


def install_fake_distribution(site: Path, dist: str, module: str, source: str, entry_name: str | None = None) -> None:
    """A real installed distribution as importlib.metadata sees one: a module and a dist-info."""
    sys.modules.pop(module, None)  # an earlier test may have imported another version
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[zoo]\n{entry_name or module} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delenv("ZOO_LOAD_PLUGINS")
    importlib.invalidate_caches()
    return folder


def test_entry_point_plugin_is_loaded_with_its_distribution(site):
    install_fake_distribution(site, "zoo-tiny", "zoo_tiny", GOOD_PLUGIN)
    zoo = load_zoo()
    info = zoo.plugins["zoo_tiny"]
    assert (info.distribution, info.version, info.status) == ("zoo-tiny", "1.2.3", "ok")
    assert info.architectures == ["tiny-linear"]
    assert zoo.architecture("tiny").plugin == "zoo_tiny"


def test_load_plugins_env_limits_distributions(site):
    install_fake_distribution(site, "zoo-tiny", "zoo_tiny", GOOD_PLUGIN)
    assert "zoo_tiny" not in load_zoo(env={"ZOO_LOAD_PLUGINS": ""}).plugins
    assert "zoo_tiny" in load_zoo(env={"ZOO_LOAD_PLUGINS": "zoo_tiny"}).plugins  # names are normalised
    only_other = load_zoo(env={"ZOO_LOAD_PLUGINS": "something-else"})
    assert "zoo_tiny" not in only_other.plugins
    assert any("something-else" in p for p in only_other.problems)
    assert {"seed", "onnx"} <= set(only_other.plugins)  # built-ins always load


BROKEN = {
    "import error": ("import does_not_exist_anywhere\n", "failed to import: ModuleNotFoundError"),
    "misspelled hook": (
        "import zoo\n@zoo.hookimpl\ndef register_architecture(register):\n    pass\n",
        "unknown hook 'register_architecture'",
    ),
    "raises in hook": (
        "import zoo\n@zoo.hookimpl\ndef register_architectures(register):\n    raise RuntimeError('boom')\n",
        "register_architectures raised RuntimeError: boom",
    ),
    "duplicate name": (
        GOOD_PLUGIN.replace('name="tiny-linear"', 'name="binary-sigmoid"'),
        "'binary-sigmoid' is already registered by plugin 'seed'",
    ),
    "duplicate alias": (
        GOOD_PLUGIN.replace('aliases=("tiny",)', 'aliases=("stack",)'),
        "'stack' is already registered by plugin 'seed' (three-layer-stack)",
    ),
    "not an architecture": (
        "import zoo\n@zoo.hookimpl\ndef register_architectures(register):\n    register('resnet')\n",
        "register() got str, not a zoo.Architecture",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_plugin_is_reported_and_skipped(site, run, case):
    source, reason = BROKEN[case]
    install_fake_distribution(site, "zoo-broken", "zoo_broken", source)
    install_fake_distribution(site, "zoo-tiny", "zoo_tiny", GOOD_PLUGIN.replace("tiny-linear", "other-linear").replace('"tiny"', '"other"'))
    result = run("list")
    assert result.exit_code == 0
    problems = [line for line in result.stderr.splitlines() if "zoo_broken" in line]
    assert len(problems) == 1 and reason in problems[0], result.stderr
    assert "binary-sigmoid" in result.stdout and "other-linear" in result.stdout  # everyone else still works
    plugins = run("plugins")
    assert plugins.exit_code == 0 and "zoo_broken" in plugins.stdout and reason in plugins.stdout


def test_a_raising_plugin_keeps_nothing_it_registered(site):
    install_fake_distribution(
        site,
        "zoo-half",
        "zoo_half",
        GOOD_PLUGIN + "\n    raise ValueError('after registering')\n",
    )
    zoo = load_zoo()
    assert "tiny-linear" not in zoo.architectures
    assert zoo.plugins["zoo_half"].status == "failed"  # nothing of it is left


def test_plugin_command_cannot_shadow_a_builtin(site, run):
    install_fake_distribution(
        site,
        "zoo-cmd",
        "zoo_cmd",
        """
        import zoo

        @zoo.hookimpl
        def register_commands(cli):
            @cli.command()
            def hello():
                "Say hello."
                print("hello from a plugin")

            @cli.command(name="list")
            def shadow():
                print("shadowed")
        """,
    )
    assert run("hello").stdout.strip() == "hello from a plugin"
    listed = run("list")
    assert "binary-sigmoid" in listed.stdout and "shadowed" not in listed.stdout
    plugins = run("plugins")
    assert "command 'list' is a built-in zoo command; skipped" in plugins.stderr
    assert "commands: hello" in plugins.stdout


def test_every_plugin_folder_is_packaged():
    """setuptools drops mapped folders it is not told about: each package must be listed."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping = config["package-dir"]
    for prefix, folder in (("zoo.plugins", "plugins"), ("zoo.exporters", "exporters")):
        assert mapping[prefix] == folder
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            assert ".".join((prefix, *relative)) in listed, f"{init.parent} is not in [tool.setuptools] packages"


def test_example_plugin_requires_the_python_zoo_requires():
    """pip would otherwise offer the example to a Python that zoo itself refuses."""
    zoo_python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    example = ROOT / "examples" / "zoo-example-plugin" / "pyproject.toml"
    assert tomllib.loads(example.read_text())["project"]["requires-python"] == zoo_python
