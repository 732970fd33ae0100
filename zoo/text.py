"""Numbers and names as zoo prints them: seconds, rates, bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def human_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def human_rate(per_second: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_second >= scale:
            return f"{per_second / scale:.1f}{unit}"
    return f"{per_second:.0f}"


def human_bytes(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size} B"


def sizes_text(sizes: Mapping[str, int]) -> str:
    """``batch=2, seq=8``: the sizes of a case as the CLI and error lines name them."""
    return ", ".join(f"{name}={size}" for name, size in sizes.items())


def dtype_text(dtype: Any) -> str:
    """A dtype (torch's, numpy's or a name) as zoo's specs spell it: ``float32``."""
    return str(dtype).removeprefix("torch.")
