"""Errors a user can act on.

The CLI prints ``str(error)`` as one line on stderr and exits with ``error.exit_code``;
anything that is not a ``ZooError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import re


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


class OutputWriteError(ZooError):
    """Writing the output failed part way (disk full, quota, I/O error); nothing was left (exit 1)."""


class PluginError(ZooError):
    """A plugin broke its contract (bad registration, build crashed)."""


class CheckFailed(ZooError):
    """A forward, head, loss or gradient check failed (exit 1)."""


class ExportFailed(ZooError):
    """The exporter could not export the model (exit 1)."""


class DownloadError(ZooError):
    """A download failed or does not match its entry's size and sha256; nothing was cached."""


class ClaimMissed(ZooError):
    """A weight set's claimed metric is not reached (by PyTorch, the exported file or a variant)."""


class VerificationFailed(ZooError):
    """The exported model does not compute what PyTorch computes (exit 1)."""


# errno values that mean "this folder cannot be written": the user should pick another (exit 2).
_PATH_ERRNOS = {"EACCES", "EPERM", "EROFS", "ENOENT", "ENOTDIR", "EISDIR", "ENAMETOOLONG"}
# errno values that mean "the disk gave out": a failed run, not a usage mistake (exit 1).
_SPACE_ERRNOS = {"ENOSPC", "EDQUOT", "EFBIG"}


def write_error(exc: OSError, path: object, what: str = "write", option: str = "-o", outcome: str = "nothing was written") -> ZooError:
    """A ``ZooError`` for an ``OSError`` met while writing ``path``, saying what to do
    (``option``: the command-line option that chooses another place; ``outcome``:
    what the failure left, such as a model placed before its report failed)."""
    code = errno.errorcode.get(exc.errno or 0, "")
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = f"{str(path)!r}"
    if code in _SPACE_ERRNOS:
        return OutputWriteError(
            f"cannot {what} {where}: {reason} ({code}); free some space or choose another folder with {option} ({outcome})"
        )
    if code in _PATH_ERRNOS:
        return OutputPathError(f"cannot {what} {where}: {reason} ({code}); choose a folder you can write to with {option}")
    label = f" ({code})" if code else ""
    return OutputWriteError(f"cannot {what} {where}: {reason}{label}; check the disk and try again ({outcome})")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def one_line(exc: BaseException, limit: int = 300, first_line: bool = False) -> str:
    """``Type: message`` on one line, for a warning or an error a user reads:
    whitespace (newlines included) collapsed, colour codes dropped, the message
    cut to ``limit`` characters with an ellipsis. ``first_line`` keeps only the
    first non-empty line (libraries that put the gist first, pages after it)."""
    message = _ANSI.sub("", str(exc))
    if first_line:
        message = next((line for line in message.splitlines() if line.strip()), "")
    text = " ".join(message.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def damaged_metadata(name: str, detail: str) -> UsageError:
    """The error for a file (``name``) whose zoo metadata zoo could not have written."""
    return UsageError(f"{name} has damaged zoo metadata: {detail}")
