"""The example plugin's own tests: what a plugin author writes with zoo.testing."""

import pytest
import zoo_example_plugin

import zoo.testing


@pytest.mark.parametrize("exporter", ["onnx", "pt2"])
@pytest.mark.parametrize("name", zoo.testing.architecture_params(zoo_example_plugin))
def test_architecture_checks_exports_and_verifies(name, exporter, tmp_path):
    zoo.testing.check_export_verify(name, tmp_path, plugin=zoo_example_plugin, exporter=exporter)
