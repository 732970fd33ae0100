"""File checksums: the sha256 of what a handle reads, in 1 MiB chunks (never the whole file in memory)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO


def sha256_of(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """The sha256 of a file zoo wrote (an untrusted one goes through its reader's checks first)."""
    with open(path, "rb") as handle:
        return sha256_of(handle)
