"""The one writer for reports and plots: atomic rename for a regular file, written through a link, into a device or FIFO."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from zoo.errors import OutputPathError, write_error
from zoo.files.paths import check_file_path, file_kind
from zoo.files.staging import staging
from zoo.records import json_text


def write_atomically(
    path: Path, write: Callable[[IO[bytes]], None], option: str, what: str = "write", outcome: str = "nothing was written"
) -> None:
    """Write a file through ``write(handle)``.

    A regular file (or a new one) is written into a temporary file beside it, then
    renamed into place: a failed or interrupted write leaves nothing. A link is
    followed, so the link stays and its target gets the new file. A character
    device (``/dev/null``) or a FIFO is written into, never replaced. The
    temporary name keeps the suffix (matplotlib picks a format by it).
    ``outcome``: what a failure leaves, for its message."""
    target = Path(os.path.realpath(path))
    try:
        info: os.stat_result | None = os.stat(target)
    except OSError:
        info = None
    if info is not None and not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):  # a folder: the rename fails
        _write_through(path, target, info, write, option, what, outcome)
        return
    # Staged in a locked folder of zoo's own beside the target: an interrupt at any point leaves
    # nothing behind, and SIGKILL a folder the next write here removes. The name keeps the suffix.
    try:
        failed = lambda exc: write_error(exc, path, what, option=option, outcome=outcome)  # noqa: E731 - the report's own words
        with staging(target, option, failed) as folder:
            temp = folder / target.name
            with open(temp, "xb") as handle:  # mode 0o666 less the umask, as any new file
                write(handle)
            os.replace(temp, target)
    except OSError as exc:
        raise write_error(exc, path, what, option=option, outcome=outcome) from exc


def _write_through(
    path: Path, target: Path, info: os.stat_result, write: Callable[[IO[bytes]], None], option: str, what: str, outcome: str
) -> None:
    """Write into a character device or FIFO; anything else that is not a regular file is refused."""
    if not (stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode)):
        raise OutputPathError(f"{option} {str(path)!r} is {file_kind(info.st_mode)}; give a regular file")
    try:
        # O_NONBLOCK: a FIFO nobody reads fails at once (ENXIO) instead of waiting forever
        fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OutputPathError(
                f"{option} {str(path)!r} is a FIFO (named pipe) that nobody is reading; start its reader first, or give a regular file"
            ) from exc
        raise write_error(exc, path, what, option=option, outcome=outcome) from exc
    os.set_blocking(fd, True)  # a slow reader makes the writes wait, not fail
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
    except OSError as exc:
        raise write_error(exc, path, what, option=option, outcome=outcome) from exc


def write_json(path: Path, data: Any, option: str, protected: Iterable[Path | None] = (), outcome: str = "nothing was written") -> None:
    """A JSON record (``--report``), written atomically, never over a ``protected`` file."""
    check_file_path(path, option, protected)
    text = json_text(data)
    write_atomically(path, lambda handle: handle.write(text.encode()), option, outcome=outcome)
