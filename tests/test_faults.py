"""Issue 6: plugin faults. Each one is isolated, reported on one stderr line with the
plugin's name, and every other plugin keeps working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_fakes import build_not_module

import zoo
from zoo import Architecture, Input, Output
from zoo.host.manager import load_zoo

X = Input("x", ("batch", 4))
Y = Output("y", task="regression", shape=("batch", 2))


def _linear():
    from torch import nn

    return nn.Linear(4, 2)


def arch(name: str, aliases: tuple[str, ...] = (), build=_linear) -> Architecture:
    return Architecture(name=name, aliases=aliases, build=build, inputs=(X,), outputs=(Y,))


class Good:
    @zoo.hookimpl
    def register_architectures(self, register):
        register(arch("healthy-net"))


class RaisesInHook:
    @zoo.hookimpl
    def register_architectures(self, register):
        register(arch("half-registered"))
        raise RuntimeError("config file missing")


class Misspelled:
    @zoo.hookimpl
    def register_architecture(self, register):  # missing the final "s"
        register(arch("never-seen"))


class WrongArgument:
    @zoo.hookimpl
    def register_architectures(self, reg):  # pluggy passes arguments by name
        reg(arch("never-seen-either"))


class DuplicateName:
    @zoo.hookimpl
    def register_architectures(self, register):
        register(arch("binary-sigmoid"))
        register(arch("fresh-net"))  # its other, valid architecture is kept


class DuplicateAlias:
    @zoo.hookimpl
    def register_architectures(self, register):
        register(arch("another-binary", aliases=("binary",)))


class NotAnArchitecture:
    @zoo.hookimpl
    def register_architectures(self, register):
        register("binary-v2")
        register({"name": "dict-net"})
        register(arch("proper-net"))


class ExitsInHook:
    @zoo.hookimpl
    def register_architectures(self, register):
        sys.exit(3)


class BadExporter:
    @zoo.hookimpl
    def register_exporters(self, register):
        register(arch("not-an-exporter"))


class CommandFaults:
    @zoo.hookimpl
    def register_commands(self, cli):
        @cli.command("export")  # a built-in name
        def hijack():
            pass


class BuildsNonsense:
    @zoo.hookimpl
    def register_architectures(self, register):
        register(arch("dict-model", build=build_not_module))


FAULTS = [
    # (plugin name, plugin, words the report must hold, architecture that must NOT be registered)
    ("raiser", RaisesInHook(), ("register_architectures raised RuntimeError", "config file missing", "nothing it registered was kept"), "half-registered"),
    ("typo", Misspelled(), ("register_architecture",), "never-seen"),
    ("wrongarg", WrongArgument(), ("reg",), "never-seen-either"),
    ("dupe", DuplicateName(), ("'binary-sigmoid'", "already registered by plugin 'seed'", "skipped"), None),
    ("dupealias", DuplicateAlias(), ("'binary'", "already registered by plugin 'seed'", "binary-sigmoid"), "another-binary"),
    ("notarch", NotAnArchitecture(), ("register() got str, not a zoo.Architecture",), "binary-v2"),
    ("exiter", ExitsInHook(), ("SystemExit",), None),
    ("badexporter", BadExporter(), ("register() got Architecture, not a zoo.Exporter",), None),
    ("hijacker", CommandFaults(), ("command 'export' is a built-in zoo command",), None),
]


@pytest.mark.parametrize(("name", "plugin", "words", "absent"), FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_is_isolated_and_named(name, plugin, words, absent):
    zoo_ = load_zoo(entry_points=False, extra=[(name, plugin), ("good", Good())])
    if name == "hijacker":  # commands are collected when the CLI starts
        import click

        zoo_.add_commands(click.Group("plugin-commands"), reserved={"export"})
    mine = [p for p in zoo_.problems if p.startswith(f"plugin {name!r}:")]
    assert mine, zoo_.problems
    for word in words:
        assert any(word in p for p in mine), (word, mine)
    assert zoo_.plugins[name].errors  # 'zoo plugins' shows the reason
    if absent:
        assert absent not in zoo_.architectures
    # everything else still works: built-ins, the healthy third party, the exporter
    for other in ("binary-sigmoid", "multiclass-softmax", "three-layer-stack", "healthy-net"):
        assert other in zoo_.architectures
    assert "onnx" in zoo_.exporters
    assert zoo_.architecture("binary").plugin == "seed"  # a duplicate never steals a name
    assert not [p for p in zoo_.problems if not p.startswith(f"plugin {name!r}:")]


def test_duplicate_keeps_the_plugins_valid_architectures():
    zoo_ = load_zoo(entry_points=False, extra=[("dupe", DuplicateName()), ("notarch", NotAnArchitecture())])
    assert zoo_.architecture("fresh-net").plugin == "dupe"
    assert zoo_.architecture("proper-net").plugin == "notarch"
    assert zoo_.plugins["dupe"].status == "partial"


class RaisesButKeepsAnExporter(RaisesInHook):
    @zoo.hookimpl
    def register_exporters(self, register):
        register(zoo.Exporter(name="half-format", suffix=".half", export=_linear, load=_linear, read_metadata=dict))


class RaisesButKeepsACommand(RaisesInHook):
    @zoo.hookimpl
    def register_commands(self, cli):
        @cli.command("hello")
        def hello():
            pass


@pytest.mark.parametrize(
    ("plugin", "status"),
    [
        (RaisesInHook(), "failed"),  # its one hook raised: nothing of it is left
        (Misspelled(), "failed"),
        (RaisesButKeepsAnExporter(), "partial"),
        (RaisesButKeepsACommand(), "partial"),
        (DuplicateName(), "partial"),  # fresh-net was kept
        (DuplicateAlias(), "failed"),  # its only architecture was refused
        (Good(), "ok"),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, str) else value,
)
def test_status_says_whether_anything_was_kept(run, plugin, status):
    zoo_ = load_zoo(entry_points=False, extra=[("probe", plugin)])
    result = run("plugins", "--json", zoo=zoo_)  # the CLI collects commands before it lists
    (record,) = [p for p in json.loads(result.stdout) if p["name"] == "probe"]
    assert record["status"] == status, record


@pytest.mark.parametrize(("name", "plugin", "words", "absent"), FAULTS[:6], ids=[f[0] for f in FAULTS[:6]])
def test_cli_reports_fault_on_one_line_and_keeps_working(run, name, plugin, words, absent):
    zoo_ = load_zoo(entry_points=False, extra=[(name, plugin), ("good", Good())])
    result = run("list", zoo=zoo_)
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    # one line per fault (notarch makes two), each naming the plugin
    assert len(warnings) == len(zoo_.problems) >= 1, result.stderr
    assert all(w.startswith(f"zoo: warning: plugin {name!r}:") for w in warnings), result.stderr
    assert "binary-sigmoid" in result.stdout and "healthy-net" in result.stdout
    plugins = run("plugins", zoo=zoo_)
    assert name in plugins.stdout and ("failed" in plugins.stdout or "partial" in plugins.stdout)


def test_build_returning_non_module_names_plugin(run, tmp_path):
    zoo_ = load_zoo(entry_points=False, extra=[("nonsense", BuildsNonsense())])
    result = run("check", "dict-model", zoo=zoo_)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "zoo: error: architecture 'dict-model' (plugin 'nonsense'): build returned dict, not a torch.nn.Module"
    ]
    assert run("check", "binary", zoo=zoo_).exit_code == 0  # the rest of the zoo is fine


# -- third-party distributions on sys.path (real entry points) --------------------


def write_distribution(folder: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str] | None = None) -> None:
    """A real installed distribution: ``*.dist-info`` with METADATA and entry_points.txt."""
    info = folder / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[zoo]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    for module, source in (modules or {}).items():
        (folder / f"{module}.py").write_text(source)


GOOD_PLUGIN = '''
import zoo
from zoo import Architecture, Input, Output

def build(width: int = 3):
    from torch import nn
    return nn.Linear(4, width)

@zoo.hookimpl
def register_architectures(register):
    register(Architecture(name="third-party-net", build=build, inputs=(Input("x", ("batch", 4)),),
                          outputs=(Output("y", task="regression", shape=("batch", "width")),)))
'''

DISTS = "zoo-broken-dist,zoo-exiting-dist,zoo-good-dist"


@pytest.fixture
def site(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.mktemp("site")
    write_distribution(folder, "zoo-broken-dist", {"broken": "zoo_module_that_is_not_installed"})
    write_distribution(folder, "zoo-exiting-dist", {"exiting": "zoo_exiting_plugin"}, {"zoo_exiting_plugin": "import sys\nsys.exit('bye')\n"})
    write_distribution(folder, "zoo-good-dist", {"goodone": "zoo_good_plugin"}, {"zoo_good_plugin": GOOD_PLUGIN})
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_import_errors_are_isolated(site):
    zoo_ = load_zoo(env={"ZOO_LOAD_PLUGINS": DISTS})
    broken, exiting, good = zoo_.plugins["broken"], zoo_.plugins["exiting"], zoo_.plugins["goodone"]
    assert broken.status == "failed" and broken.distribution == "zoo-broken-dist"
    assert "failed to import: ModuleNotFoundError" in broken.errors[0] and "zoo_module_that_is_not_installed" in broken.errors[0]
    assert exiting.status == "failed" and "SystemExit: bye" in exiting.errors[0]
    assert good.status == "ok" and good.architectures == ["third-party-net"]
    assert "binary-sigmoid" in zoo_.architectures
    assert len(zoo_.problems) == 2


def test_import_error_through_the_cli(run, site, monkeypatch):
    monkeypatch.setenv("ZOO_LOAD_PLUGINS", DISTS)
    result = run("list")
    assert result.exit_code == 0
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("zoo: warning: plugin ") for w in warnings), result.stderr
    assert "'broken'" in warnings[0] and "'exiting'" in warnings[1]
    assert "third-party-net" in result.stdout and "binary-sigmoid" in result.stdout


def test_import_error_in_a_real_process(site, tmp_path):
    # the console script with a broken plugin installed: a warning, never a traceback
    script = Path(sys.executable).with_name("zoo")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from zoo.entry import main; main()"]
    env = {**os.environ, "ZOO_LOAD_PLUGINS": DISTS, "PYTHONPATH": str(site)}
    proc = subprocess.run(command + ["check", "third-party-net"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "plugin 'broken': failed to import" in proc.stderr and "plugin 'exiting'" in proc.stderr
    assert "ok" in proc.stdout.splitlines()[-1]
