"""The core's shape: no import circles, each thing computed once per command,
every format's check run, hooks traceable, ``python -m zoo``."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from zoo.exporters import onnx as onnx_exporter

import zoo as zoo_package
from zoo import Architecture, Exporter, Input, Output, hookimpl
from zoo.build.model import build_model
from zoo.errors import VerificationFailed
from zoo.exporting.pipeline import export_model
from zoo.host.manager import load_zoo
from zoo.verification.artifact import verify_artifact

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"zoo": REPO / "zoo", "zoo.exporters": REPO / "exporters", "zoo.plugins": REPO / "plugins"}


LAYERS = (  # each layer may import its own and the layers below it, never one above
    ("zoo", "zoo.__main__", "zoo.entry", "zoo.testing", "zoo.api"),
    ("zoo.cli",),
    ("zoo.exporting", "zoo.bench"),
    ("zoo.verification",),
    ("zoo.checking",),
    ("zoo.build",),
    ("zoo.files",),
    ("zoo.host",),
    ("zoo.spec",),
    ("zoo.errors", "zoo.interrupts", "zoo.progress", "zoo.records", "zoo.text", "zoo.version"),
)
BUILTIN_PLUGINS = ("zoo.plugins", "zoo.exporters")


def module_name(package: str, folder: Path, path: Path) -> str:
    parts = [*path.relative_to(folder).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def every_import() -> dict[str, set[str]]:
    """zoo module -> the zoo modules it imports anywhere: at the top, in functions,
    under ``if TYPE_CHECKING``."""
    sources = {module_name(package, folder, path): path for package, folder in PACKAGES.items() for path in folder.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in sources.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "zoo":
                submodules = {f"{node.module}.{a.name}" for a in node.names} & set(sources)
                # 'from zoo.host import hookspecs' needs the submodule; 'from zoo import Architecture', the package
                found.update(submodules if len(submodules) == len(node.names) else {node.module, *submodules})
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "zoo")
        graph[name] = {m for m in found if m in sources and m != name and not name.startswith(m + ".")}
    return graph


def layer_of(module: str) -> int | None:
    for index, layer in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in layer if prefix != "zoo") or module in layer:
            return index
    return None


def test_every_import_follows_the_layer_order_with_no_circle() -> None:
    graph = every_import()
    assert {"zoo", "zoo.spec.architecture", "zoo.spec.params", "zoo.exporting.pipeline", "zoo.cli.commands"} <= set(graph)
    against = []
    for name, deps in sorted(graph.items()):
        if name.startswith(BUILTIN_PLUGINS):
            # built-in plugins are third parties: the public API and their own modules only
            against += [f"{name} -> {dep}" for dep in sorted(deps) if dep != "zoo" and not dep.startswith(BUILTIN_PLUGINS)]
            continue
        assert layer_of(name) is not None, f"{name} is in no layer of LAYERS"
        for dep in sorted(deps):
            if dep.startswith(BUILTIN_PLUGINS):
                against.append(f"{name} -> {dep} (the core loads built-in plugins by name, never by import)")
            elif layer_of(dep) < layer_of(name):  # the zoo package itself is the top layer
                against.append(f"{name} -> {dep}")
    assert not against, "imports against the layer order:\n" + "\n".join(against)
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph.get(name, ())):
            assert state.get(dep) != "open", "import circle: " + " -> ".join([*path, name, dep])
            if dep not in state:
                visit(dep, [*path, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


class Counting(torch.nn.Module):
    """Counts eager forward passes (tracing for export does not count)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.eager_calls = 0

    def forward(self, x):
        if not torch.compiler.is_exporting():
            self.eager_calls += 1
        return self.linear(x)


def counting_zoo():
    class Plugin:
        @hookimpl
        def register_architectures(self, register):
            register(Architecture("counting", Counting, (Input("x", ("batch", 4)),), (Output("y", task="regression"),)))

    return load_zoo(entry_points=False, extra=[("counting", Plugin())])


def test_export_runs_one_forward_pass_for_the_check_and_the_export(tmp_path: Path) -> None:
    zoo = counting_zoo()
    built = build_model(zoo.architecture("counting"))
    result = export_model(built, zoo.exporter("onnx"), tmp_path / "c.onnx")
    assert result.ok, result.error
    # one for the check (shared with the export's sample and output order), one per small verification size the
    # check runs PyTorch alone at (to find NaN rows before the export), one per verification case
    small = [case for case in result.verification.cases[1:] if max(case.sizes.values()) <= 8]
    assert built.module.eager_calls == 1 + len(small) + len(result.verification.cases)


def test_the_exported_onnx_file_is_parsed_once_per_command(tmp_path: Path) -> None:
    zoo = load_zoo(entry_points=False)
    path = tmp_path / "b.onnx"
    onnx_exporter._read_file.cache_clear()
    assert export_model(build_model(zoo.architecture("binary")), zoo.exporter("onnx"), path).ok
    info = onnx_exporter._read_file.cache_info()
    assert (info.misses, info.hits) == (1, 1)  # check, then the session: one parse
    onnx_exporter._read_file.cache_clear()
    assert verify_artifact(zoo, path).ok
    info = onnx_exporter._read_file.cache_info()
    assert info.misses == 1 and info.hits >= 3  # metadata, check, side files, session


def test_every_formats_check_runs_on_export_and_a_failure_places_nothing(tmp_path: Path) -> None:
    onnx = load_zoo(entry_points=False).exporter("onnx")

    def refuse(path):
        raise ValueError("the archive's table of contents is wrong")

    class Plugin:
        @hookimpl
        def register_exporters(self, register):
            register(Exporter("strict", ".strict", onnx.export, onnx.load, onnx.read_metadata, check=refuse))

    zoo = load_zoo(entry_points=False, extra=[("strict", Plugin())])
    with pytest.raises(VerificationFailed, match="m.strict fails the strict check: ValueError: the archive's table"):
        export_model(build_model(zoo.architecture("binary")), zoo.exporter("strict"), tmp_path / "m.strict")
    assert list(tmp_path.iterdir()) == []


def test_hook_calls_are_traced_through_pluggy_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="zoo.host.manager"):
        zoo = load_zoo(entry_points=False)
    traced = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pluggy:")]
    assert any("register_architectures" in line for line in traced)
    assert len(zoo.architectures) == 3


def test_export_job_is_public() -> None:
    assert zoo_package.ExportJob.__module__ == "zoo.spec.job"
    assert "ExportJob" in zoo_package.__all__


def test_python_dash_m_zoo_works_like_zoo() -> None:
    done = subprocess.run([sys.executable, "-m", "zoo", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"zoo, version {zoo_package.__version__}"
    listed = subprocess.run([sys.executable, "-m", "zoo", "list"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "binary-sigmoid" in listed.stdout


def test_import_zoo_is_light_and_its_names_and_modules_load_on_use():
    # light: the zoo program sets its signal handlers before click and pluggy load (zoo.entry)
    code = (
        "import sys, zoo\n"
        "assert not {'click', 'pluggy', 'torch'} & set(sys.modules), sorted({'click', 'pluggy', 'torch'} & set(sys.modules))\n"
        "assert zoo.Architecture is zoo.spec.architecture.Architecture and zoo.load_zoo is zoo.host.manager.load_zoo\n"
        "from zoo import *\n"
        "assert sorted(zoo.__all__) == sorted(n for n in zoo.__all__ if n in dir(zoo))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
