"""Load plugins, call their hooks one plugin at a time, and keep what they registered.

There is no module-level manager: ``load_zoo()`` builds a fresh ``Zoo`` each
time, so tests can make their own and register fake plugins.

Hooks are called through pluggy's own hook callers, but one plugin at a time
(``PluginManager.subset_hook_caller`` leaving out every other plugin): a single
call over all plugins would stop at the first one that raises, and could not
tell whose registrations to drop. Because the calls go through pluggy,
pluggy's tracing applies: ``zoo -vv`` logs every hook call and its result
(``Zoo.trace_hooks``), and ``zoo.pm.trace.root.setwriter(print)`` followed by
``zoo.pm.enable_tracing()`` does the same in a program.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from zoo.errors import one_line
from zoo.host import hookspecs
from zoo.host.plugin_calls import call_plugin, plugin_code, plugin_fault
from zoo.host.sources import absolute, plugin_loader
from zoo.records import Record, json_field
from zoo.spec.architecture import Architecture
from zoo.spec.exporter import Exporter
from zoo.spec.registry import Registry
from zoo.spec.runtime import Runtime
from zoo.spec.task import Task, resolve_tasks
from zoo.spec.weights import Weights, WeightsRegistry
from zoo.text import shorten, some

log = logging.getLogger(__name__)

DISTRIBUTION = "zoo-onnx"
BUILTIN_TASK_PLUGIN = "zoo.plugins.tasks"
DEFAULT_PLUGINS = (
    BUILTIN_TASK_PLUGIN, "zoo.plugins.seed", "zoo.exporters.onnx", "zoo.exporters.onnxruntime_runtime", "zoo.exporters.openvino_runtime",
)
LOAD_ENV = "ZOO_LOAD_PLUGINS"
SLOW_IMPORT_S = 3.0  # then name the plugin whose import is still running


@dataclass
class PluginInfo(Record):
    """What ``zoo plugins`` shows for one plugin."""

    JSON_EXTRA = (("status", "status"),)

    name: str
    module: str | None = None
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    loaded: bool = json_field(skip=True, default=False)
    source: str | None = json_field(skip=True, default=None)  # given with --plugin: how a worker loads it again
    tasks: list[str] = field(default_factory=list)
    architectures: list[str] = field(default_factory=list)
    exporters: list[str] = field(default_factory=list)
    runtimes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)  # ARCH.NAME
    errors: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``ok``; ``partial``: errors, but something it registered was kept;
        ``failed``: errors and nothing kept (not imported, or every hook refused)."""
        if not self.errors:
            return "ok" if self.loaded else "failed"
        return "partial" if self.loaded and self.registered else "failed"

    @property
    def registered(self) -> bool:
        return bool(self.tasks or self.architectures or self.exporters or self.runtimes or self.commands or self.weights)


class Zoo:
    """The plugin manager and everything the plugins registered."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.architectures: Registry[Architecture] = Registry("architecture")
        self.exporters: Registry[Exporter] = Registry("exporter", list_command="zoo plugins")
        self.tasks: Registry[Task] = Registry("task", list_command="zoo plugins")
        self.weights = WeightsRegistry()
        self.runtimes: Registry[Runtime] = Registry("runtime", list_command="zoo plugins")
        self.plugins: dict[str, PluginInfo] = {}
        self.problems: list[str] = []

    # -- loading ---------------------------------------------------------------

    def add_plugin(self, plugin: object, info: PluginInfo) -> bool:
        """Register one plugin object; a contract violation is reported, not raised."""
        self.plugins[info.name] = info
        try:
            self.pm.register(plugin, name=info.name)
            self.pm.check_pending()  # a misspelled @hookimpl fails here
        except Exception as exc:  # noqa: BLE001 - any plugin fault is isolated
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._problem(info, one_line(exc) + _hook_hint(str(exc)))
            return False
        info.loaded = True
        return True

    def collect(self) -> None:
        """Ask every loaded plugin for its tasks, architectures, exporters and weights.
        Tasks come first: an architecture's outputs name them; weights last: they name architectures."""
        self._call_each("register_tasks", self.tasks, Task, "tasks")
        self._call_each(
            "register_architectures", self.architectures, Architecture, "architectures", prepare=lambda a: resolve_tasks(a, self.tasks)
        )
        self._call_each("register_exporters", self.exporters, Exporter, "exporters")
        self._call_each("register_runtimes", self.runtimes, Runtime, "runtimes")
        self._call_each("register_weights", self.weights, Weights, "weights", prepare=self._weights_for_architecture)

    def trace_hooks(self) -> None:
        """Log every hook call (pluggy's tracing) at DEBUG: ``zoo -vv``."""
        self.pm.trace.root.setwriter(lambda message: log.debug("pluggy: %s", message.rstrip()))
        self.pm.enable_tracing()

    def _hook_of(self, hook_name: str, plugin_name: str) -> Any:
        """A pluggy hook caller that calls ``plugin_name``'s implementation alone."""
        others = [plugin for name, plugin in self.pm.list_name_plugin() if name != plugin_name]
        return self.pm.subset_hook_caller(hook_name, remove_plugins=others)

    def _implementers(self, hook_name: str) -> list[PluginInfo]:
        return [self.plugins[impl.plugin_name] for impl in getattr(self.pm.hook, hook_name).get_hookimpls()]

    def _call_each(
        self, hook_name: str, registry: Registry[Any], kind: type, attr: str, prepare: Callable[[Any], Any] | None = None
    ) -> None:
        for info in self._implementers(hook_name):
            staged: list[Any] = []

            def register(item: Any, _info: PluginInfo = info, _staged: list[Any] = staged) -> None:
                if not isinstance(item, kind):
                    self._problem(_info, f"register() got {type(item).__name__}, not a zoo.{kind.__name__}; skipped")
                    return
                _staged.append(item.with_plugin(_info.name))

            try:
                with plugin_code():
                    self._hook_of(hook_name, info.name)(register=register)
            except BaseException as exc:  # noqa: BLE001 - a plugin calling sys.exit() must not end zoo
                if not plugin_fault(exc):
                    raise
                self._problem(info, f"{hook_name} raised {one_line(exc)}; nothing it registered was kept")
                continue
            for item in staged:
                try:
                    item = prepare(item) if prepare else item
                    registry.add(item)
                except ValueError as exc:  # DuplicateName, or what ``prepare`` refuses
                    self._problem(info, f"{exc}; skipped")
                    continue
                getattr(info, attr).append(getattr(item, "key", item.name))

    def add_commands(self, group: Any, reserved: Iterable[str]) -> None:
        """Let each plugin add commands to ``group``; built-in names cannot be taken."""
        reserved = set(reserved)
        for info in self._implementers("register_commands"):
            before = set(group.commands)
            try:
                with plugin_code():
                    self._hook_of("register_commands", info.name)(cli=group)
            except BaseException as exc:  # noqa: BLE001 - a plugin calling sys.exit() must not end zoo
                if not plugin_fault(exc):
                    raise
                for name in set(group.commands) - before:
                    del group.commands[name]
                self._problem(info, f"register_commands raised {one_line(exc)}")
                continue
            for name in sorted(set(group.commands) - before):
                if name in reserved:
                    del group.commands[name]
                    self._problem(info, f"command {name!r} is a built-in zoo command; skipped")
                else:
                    info.commands.append(name)
                    _guard_command(group.commands[name], f"command {name!r} (plugin {info.name!r})")

    def _weights_for_architecture(self, weights: Weights) -> Weights:
        """``weights`` naming its architecture by canonical name, its parameters typed."""
        import dataclasses

        from zoo.errors import ZooError
        from zoo.spec.params import coerce_params

        arch = self.architectures.get(weights.architecture)
        if arch is None:
            raise ValueError(f"weight set {weights.name!r} names architecture {weights.architecture!r}, which no plugin registered")
        try:
            params = coerce_params(dict(weights.params), arch.parameters, arch.name)
        except ZooError as exc:
            raise ValueError(f"weight set {weights.name!r}: {exc}") from None
        if weights.claim is not None and weights.claim.output not in (None, *(o.name for o in arch.outputs)):
            raise ValueError(f"weight set {weights.name!r}: claim output {weights.claim.output!r} is not an output of {arch.name}")
        return dataclasses.replace(weights, architecture=arch.name, params=params)

    def _problem(self, info: PluginInfo, message: str) -> None:
        info.errors.append(message)
        self.problems.append(f"plugin {info.name!r}: {message}")

    # -- queries ----------------------------------------------------------------

    def architecture(self, name: str) -> Architecture:
        return self.architectures.resolve(name)

    def exporter(self, name: str) -> Exporter:
        return self.exporters.resolve(name)

    def runtime(self, name: str) -> Runtime:
        return self.runtimes.resolve(name)


def load_zoo(
    builtins: Iterable[str] = DEFAULT_PLUGINS,
    entry_points: bool = True,
    env: Mapping[str, str] | None = None,
    extra: Iterable[tuple[str, object]] = (),
    plugins: Iterable[str] = (),
) -> Zoo:
    """Build a Zoo: built-in plugins, then third-party entry points, then ``extra``, then ``plugins``.

    ``extra`` is ``(name, plugin_object)`` pairs, for tests and embedding.
    ``plugins`` are ``zoo --plugin`` values: ``.py`` paths or module names,
    imported with the same fault isolation as installed plugins.
    """
    env = os.environ if env is None else env
    zoo = Zoo()
    if log.isEnabledFor(logging.DEBUG):
        zoo.trace_hooks()
    version = _version(DISTRIBUTION)
    for module_name in builtins:
        info = PluginInfo(
            name=module_name.rsplit(".", 1)[-1], module=module_name, distribution=DISTRIBUTION, version=version, builtin=True
        )
        module = _import(zoo, info, lambda m=module_name: importlib.import_module(m))
        if module is not None:
            zoo.add_plugin(module, info)
    if entry_points:
        for ep, dist_name, dist_version in _entry_points(zoo, env):
            info = PluginInfo(name=ep.name, module=ep.value, distribution=dist_name, version=dist_version)
            if ep.name in zoo.plugins:
                zoo._problem(info, f"plugin name {ep.name!r} is already taken; rename the entry point")
                continue
            module = _import(zoo, info, ep.load)
            if module is not None:
                zoo.add_plugin(module, info)
    for name, plugin in extra:
        zoo.add_plugin(plugin, PluginInfo(name=name, module=getattr(plugin, "__name__", None)))
    for source in plugins:
        _load_source(zoo, source)
    zoo.collect()
    return zoo


def _load_source(zoo: Zoo, source: str) -> None:
    name, load = plugin_loader(source)
    info = PluginInfo(name=name, module=source, source=absolute(source))
    if name in zoo.plugins:
        zoo._problem(info, f"plugin name {name!r} is already taken; rename the module")
        return
    module = _import(zoo, info, load)
    if module is not None:
        zoo.add_plugin(module, info)


def _import(zoo: Zoo, info: PluginInfo, load: Callable[[], ModuleType]) -> ModuleType | None:
    # A hanging import hangs every command: at least say which plugin it is.
    timer = threading.Timer(SLOW_IMPORT_S, _still_importing, (info.name, sys.stderr))
    timer.daemon = True
    timer.start()
    try:
        with plugin_code():
            return load()
    except BaseException as exc:  # noqa: BLE001 - a broken plugin (even one calling sys.exit) must not take zoo down
        if not plugin_fault(exc):
            raise
        zoo.plugins[info.name] = info
        zoo._problem(info, f"failed to import: {one_line(exc)}")
        log.debug("import of plugin %s failed", info.name, exc_info=True)
        return None
    finally:
        timer.cancel()


def _guard_command(command: Any, what: str) -> None:
    """A plugin command's code runs through ``call_plugin``: an exception is one line naming
    it; click's own ends (``ctx.exit``, a usage error) and ``sys.exit(n)`` keep their meaning."""
    import click

    callback = command.callback
    if callback is None:
        return
    passes = (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit)

    def guarded(*args: Any, **kwargs: Any) -> Any:
        return call_plugin(callback, *args, what=what, passes=passes, speaks=True, **kwargs)

    command.callback = functools.update_wrapper(guarded, callback)


def _still_importing(name: str, stream: Any) -> None:
    stream.write(f"zoo: still importing plugin {name!r} (over {SLOW_IMPORT_S:g} s); {LOAD_ENV}= skips third-party plugins\n")
    stream.flush()


def _entry_points(zoo: Zoo, env: Mapping[str, str]) -> list[tuple[importlib.metadata.EntryPoint, str, str]]:
    allowed = None
    if LOAD_ENV in env:
        allowed = {_normalize(n) for n in env[LOAD_ENV].split(",") if n.strip()}
    found: dict[tuple[str, str], tuple[importlib.metadata.EntryPoint, str, str]] = {}
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group != hookspecs.PROJECT:
                continue
            if allowed is not None and _normalize(dist_name) not in allowed:
                continue
            found.setdefault((_normalize(dist_name), ep.name), (ep, dist_name, dist.version))
    if allowed:
        missing = allowed - {key[0] for key in found} - {_normalize(DISTRIBUTION)}  # zoo's own plugins always load
        names = sorted(missing)
        if len(names) > 3:  # one line, however long the variable is
            zoo.problems.append(f"{LOAD_ENV} names {len(names):,} distributions that have no zoo plugins installed: {some(names)}")
        else:
            installed = sorted({_normalize(dist.metadata["Name"] or "") for dist in importlib.metadata.distributions()
                                if any(ep.group == hookspecs.PROJECT for ep in dist.entry_points)} - {_normalize(DISTRIBUTION)})
            for name in names:
                close = difflib.get_close_matches(name, installed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else (f"; installed: {', '.join(installed)}" if installed else "")
                zoo.problems.append(f"{LOAD_ENV} names {shorten(name)!r}, but no installed distribution with zoo plugins has that name{hint}")
    return sorted(found.values(), key=lambda item: (item[1].lower(), item[0].name))


def _hook_hint(message: str) -> str:
    """'; did you mean register_architectures?' for pluggy's unknown-hook error."""
    found = re.search(r"unknown hook '(\w+)'", message)
    if not found:
        return ""
    hooks = [name for name in dir(hookspecs) if name.startswith("register_")]
    close = difflib.get_close_matches(found.group(1), hooks, n=1)
    return f"; did you mean {close[0]}?" if close else f"; zoo's hooks are {', '.join(hooks)}"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
