"""The one writer for reports and plots: atomic rename for a regular file, written through a link, into a device or FIFO."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from zoo.errors import OutputPathError, write_error
from zoo.files.paths import check_file_path, file_kind
from zoo.files.staging import sweep_leftovers
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
    sweep_leftovers(target.parent)
    # A name of our own, created with O_EXCL: an interrupt at any point leaves no temporary file behind,
    # and SIGKILL one that the next write here removes (its PID is in the name).
    temp: Path | None = target.parent / f".{target.name}.zoo-{os.getpid()}-{secrets.token_hex(4)}.tmp{target.suffix}"
    try:
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as to any new file
        except FileExistsError:
            temp = None  # not ours to remove
            raise
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(temp, target)
        temp = None
    except OSError as exc:
        raise write_error(exc, path, what, option=option, outcome=outcome) from exc
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)


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
