"""Progress of a long command: the stage it is in, for a terminal to show.

The library announces stages (``stage("verify")``); whoever runs it decides
whether and how to show them (``showing(sink)``). The CLI shows them on one
rewritten line of stderr when stderr is a terminal, and not at all otherwise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_sink: ContextVar[Callable[[str], None] | None] = ContextVar("zoo_progress", default=None)


@contextmanager
def showing(sink: Callable[[str], None] | None) -> Iterator[None]:
    """Send the stages announced inside to ``sink`` (``None``: nowhere)."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


def stage(text: str) -> None:
    """Announce the stage now being run."""
    sink = _sink.get()
    if sink is not None:
        sink(text)


@contextmanager
def terminal_progress(name: str | None, as_json: bool = False) -> Iterator[None]:
    """Show ``name``'s stages on one rewritten line of stderr: only on a terminal,
    for one model (``name``), and never with ``--json``."""
    stream = sys.stderr
    if name is None or as_json or not stream.isatty():
        yield
        return

    def show(text: str) -> None:
        stream.write(f"\r\x1b[K{name}: {text} …")
        stream.flush()

    with showing(show):
        try:
            yield
        finally:
            stream.write("\r\x1b[K")  # the summary that follows starts on a clean line
            stream.flush()


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Time a stage (summed into ``timings``), announcing it to a terminal."""
    stage(name)
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
