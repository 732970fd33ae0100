"""Errors a user can act on.

The CLI prints ``str(error)`` as one line on stderr and exits with ``error.exit_code``;
anything that is not a ``ZooError`` is a bug and keeps its traceback.
"""

from __future__ import annotations


class ZooError(Exception):
    """Base class: a message that says what went wrong and what to do."""

    exit_code = 1


class UsageError(ZooError):
    """The command line asked for something that cannot be done (exit 2)."""

    exit_code = 2


class UnknownArchitectureError(UsageError):
    """No architecture matches the name; the message lists close matches."""


class ParameterError(UsageError):
    """A build parameter is unknown or has a bad value.

    Plugins may raise it from ``build`` to reject a value (``n_classes=0``).
    """


class DeviceError(UsageError):
    """The requested device does not exist on this machine."""


class WeightsError(UsageError):
    """A weights file is missing, unreadable or does not fit the architecture."""


class OutputPathError(UsageError):
    """The output path cannot be written (missing folder, exists, not writable)."""


class PluginError(ZooError):
    """A plugin broke its contract (bad registration, build crashed)."""


class CheckFailed(ZooError):
    """A forward, head, loss or gradient check failed (exit 1)."""


class ExportFailed(ZooError):
    """The exporter could not export the model (exit 1)."""


class VerificationFailed(ZooError):
    """The exported model does not compute what PyTorch computes (exit 1)."""
