"""Reading an untrusted ``.npz`` (``--inputs``): every member validated before any array is built.

``numpy.load`` trusts a member's ``.npy`` header: a header that declares a huge
shape allocates it, a pickled or non-``.npy`` member, an encrypted one or an
unknown compression method fails with a traceback. Here each member must be a
stored or deflated ``.npy`` of a plain dtype whose header's size fits both the
byte cap and the bytes the member holds; only then is it read.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import Any

from zoo.errors import UsageError
from zoo.text import shorten

MAX_MEMBERS = 1024  # an input file holds one array per model input
COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def read_npz(path: Path, where: str, max_bytes: int, hint: str) -> dict[str, Any]:
    """The arrays of ``path`` by key, or a ``UsageError`` saying why the file is refused.
    ``where``: how messages name the file; ``hint``: how to write a good one."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            _check_members(members, where, max_bytes)
            return {info.filename[: -len(".npy")]: _read_member(archive, info, where, max_bytes) for info in members}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError, ValueError) as exc:
        raise UsageError(f"{where} is not a readable .npz file ({shorten(exc, 200)}); {hint}") from exc


def _check_members(members: list[zipfile.ZipInfo], where: str, max_bytes: int) -> None:
    if len(members) > MAX_MEMBERS:
        raise UsageError(f"{where} has {len(members):,} members, over the {MAX_MEMBERS:,} zoo reads; give one array per model input")
    unpacked = sum(info.file_size for info in members)
    if unpacked > max_bytes:
        raise UsageError(f"{where} unpacks to {unpacked:,} bytes, over the {max_bytes:,} zoo verifies on; give fewer rows")
    for info in members:
        name = repr(shorten(info.filename))
        if not info.filename.endswith(".npy"):
            raise UsageError(f"{where}: member {name} is not an .npy array; write the file with numpy.savez")
        if info.flag_bits & 0x1:
            raise UsageError(f"{where}: member {name} is encrypted; write the file with numpy.savez")
        if info.compress_type not in COMPRESSIONS:
            raise UsageError(
                f"{where}: member {name} uses compression method {info.compress_type}; zoo reads stored or deflated members "
                "(numpy.savez or numpy.savez_compressed)"
            )


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, max_bytes: int) -> Any:
    """One member's array, after its header's shape and dtype were checked against the bytes it holds."""
    import numpy as np
    from numpy.lib import format as npy

    name = repr(shorten(info.filename[: -len(".npy")]))
    with archive.open(info) as member:
        version = npy.read_magic(member)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = read_header(member, max_header_size=10_000)
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise UsageError(f"{where}: {name} is an array of {dtype} (it needs pickle): it could not be read without running code; give plain numeric arrays")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > max_bytes:
            raise UsageError(f"{where}: the header of {name} declares shape {shorten(shape)}: {nbytes:,} bytes, over the {max_bytes:,} zoo reads")
        buffer = bytearray(nbytes)  # the array's own memory: filled in place, no second copy
        view, filled = memoryview(buffer), 0
        while filled < nbytes and (count := member.readinto(view[filled:])):
            filled += count
        extra = member.read(1)
    if filled != nbytes or extra:
        held = f"{filled:,}" if not extra else f"more than {nbytes:,}"
        raise UsageError(f"{where}: {name} holds {held} bytes where its header declares {nbytes:,}; the file is damaged")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F" if fortran else "C")
