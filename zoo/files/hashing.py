"""File checksums: the sha256 of what a handle reads, in 1 MiB chunks (never the whole file in memory)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO

from zoo.progress import stage
from zoo.text import human_bytes

SHOW_EVERY = 64 << 20  # a terminal hears how far a large file's hash is every this many bytes


def sha256_of(handle: IO[bytes], name: str = "", size: int = 0) -> str:
    """``size`` (with ``name``): the file's size, past which its progress is announced."""
    digest = hashlib.sha256()
    done = 0
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
        done += len(chunk)
        if size > SHOW_EVERY and done % SHOW_EVERY < len(chunk):
            stage(f"sha256 of {name}: {human_bytes(done)} of {human_bytes(size)}")
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """The sha256 of a file zoo wrote (an untrusted one goes through its reader's checks first)."""
    with open(path, "rb") as handle:
        return sha256_of(handle, path.name, os.fstat(handle.fileno()).st_size)
