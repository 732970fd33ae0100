"""The README's own plugin example must work as printed."""

from __future__ import annotations

import re
import types
from pathlib import Path

import zoo.testing

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_plugin() -> types.ModuleType:
    section = README.read_text().split("## Plugins", 1)[1]
    source = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    module = types.ModuleType("my_models")
    exec(compile(source, "README.md", "exec"), module.__dict__)  # noqa: S102 - our own README
    return module


def test_readme_plugin_checks_exports_and_verifies(tmp_path):
    plugin = readme_plugin()
    assert zoo.testing.plugin_zoo(plugin).architecture("tiny").name == "tiny-classifier"
    zoo.testing.check_export_verify("tiny-classifier", tmp_path, plugin=plugin)


def test_every_console_block_of_the_readme_runs_as_printed(tmp_path):
    from doc_console import run_document

    problems = run_document(README, tmp_path)
    assert not problems, "\n\n".join(problems)
