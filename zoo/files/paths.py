"""Paths zoo reads and writes, checked before any work: kinds of file, refused names, writable folders."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from zoo.errors import OutputPathError, UsageError, ZooError

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a path is, in a user's words, from its ``st_mode``."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def lstat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def check_input_file(path: Path, hint: str, error: Callable[[str], ZooError] = UsageError, subject: str = "") -> os.stat_result:
    """``os.stat`` of ``path`` if it is a regular file (links followed); else one
    line that names it (``subject``: what it is for, "weights file "), says what
    it is, and ``hint``. Opens nothing: opening a FIFO would block."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        what = "is a link to a file that does not exist" if os.path.islink(path) else "does not exist"
        raise error(f"{subject}{str(path)!r} {what}; {hint}") from None
    except OSError as exc:  # permission denied on a parent folder, a loop of links
        raise error(f"cannot read {subject}{str(path)!r}: {exc.strerror or exc}; {hint}") from None
    refuse_irregular_input(path, info, hint, error, subject)
    return info


def refuse_irregular_input(path: Path, info: os.stat_result, hint: str, error: Callable[[str], ZooError], subject: str = "") -> None:
    """``check_input_file``'s refusal, for a ``stat`` taken elsewhere (``os.fstat`` of an open file)."""
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{subject}{str(path)!r} is {file_kind(info.st_mode)}, not a regular file; {hint}")


def refuse_folder_name(raw: str | os.PathLike[str], example: str, option: str = "-o") -> None:
    """``-o newdir/`` names a folder; ``Path`` drops the slash, and the file would be called ``newdir``."""
    text = os.fspath(raw)
    if text.endswith(("/", os.sep)):
        create = "" if Path(text).is_dir() else " (create the folder first)"
        raise OutputPathError(f"{option} {text!r} names a folder; give a file name such as {str(Path(text) / example)!r}{create}")


def refuse_irregular_output(path: Path, info: os.stat_result | None, option: str = "-o") -> None:
    """A model replaces only a regular file: never a link (its target would be
    left behind, the link gone) nor a device, FIFO or socket."""
    if info is None or stat.S_ISREG(info.st_mode):
        return
    if stat.S_ISLNK(info.st_mode):
        raise OutputPathError(
            f"{option} {str(path)!r} is a symbolic link (to {os.readlink(path)!r}); zoo does not replace links: "
            "give the path it points to, or another name"
        )
    raise OutputPathError(f"{option} {str(path)!r} is {file_kind(info.st_mode)}, not a regular file; choose another path with {option}")


def check_output_path(path: Path, force: bool) -> None:
    """Refuse paths that cannot end in a good file, before any work is done."""
    parent = path.parent
    if path.is_dir():
        raise OutputPathError(f"output {str(path)!r} is a directory; give a file name such as {str(path / 'model.onnx')!r}")
    if parent.exists() and not parent.is_dir():
        raise OutputPathError(f"output folder {str(parent)!r} is a file, not a folder; choose another path with -o")
    if not parent.is_dir():
        raise OutputPathError(f"output folder {str(parent)!r} does not exist; create it first")
    info = lstat_or_none(path)
    refuse_irregular_output(path, info)
    if info is not None and not force:
        raise OutputPathError(f"{str(path)!r} already exists; pass --force to overwrite it")
    probe_writable(parent)


def check_file_path(path: Path, option: str, protected: Iterable[Path | None] = (), example: str = "") -> None:
    """Refuse a ``--report``/``--plot`` path that cannot be written, or that is one
    of the ``protected`` files the command reads or writes (the model, its weights,
    the file being verified): the new file would replace it, and the command still exit 0.
    A link is judged by its target, which is what ``write_atomically`` writes."""
    if path.is_dir():
        raise OutputPathError(f"{option} {str(path)!r} is a directory; give a file name{example}")
    target = Path(os.path.realpath(path))
    if not target.parent.is_dir():
        folder = target.parent if path.is_symlink() else path.parent
        raise OutputPathError(f"{option} folder {str(folder)!r} does not exist; create it first")
    for other in protected:
        if other is not None and other.resolve() == target:
            raise OutputPathError(
                f"{option} {str(path)!r} would overwrite {str(other)!r}, a file this command reads or writes; "
                "give it its own name"
            )
    try:
        info: os.stat_result | None = os.stat(target)
    except OSError:
        info = None
    if info is None or stat.S_ISREG(info.st_mode):
        probe_writable(target.parent, option)
    elif not (stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode)):
        raise OutputPathError(f"{option} {str(path)!r} is {file_kind(info.st_mode)}; give a regular file")
    elif not os.access(target, os.W_OK):
        raise OutputPathError(f"{option} {str(path)!r} is {file_kind(info.st_mode)} you cannot write to; choose another")


def probe_writable(folder: Path, option: str = "-o") -> None:
    """Prove ``folder`` takes a new file by making (and removing) one.

    ``os.access`` is not enough: root passes it on read-only mounts, and so do
    folders of special file systems (``/proc``, ``/sys``) that refuse new files.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=".zoo-write-test.", dir=folder)
    except OSError as exc:
        raise OutputPathError(
            f"{option} folder {str(folder)!r} is not writable ({exc.strerror or type(exc).__name__}); choose another"
        ) from exc
    os.close(fd)
    Path(name).unlink(missing_ok=True)


def warn(message: str) -> None:
    """A warning line on stderr: something zoo chose not to do, that a user should know."""
    print(f"zoo: warning: {message}", file=sys.stderr)
