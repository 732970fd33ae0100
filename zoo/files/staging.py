"""Files zoo writes: checked before any work, staged beside their target, placed atomically.

A model is written into a staging folder beside its final path (same file
system, so moving it is a rename), verified there, and only then moved into
place, side files first and the main file last. Without ``--force`` placing
fails if anything appeared at the path meanwhile (a hard link never replaces).
Reports and plots go through one writer: a regular file is replaced by an
atomic rename, a link is written through to its target, a device or FIFO is
written into, never replaced. A path a command reads (the model, its weights,
the file being verified) is never a path it writes. A staging folder is locked
while it lives: the next export into that folder removes one whose owner died.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import OutputPathError, write_error
from zoo.files.hashing import sha256_file
from zoo.files.paths import lstat_or_none, refuse_irregular_output, warn
from zoo.host.plugin_calls import call_exporter
from zoo.spec.exporter import Exporter
from zoo.spec.job import META_PREFIX

# Side files zoo itself writes are named after their main file: NAME.onnx -> NAME.onnx.data.
SIDE_SUFFIX = ".data"
# Staging folders: .NAME.zoo-PID-RANDOM.tmp, holding a lock file while their export lives;
# temporary files of reports and plots: .NAME.zoo-PID-RANDOM.tmp.SUFFIX (or no suffix).
LEFTOVER_GLOB = ".*.zoo-*.tmp*"
_OWNED_NAME = re.compile(r"\.zoo-(\d+)-[0-9a-f]+\.tmp(\.[^.]+)?$")
LOCK_NAME = ".lock"


@contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` (same file system, so moves are atomic
    renames), locked while it lives and removed with whatever is left in it.
    Folders of dead exports found there first (SIGKILL, a crash) are removed."""
    sweep_leftovers(final.parent)
    # The name is known before the folder exists, so an interrupt at any point still removes it.
    temp = final.parent / f".{final.name}.zoo-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    ours, lock = True, None
    try:
        try:
            os.mkdir(temp, 0o700)
        except OSError as exc:
            ours = not isinstance(exc, FileExistsError)
            raise write_error(exc, final.parent, "create a staging folder in") from exc
        lock = _hold_lock(temp)
        yield temp
    finally:
        if ours:
            shutil.rmtree(temp, ignore_errors=True)
        if lock is not None:
            os.close(lock)


def _hold_lock(folder: Path) -> int | None:
    """An ``flock`` on ``folder/.lock``, held until the descriptor closes (the kernel
    closes it when the process dies, however it dies). The file is locked under
    another name, then renamed: a sweep never finds a lock file nobody holds yet."""
    try:
        fd, name = tempfile.mkstemp(prefix=".lock.", dir=folder)
    except OSError as exc:
        raise write_error(exc, folder.parent, "create a staging folder in") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(name, folder / LOCK_NAME)
    except OSError:  # a file system without locks: the folder is never swept, which is safe
        os.close(fd)
        return None
    return fd


def sweep_leftovers(folder: Path) -> list[Path]:
    """Remove what dead zoo processes left in ``folder`` (SIGKILL, a segfault, the
    OOM killer). A staging folder goes once the kernel has released its lock (a
    live export holds it); one without a lock file (its export died between
    making the folder and locking it, or the file system has no locks), and a
    report's or plot's temporary file, only when no process has the PID in its name."""
    removed = []
    try:
        found = [p for p in folder.glob(LEFTOVER_GLOB) if _OWNED_NAME.search(p.name) and not p.is_symlink()]
    except OSError:
        return removed
    for path in found:
        if path.is_file():
            if _owner_gone(path):
                try:
                    path.unlink()
                except OSError:  # gone meanwhile, or not ours to remove (permissions): left
                    continue
                removed.append(path)
            continue
        if not (path.is_dir() and path.name.endswith(".tmp")):
            continue
        try:
            fd = os.open(path / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            if _owner_gone(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its export is alive
            os.close(fd)
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def _owner_gone(path: Path) -> bool:
    """Whether the process named in a staging folder's or temporary file's name
    (``.NAME.zoo-PID-RANDOM.tmp``, ``….tmp.SUFFIX``) no longer exists."""
    match = _OWNED_NAME.search(path.name)
    if match is None:
        return False
    try:
        os.kill(int(match[1]), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # alive but not ours (EPERM), or no such PID on this system
        return False
    return False


def check_side_files(written: list[Path], main: Path, final: Path, force: bool) -> None:
    """Refuse side files (``NAME.onnx.data``) that would replace existing files, as
    ``check_output_path`` does for the main file; they are only known after export."""
    for side in written:
        if side == main:
            continue
        target = final.parent / side.name
        if target.is_dir():
            raise OutputPathError(f"the export writes {str(target)!r} beside {final.name}, but that is a directory; choose another -o")
        info = lstat_or_none(target)
        refuse_irregular_output(target, info)
        if info is not None and not force:
            raise OutputPathError(f"the export writes {str(target)!r} beside {final.name}, which already exists; pass --force to overwrite it")


@dataclass(frozen=True)
class OldSideFiles:
    """The files a file that ``--force`` replaces names as its data."""

    own: list[Path] = field(default_factory=list)  # zoo wrote them for it: removed once the new files are in place
    foreign: list[Path] = field(default_factory=list)  # anything else it names: left, with a warning


def place(
    written: list[Path], main: Path, final: Path, force: bool = False, old: OldSideFiles | None = None, keep: Iterable[Path] = ()
) -> list[Path]:
    """Move the files next to ``final``, the main file last: it refers to the
    others by name, so it only appears once they are all there. Side files that
    would replace existing ones without ``force`` stop it before anything moves.
    Without ``force`` each move fails if anything is at its path at that instant.

    ``old``: the replaced file's side files (``old_side_files``); zoo's own are
    removed once the new files are in place, unless the new export wrote them or
    they are in ``keep``."""
    check_side_files(written, main, final, force)
    moves = [(side, final.parent / side.name) for side in written if side != main] + [(main, final)]
    placed: list[Path] = []
    try:
        for source, target in moves:
            _move(source, target, force)
            placed.append(target)
    except BaseException as exc:
        for target in placed:  # a side file already moved would be an orphan
            target.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(exc, final, "move the export into") from exc
        raise
    kept = {p.resolve() for p in [*placed, *keep]}
    for path in (old.own if old else []):  # the replaced file's NAME.onnx.data, which nothing refers to now
        if path.resolve() not in kept:
            path.unlink(missing_ok=True)
    for path in (old.foreign if old else []):
        if path.resolve() not in kept:
            shown = path.name if path.parent == final.parent else str(path)
            warn(f"left {shown}: the replaced {final.name} named it as data, but zoo did not write it")
    return [final, *placed[:-1]]


def _move(source: Path, target: Path, force: bool) -> None:
    """Rename ``source`` to ``target``. ``force`` replaces a regular file only;
    without it, a hard link claims the name, failing if anything is there now."""
    if force:
        refuse_irregular_output(target, lstat_or_none(target))
        os.replace(source, target)
        return
    try:
        try:
            os.link(source, target)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK) or isinstance(exc, FileExistsError):
                raise
            # no hard links on this file system: claim the name with O_EXCL, then rename over the claim
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.replace(source, target)
            return
    except FileExistsError:
        raise OutputPathError(
            f"{str(target)!r} appeared while exporting (another program or zoo run wrote it) and was left as it is; "
            "pass --force to overwrite it, or choose another -o"
        ) from None
    source.unlink()


def old_side_files(exporter: Exporter, path: Path) -> OldSideFiles:
    """The side files of the file ``--force`` is about to replace, as its exporter
    lists them. They are untrusted (any file may name any path as its data): only
    the one zoo writes, ``NAME.onnx.data`` beside a file with zoo's metadata, is
    zoo's to remove; the others are left."""
    info = lstat_or_none(path)
    if exporter.files is None or info is None or not stat.S_ISREG(info.st_mode):
        return OldSideFiles()
    try:
        listed = side_files(exporter, path, error=OutputPathError)
        meta = call_exporter(exporter.read_metadata, path, error=OutputPathError, what=f"not a {exporter.name} file")
    except OutputPathError:  # not a file of this format: there is nothing of ours to clean up
        return OldSideFiles()

    written_by_zoo = f"{META_PREFIX}architecture" in dict(meta or {})
    own_name = os.path.normpath(path.parent / (path.name + SIDE_SUFFIX))
    old = OldSideFiles()
    for side in listed:
        side_info = lstat_or_none(side)
        if side_info is None or os.path.normpath(side) == os.path.normpath(path):
            continue
        mine = written_by_zoo and os.path.normpath(side) == own_name and stat.S_ISREG(side_info.st_mode)
        (old.own if mine else old.foreign).append(side)
    return old


def side_files(exporter: Exporter, path: Path, error: Callable[[str], Any]) -> list[Path]:
    """The files beside ``path`` that belong to it, as the exporter says."""
    if exporter.files is None:
        return []
    listed = call_exporter(exporter.files, path, error=error, what=f"{exporter.name} could not list the files of {path.name}")
    return [Path(p) for p in listed]


def file_record(path: Path) -> dict[str, Any]:
    """Path, size and sha256 of a written file, for the summary and the report."""
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)} if path.exists() else {"path": str(path)}
