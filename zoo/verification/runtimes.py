"""Which runtimes a file is proven on (``--runtime NAME[:KEY=VALUE,...]``, ``all``), loading their runners, and why one diverges.

A file is verified once per runtime; when one fails at float32 tolerance, the
runtime's ``precise`` settings are tried on it, and the diagnosis says whether
those settings (OpenVINO's inference precision, onnxruntime's graph
optimizations) made the difference, or that it diverges under them too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo.errors import UsageError, VerificationFailed, damaged_metadata
from zoo.host.plugin_calls import call_exporter
from zoo.spec.exporter import Exporter
from zoo.spec.runner import Runner, check_runner
from zoo.spec.runtime import Runtime

DEFAULT_RUNTIME = "onnxruntime"
ALL = "all"


@dataclass(frozen=True)
class RuntimeChoice:
    """A runtime to verify on, with the settings asked for; ``runtime`` ``None`` is
    the format's own runner (``Exporter.load``, for a format no runtime runs)."""

    runtime: Runtime | None
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.runtime.name if self.runtime is not None else ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "settings": dict(self.settings)}

    def with_settings(self, settings: dict[str, str]) -> RuntimeChoice:
        return RuntimeChoice(self.runtime, {**self.settings, **settings})


def runs(runtime: Runtime, exporter: Exporter) -> bool:
    return exporter.name in runtime.formats


def safe_available(runtime: Runtime) -> bool:
    """Whether ``runtime`` can run here; a plugin whose check raises is unavailable."""
    try:
        return bool(call_exporter(runtime.available, error=UsageError, what=f"runtime {runtime.name}"))
    except UsageError:
        return False


def default_choices(zoo: Any, exporter: Exporter) -> list[RuntimeChoice]:
    """onnxruntime for ONNX files; for another format, the first available runtime that runs it, else its own runner."""
    found = [r for r in zoo.runtimes if runs(r, exporter) and safe_available(r)]
    found.sort(key=lambda r: r.name != DEFAULT_RUNTIME)
    if found:
        return [RuntimeChoice(found[0])]
    if exporter.load is None:
        raise UsageError(f"no installed runtime runs {exporter.name} files; 'zoo plugins' lists the runtimes and how to install them")
    return [RuntimeChoice(None)]


def parse_runtimes(zoo: Any, texts: Sequence[str], exporter: Exporter) -> list[RuntimeChoice]:
    """``--runtime`` values: ``NAME``, ``NAME:KEY=VALUE,KEY=VALUE`` or ``all`` (every
    available runtime of the format); none given: the default. Refused before any work."""
    if not texts:
        return default_choices(zoo, exporter)
    choices: list[RuntimeChoice] = []
    for text in texts:
        name, _, rest = text.partition(":")
        name = name.strip()
        if name == ALL:
            if rest:
                raise UsageError(f"--runtime {text}: 'all' takes no settings; give --runtime NAME:KEY=VALUE for one runtime")
            every = [RuntimeChoice(r) for r in zoo.runtimes if runs(r, exporter) and safe_available(r)]
            choices.extend(c for c in every if c.name not in {d.name for d in choices})
            continue
        runtime = zoo.runtime(name)  # unknown: one line with the known names
        if not runs(runtime, exporter):
            raise UsageError(f"--runtime {name}: {name} runs {', '.join(runtime.formats)} files, not {exporter.name}")
        if not safe_available(runtime):
            raise UsageError(f"--runtime {name}: {name} is not installed here; {runtime.install or 'install the library it needs'}")
        settings = parse_settings(runtime, rest, text)
        choices = [c for c in choices if c.name != name] + [RuntimeChoice(runtime, settings)]
    if not choices:
        raise UsageError(f"--runtime all: no installed runtime runs {exporter.name} files; 'zoo plugins' lists them")
    return choices


def parse_settings(runtime: Runtime, text: str, whole: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, equals, value = part.partition("=")
        if not equals or not key.strip() or not value.strip():
            raise UsageError(f"--runtime {whole}: give NAME:KEY=VALUE[,KEY=VALUE], such as openvino:inference_precision=f32")
        settings[key.strip()] = value.strip()
    try:
        return runtime.check_settings(settings)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def recorded_runtimes(zoo: Any, exporter: Exporter, meta: dict[str, str]) -> tuple[list[RuntimeChoice], str]:
    """The runtimes and settings a file was proven on at export (``zoo.runtimes``),
    those installed here; and a note naming any that is not."""
    try:
        recorded = json.loads(meta.get("runtimes", "[]"))
        entries = [(str(e["name"]), {str(k): str(v) for k, v in dict(e.get("settings", {})).items()}) for e in recorded]
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise damaged_metadata("the file", "zoo.runtimes is not a list of runtimes") from None
    choices, missing = [], []
    for name, settings in entries:
        runtime = zoo.runtimes.get(name)
        if runtime is None or not runs(runtime, exporter) or not safe_available(runtime):
            missing.append(name)
            continue
        try:
            choices.append(RuntimeChoice(runtime, runtime.check_settings(settings)))
        except ValueError as exc:
            raise damaged_metadata("the file", f"zoo.runtimes: {exc}") from None
    note = f"exported on {', '.join(missing)} too, not installed here" if missing else ""
    return choices or default_choices(zoo, exporter), note


def runtimes_metadata(choices: Sequence[RuntimeChoice]) -> str:
    """``zoo.runtimes``: what ``zoo verify`` of the file re-uses."""
    return json.dumps([c.to_dict() for c in choices if c.runtime is not None], sort_keys=True)


def load_runner(exporter: Exporter, choice: RuntimeChoice, path: Any, device: str) -> Runner:
    """The runner of ``path`` on ``choice``, checked against the ``zoo.Runner`` contract once."""
    runtime = choice.runtime
    if runtime is None:
        who = f"the {exporter.name} exporter (plugin {exporter.plugin!r})"
        if exporter.load is None:
            raise UsageError(f"the {exporter.name} format has no runner of its own: name a runtime that runs it (--runtime, 'zoo plugins')")
        threads = {"threads": int(choice.settings["threads"])} if "threads" in choice.settings and takes_threads(exporter.load) else {}
        loaded = call_exporter(
            exporter.load, path, device, **threads, error=VerificationFailed, what=f"{exporter.name} could not load {path.name}", limit=10_000
        )
    else:
        who = f"the {runtime.name} runtime (plugin {runtime.plugin!r})"
        if device not in (devices := runtime_devices(runtime)):
            raise UsageError(f"--device {device}: the {runtime.name} runtime runs on {', '.join(devices)} here")
        loaded = call_exporter(
            runtime.load, path, device, dict(choice.settings), error=VerificationFailed,
            what=f"{runtime.name} could not load {path.name}", limit=10_000,
        )
    return check_runner(loaded, who)


def takes_threads(load: Callable[..., Any]) -> bool:
    """Whether a format's own ``load`` takes ``threads=N`` (``zoo bench --threads``; onnx's does)."""
    import inspect

    try:
        return "threads" in inspect.signature(load).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return False


def runtime_devices(runtime: Runtime) -> tuple[str, ...]:
    try:
        return tuple(call_exporter(runtime.devices, error=UsageError, what=f"runtime {runtime.name}"))
    except UsageError:
        return ()


def runtime_version(runtime: Runtime) -> str:
    try:
        return str(call_exporter(runtime.version, error=UsageError, what=f"runtime {runtime.name}") or "")
    except UsageError:
        return ""


def intermediates_of(exporter: Exporter, choice: RuntimeChoice) -> Callable[..., Any] | None:
    """How to expose a file's inner values on ``choice``: the runtime's own, so the
    first divergence is searched where it failed; the format's for its own runner."""
    if choice.runtime is None:
        return exporter.intermediates
    expose = choice.runtime.intermediates
    return None if expose is None else (lambda path, feed: expose(path, feed, dict(choice.settings)))


def diagnose(choice: RuntimeChoice, failed: Any, rerun: Callable[[RuntimeChoice], Any]) -> dict[str, Any] | None:
    """Rerun a verification that failed at tolerance under the runtime's precise
    settings (``rerun``): whether they make the difference, in one line."""
    runtime = choice.runtime
    if runtime is None or not runtime.precise or failed.ok or not failed.cases or not any(c.outputs for c in failed.cases):
        return None
    precise = {k: v for k, v in runtime.precise.items() if choice.settings.get(k) != v}
    if not precise:
        return None
    again = rerun(choice.with_settings(precise))
    asked = ", ".join(f"{k}={v}" for k, v in precise.items())
    in_force = dict(failed.runner.get("settings", {})) if failed.runner else {}
    as_run = ", ".join(f"{k} {in_force.get(k, choice.settings.get(k, 'default'))}" for k in precise)
    head = f"{runtime.name}: max abs {failed.max_abs:.2g} with {as_run}"
    if again.ok:
        text = f"{head}; with {asked} it matches (max abs {again.max_abs:.2g})"
    else:
        text = f"{head}; with {asked} it still diverges (max abs {again.max_abs:.2g}): not a setting of {runtime.name}'s"
    return {
        "settings_as_run": {k: in_force.get(k, "") for k in precise}, "precise_settings": precise, "max_abs": failed.max_abs,
        "precise_max_abs": again.max_abs, "matches_with_precise": again.ok, "text": text,
    }
