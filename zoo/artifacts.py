"""Files zoo writes: checked before any work, staged beside their target, placed atomically.

A model is written into a staging folder beside its final path (same file
system, so moving it is a rename), verified there, and only then moved into
place, side files first and the main file last. Reports and plots go through
one atomic writer. A path a command reads (the model, its weights, the file
being verified) is never a path it writes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from zoo.errors import OutputPathError, write_error
from zoo.exporter_calls import call_exporter
from zoo.spec import Exporter


def check_output_path(path: Path, force: bool) -> None:
    """Refuse paths that cannot end in a good file, before any work is done."""
    parent = path.parent
    if path.is_dir():
        raise OutputPathError(f"output {str(path)!r} is a directory; give a file name such as {str(path / 'model.onnx')!r}")
    if parent.exists() and not parent.is_dir():
        raise OutputPathError(f"output folder {str(parent)!r} is a file, not a folder; choose another path with -o")
    if not parent.is_dir():
        raise OutputPathError(f"output folder {str(parent)!r} does not exist; create it first")
    if path.exists() and not force:
        raise OutputPathError(f"{str(path)!r} already exists; pass --force to overwrite it")
    probe_writable(parent)


def check_file_path(path: Path, option: str, protected: Iterable[Path | None] = (), example: str = "") -> None:
    """Refuse a ``--report``/``--plot`` path that cannot be written, or that is one
    of the ``protected`` files the command reads or writes (the model, its weights,
    the file being verified): the new file would replace it, and the command still exit 0."""
    if path.is_dir():
        raise OutputPathError(f"{option} {str(path)!r} is a directory; give a file name{example}")
    if not path.parent.is_dir():
        raise OutputPathError(f"{option} folder {str(path.parent)!r} does not exist; create it first")
    resolved = path.resolve()
    for other in protected:
        if other is not None and other.resolve() == resolved:
            raise OutputPathError(
                f"{option} {str(path)!r} would overwrite {str(other)!r}, a file this command reads or writes; "
                "give it its own name"
            )
    probe_writable(path.parent, option)


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


def write_atomically(path: Path, write: Callable[[IO[bytes]], None], option: str, what: str = "write") -> None:
    """Write a file through ``write(handle)`` into a temporary file beside ``path``,
    then rename it into place: a failed or interrupted write leaves nothing. The
    temporary name keeps ``path``'s suffix (matplotlib picks a format by it)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    except OSError as exc:
        raise write_error(exc, path, what, option=option) from exc
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600; a report or plot is an ordinary file
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise write_error(exc, path, what, option=option) from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any, option: str, protected: Iterable[Path | None] = ()) -> None:
    """A JSON record (``--report``), written atomically, never over a ``protected`` file."""
    from zoo.records import json_text

    check_file_path(path, option, protected)
    text = json_text(data)
    write_atomically(path, lambda handle: handle.write(text.encode()), option)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` (same file system, so moves are atomic
    renames); removed with whatever is left in it."""
    try:
        temp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except OSError as exc:
        raise write_error(exc, final.parent, "create a staging folder in") from exc
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def check_side_files(written: list[Path], main: Path, final: Path, force: bool) -> None:
    """Refuse side files (``NAME.onnx.data``) that would replace existing files, as
    ``check_output_path`` does for the main file; they are only known after export."""
    for side in written:
        if side == main:
            continue
        target = final.parent / side.name
        if target.is_dir():
            raise OutputPathError(f"the export writes {str(target)!r} beside {final.name}, but that is a directory; choose another -o")
        if target.exists() and not force:
            raise OutputPathError(f"the export writes {str(target)!r} beside {final.name}, which already exists; pass --force to overwrite it")


def place(
    written: list[Path], main: Path, final: Path, force: bool = False, stale: Iterable[Path] = (), keep: Iterable[Path] = ()
) -> list[Path]:
    """Move the files next to ``final``, the main file last: it refers to the
    others by name, so it only appears once they are all there. Side files that
    would replace existing ones without ``force`` stop it before anything moves.

    ``stale``: the replaced file's side files (``old_side_files``), removed once the
    new files are in place unless the new export wrote them or they are in ``keep``."""
    check_side_files(written, main, final, force)
    placed = []
    try:
        for side in written:
            if side != main:
                target = final.parent / side.name
                os.replace(side, target)
                placed.append(target)
        os.replace(main, final)
    except OSError as exc:
        for target in placed:  # a side file already moved would be an orphan
            target.unlink(missing_ok=True)
        raise write_error(exc, final, "move the export into") from exc
    kept = {p.resolve() for p in [final, *placed, *keep]}
    for old in stale:  # the replaced file's NAME.onnx.data, which nothing refers to now
        if old.resolve() not in kept:
            old.unlink(missing_ok=True)
    return [final, *placed]


def old_side_files(exporter: Exporter, path: Path) -> list[Path]:
    """The side files of the file ``--force`` is about to replace, as its exporter
    lists them: only regular files in the same folder, never the main file."""
    if exporter.files is None or not path.is_file():
        return []
    try:
        listed = side_files(exporter, path, error=OutputPathError)
    except OutputPathError:  # not a file of this format: there is nothing of ours to clean up
        return []
    folder = path.parent.resolve()
    return [p for p in listed if p.parent.resolve() == folder and p.is_file() and p.resolve() != path.resolve()]


def side_files(exporter: Exporter, path: Path, error: Callable[[str], Any]) -> list[Path]:
    """The files beside ``path`` that belong to it, as the exporter says."""
    if exporter.files is None:
        return []
    listed = call_exporter(exporter.files, path, error=error, what=f"{exporter.name} could not list the files of {path.name}")
    return [Path(p) for p in listed]


def file_record(path: Path) -> dict[str, Any]:
    """Path, size and sha256 of a written file, for the summary and the report."""
    from zoo.weights import sha256

    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256(path)} if path.exists() else {"path": str(path)}
