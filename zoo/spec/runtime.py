"""The runtime spec plugins register: a runtime that runs files of some formats, its settings and its availability."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from zoo.spec.architecture import check_name


@dataclass(frozen=True)
class Setting:
    """One setting a runtime takes from ``--runtime NAME:KEY=VALUE``: ``choices``
    lists the values it accepts (empty: a positive integer, such as a thread count)."""

    summary: str
    choices: tuple[str, ...] = ()

    def check(self, runtime: str, key: str, value: str) -> str:
        if self.choices and value not in self.choices:
            raise ValueError(f"--runtime {runtime}:{key}={value}: {key} takes {', '.join(self.choices)}")
        if not self.choices and not (value.isdigit() and int(value) > 0):
            raise ValueError(f"--runtime {runtime}:{key}={value}: {key} takes a positive integer")
        return value


@dataclass(frozen=True)
class Runtime:
    """A runtime: what a plugin passes to ``register`` in ``register_runtimes``.

    ``load(path, device, settings)`` returns a ``zoo.Runner`` for the file at
    ``path`` on ``device`` under ``settings`` (``{key: value}``, already checked
    against ``settings``' declarations). ``formats`` are the exporter names
    whose files it runs (``("onnx",)``).

    Optional: ``available()`` says whether it can run here (its library is
    installed); when not, ``install`` is the one line that says how to get it.
    ``devices()`` lists the devices it can run on here. ``precise`` are the
    settings under which it computes as exactly as it can: when a file fails at
    float32 tolerance, zoo reruns the case under them and says whether they
    make the difference. ``intermediates(path, feed, settings)`` runs the file
    with its inner values exposed, like ``Exporter.intermediates``, so a failed
    verification names where this runtime diverges. ``version()`` for
    ``zoo plugins``. ``refused_dtypes`` are input dtypes its API cannot take
    (onnxruntime's Python API: ``bfloat16``, numpy having none): a model with
    such an input is refused before it is built and exported.
    """

    name: str
    formats: tuple[str, ...]
    load: Callable[..., Any]
    summary: str = ""
    install: str = ""
    available: Callable[[], bool] = lambda: True
    devices: Callable[[], tuple[str, ...]] = lambda: ("cpu",)
    version: Callable[[], str] = lambda: ""
    settings: Mapping[str, Setting] = dataclasses.field(default_factory=dict)
    precise: Mapping[str, str] = dataclasses.field(default_factory=dict)
    intermediates: Callable[..., list[dict[str, Any]]] | None = None
    refused_dtypes: tuple[str, ...] = ()
    plugin: str = ""

    def __post_init__(self) -> None:
        check_name(self.name, "runtime")
        if isinstance(self.formats, str) or not self.formats:
            raise ValueError(f"runtime {self.name!r}: formats must be a tuple of exporter names, such as ('onnx',)")
        if isinstance(self.refused_dtypes, str) or not all(isinstance(d, str) for d in self.refused_dtypes):
            raise ValueError(f"runtime {self.name!r}: refused_dtypes must be a tuple of dtype names, such as ('bfloat16',)")
        for key, value in self.precise.items():
            if key not in self.settings:
                raise ValueError(f"runtime {self.name!r}: precise setting {key!r} is not one of its settings")
            self.settings[key].check(self.name, key, value)

    def with_plugin(self, plugin: str) -> Runtime:
        return dataclasses.replace(self, plugin=plugin)

    def check_settings(self, settings: Mapping[str, str]) -> dict[str, str]:
        """``settings`` checked against the declared ones; ``ValueError`` says what it takes."""
        for key, value in settings.items():
            if key not in self.settings:
                known = ", ".join(self.settings) or "none"
                raise ValueError(f"--runtime {self.name}:{key}={value}: {self.name} has no setting {key!r}; it takes: {known}")
            self.settings[key].check(self.name, key, value)
        return dict(settings)

    def to_dict(self, available: bool, devices: tuple[str, ...], version: str) -> dict[str, Any]:
        """A JSON-ready description (``zoo plugins --json``)."""
        return {
            "name": self.name, "plugin": self.plugin, "formats": list(self.formats), "summary": self.summary,
            "available": available, "install": None if available else self.install, "devices": list(devices),
            "version": version or None,
            "settings": {k: {"summary": s.summary, "choices": list(s.choices)} for k, s in self.settings.items()},
            "precise": dict(self.precise), "refused_dtypes": list(self.refused_dtypes),
        }
