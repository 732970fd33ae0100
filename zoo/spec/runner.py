"""The runner contract: what a runtime's ``load`` returns, and all that verification and bench use of it."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from zoo.errors import PluginError

DEFAULT_MARK = " (default)"  # a setting's value in force that nobody asked for: recorded, not shown in the verify line


@dataclasses.dataclass(frozen=True)
class RunnerInfo:
    """Which runtime computed the numbers: shown in reports and recorded in JSON.
    ``settings`` are the ones that change numerics, with the values in force
    (``{"inference_precision": "bf16"}``), defaults resolved where the runtime tells."""

    runtime: str
    version: str = ""
    device: str = "cpu"
    providers: tuple[str, ...] = ()  # onnxruntime's execution providers, in priority order
    settings: Mapping[str, str] = dataclasses.field(default_factory=dict)
    note: str = ""  # something the user should know (asked for CUDA, ran on the CPU)

    @property
    def description(self) -> str:
        """``onnxruntime 1.32.0`` plus the settings: the first words of a report's verify line."""
        text = f"{self.runtime} {self.version}".strip()
        shown = [f"{k} {v}" for k, v in self.settings.items() if not str(v).endswith(DEFAULT_MARK)]
        return text + (f" ({', '.join(shown)})" if shown else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.runtime, "version": self.version, "device": self.device, "providers": list(self.providers),
            "settings": dict(self.settings), "note": self.note, "description": self.description,
        }


class Runner(abc.ABC):
    """A loaded file, ready to run: what ``Runtime.load`` (or a format's own
    ``Exporter.load``) returns. Subclass it and set the attributes in ``__init__``.

    ``run(feed)`` maps input names to numpy arrays onto output names to numpy
    arrays. ``input_shapes`` gives each input's dimensions as the file declares
    them: an ``int`` for a fixed size, a ``str`` (or ``None``) for a dynamic one.
    """

    info: RunnerInfo
    input_names: list[str]
    output_names: list[str]
    input_shapes: dict[str, tuple[int | str | None, ...]]
    abortable = False  # True where abort() makes a running call return: zoo then waits for it before closing

    @abc.abstractmethod
    def run(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        """One call: numpy arrays in, numpy arrays out, by name."""

    def __call__(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        return self.run(feed)

    def abort(self) -> None:
        """Stop a ``run`` going on in another thread (``--timeout``, Ctrl-C), if the runtime can
        (then set ``abortable``); by default the call is left to finish in its daemon thread."""
        return None

    def close(self) -> None:
        """Free the runtime's resources now (after an aborted run, before the process exits)."""
        return None

    def timed_call(self, inputs: Mapping[str, Any], device: str) -> Callable[[], Any]:
        """What ``zoo bench`` times: one call on ``inputs`` (torch tensors). By default
        ``run`` on numpy copies; a runtime may keep CUDA tensors on the device instead."""
        feed = {name: tensor.detach().cpu().numpy() for name, tensor in inputs.items()}
        return lambda: self.run(feed)


REQUIRED = ("info", "input_names", "output_names", "input_shapes")


def check_runner(runner: Any, who: str) -> Runner:
    """``runner`` if it keeps the contract, checked once when loaded; else a
    ``PluginError`` naming ``who`` (``the openvino runtime (plugin 'x')``)."""
    if not isinstance(runner, Runner):
        raise PluginError(f"{who} load() returned {type(runner).__name__}, not a zoo.Runner (see docs/plugins.md#runners)")
    missing = [name for name in REQUIRED if name not in vars(runner) and name not in vars(type(runner))]
    if missing:
        raise PluginError(f"{who} returned a {type(runner).__name__} without {', '.join(missing)}; a zoo.Runner sets them in __init__")
    if not isinstance(runner.info, RunnerInfo):
        raise PluginError(f"{who} returned a runner whose info is a {type(runner.info).__name__}, not a zoo.RunnerInfo")
    return runner
