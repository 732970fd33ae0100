from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner, Result

from zoo.cli.commands import cli
from zoo.host.manager import Zoo, load_zoo

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGIN = REPO / "examples" / "zoo-example-plugin"


@pytest.fixture(autouse=True)
def _no_third_party_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the built-in plugins unless they install their own."""
    monkeypatch.setenv("ZOO_LOAD_PLUGINS", "")


@pytest.fixture
def zoo() -> Zoo:
    return load_zoo(entry_points=False)


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Invoke the CLI in a temporary working folder: ``run("list", "--json")``."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str, zoo: Zoo | None = None, input: str | None = None) -> Result:
        runner = CliRunner()
        return runner.invoke(cli, list(args), obj=zoo, input=input, catch_exceptions=False)

    return invoke


def lines(text: str) -> Sequence[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def example_plugin(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example third-party plugin, imported from its source tree (not installed)."""
    monkeypatch.syspath_prepend(str(EXAMPLE_PLUGIN))
    return importlib.import_module("zoo_example_plugin")


@pytest.fixture
def example_zoo(example_plugin: ModuleType) -> Zoo:
    """Built-ins plus the example plugin under its entry-point name, as if installed."""
    return load_zoo(entry_points=False, extra=[("example", example_plugin)])
