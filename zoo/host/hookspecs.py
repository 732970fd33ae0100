"""The hooks a zoo plugin can implement.

A plugin is a module (or any object) with functions marked ``@zoo.hookimpl``
whose names and argument names match the specs below. Third-party plugins are
found through the ``zoo`` entry-point group::

    [project.entry-points.zoo]
    my_models = "my_models"

Each hook is called once per plugin, in isolation: if one plugin raises, what
it registered in that call is dropped, the failure is reported with its name,
and every other plugin still loads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from zoo.spec.architecture import Architecture
    from zoo.spec.exporter import Exporter
    from zoo.spec.runtime import Runtime
    from zoo.spec.task import Task
    from zoo.spec.weights import Weights

PROJECT = "zoo"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_architectures(register: Callable[[Architecture], None]) -> None:
    """Register model architectures.

    Called once per plugin when zoo loads its plugins (every command does).
    Call ``register(Architecture(...))`` once per architecture. Keep imports of
    torch inside the ``build`` callables, so ``zoo list`` stays fast. A name or
    alias already taken by another plugin is refused and reported.
    """


@hookspec
def register_tasks(register: Callable[[Task], None]) -> None:
    """Register tasks, named by ``Output(task=NAME)``: a task brings the loss
    (in PyTorch, and again in numpy float64 for the closed-form check), the
    targets to compute it on, and how verification compares decisions.

    Called once per plugin when zoo loads its plugins, before any architecture
    is registered, so an architecture may use a task of any plugin. Call
    ``register(Task(...))`` once per task. A name another plugin took is
    refused and reported; an architecture whose output names a task that no
    plugin registered, or a head the task does not take, is refused.
    """


@hookspec
def register_exporters(register: Callable[[Exporter], None]) -> None:
    """Register export formats, selected with ``zoo export --format NAME``.

    Called once per plugin when zoo loads its plugins. Call
    ``register(Exporter(...))`` once per format; import the format's heavy
    libraries inside its ``export``/``load`` callables.
    """


@hookspec
def register_weights(register: Callable[[Weights], None]) -> None:
    """Register trained weight sets, selected with ``zoo export ARCH --weights NAME``.

    Called once per plugin after every architecture is registered, so a plugin
    may register weights for another plugin's architecture. Call
    ``register(Weights(...))`` once per weight set. A weight set for an unknown
    architecture, with parameters it does not take, or with a name that
    architecture already has, is refused and reported.
    """


@hookspec
def register_runtimes(register: Callable[[Runtime], None]) -> None:
    """Register runtimes, selected with ``--runtime NAME`` on ``zoo export``,
    ``verify`` and ``bench``: each runs the files of the formats it names.

    Called once per plugin when zoo loads its plugins. Call
    ``register(Runtime(...))`` once per runtime; import its library inside its
    ``load``/``available``/``version`` callables, so a missing one only makes it
    unavailable (``zoo plugins`` shows its ``install`` line).
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``zoo`` CLI.

    Called once per plugin when the CLI starts, with the group that collects
    plugin commands: use ``@cli.command()``. A command whose name a built-in
    command already has is refused and reported.
    """
