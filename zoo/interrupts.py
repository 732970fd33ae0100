"""Ctrl-C, SIGTERM and SIGHUP: one way out, with the staging folder cleaned up.

While a command works, each of these signals raises ``Interrupted`` (a
``KeyboardInterrupt``), so every ``finally`` and context manager on the way out
runs, as for Ctrl-C. Libraries sometimes swallow the interrupt (an import of
torch cut in half later fails as an ``AttributeError``): ``received`` counts the
signals, so the failure they cause is reported as the interrupt it was, and an
export that ran on regardless stops before it places a file. Once
the command's work is done (files placed, report written: ``work_done``), a
late signal changes nothing: the summary is printed whole, and the ``zoo``
program then ends at once with the work's status, even in a slow shutdown.
"""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A signal that ends the command: exits ``128 + signal number``."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def line(self) -> str:
        name = signal.Signals(self.signum).name
        return "zoo: interrupted" if self.signum == signal.SIGINT else f"zoo: interrupted ({name})"


class _State:
    received: list[int] = []  # noqa: RUF012 - one process, one list
    done: int | None = None  # the work's exit status, once it is known
    printed = False  # the command has returned: its result is printed
    deferring = False  # within ``signals_deferred``: a signal is raised when it ends
    program = False  # this process is the zoo program (main), not a library caller
    abandoned = False  # a native call (a runtime past --timeout) was left running in a thread


def received() -> int:
    """How many of the handled signals arrived during the current command."""
    return len(_State.received)


def interrupt_since(count: int) -> Interrupted | None:
    """The interrupt that arrived after ``received()`` was ``count``, if any."""
    return Interrupted(_State.received[-1]) if len(_State.received) > count else None


def stop_if_interrupted(count: int = 0) -> None:
    """Raise the interrupt that arrived after ``received()`` was ``count``: a library
    that swallowed it (in a ``__del__``, a callback, a broad ``except``) went on as
    if nothing had happened, but the user asked zoo to stop."""
    interrupt = interrupt_since(count)
    if interrupt is not None and not _State.deferring:  # within ``signals_deferred``: raised when it ends
        raise interrupt


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP in this thread and in the processes it starts,
    which inherit the mask until they set their own handlers. (The kernel may still
    hand a signal to another thread of this process: ``signals_deferred`` is for steps here.)"""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def deferring() -> bool:
    """Whether a handled signal is to be acted on later (``signals_deferred``), not raised now."""
    return _State.deferring


@contextmanager
def signals_deferred() -> Iterator[None]:
    """The steps within are never cut in half (files being placed): a signal that
    arrives meanwhile is counted, and raised once they are done."""
    count, previous = received(), _State.deferring
    _State.deferring = True
    try:
        yield
    finally:
        _State.deferring = previous
    stop_if_interrupted(count)  # waits on, within an outer uncut


def interrupt_behind(exc: BaseException) -> Interrupted | None:
    """The interrupt that ended a command with ``exc``: ``exc`` itself, or the failure
    an interrupt received meanwhile caused (a library caught it and failed later)."""
    if isinstance(exc, Interrupted):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(signal.SIGINT)
    return interrupt_since(0)


def count_signal(signum: int) -> None:
    """Count a handled signal (``received``), for a handler of another module's."""
    _State.received.append(signum)


def _raise(signum: int, frame: object) -> None:
    count_signal(signum)
    if _State.deferring:
        return
    if _State.done is None:
        raise Interrupted(signum)
    if _State.program and _State.printed:
        _exit(_State.done)
    # the work is done and its result is being printed: finished() ends the process after it


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within: the handled signals raise ``Interrupted``; the previous handlers
    come back after (only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in HANDLED}
    _State.received, _State.done, _State.printed = [], None, False
    for signum in HANDLED:
        signal.signal(signum, _raise)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _State.received = []  # a library call after the command must not see its signals


def work_done(status: int) -> None:
    """The command's work is done (files placed, report written) with exit
    ``status``: from here a signal does not change it, nor cut its summary short.
    One that arrived before, and that a library swallowed, ends the command now."""
    stop_if_interrupted()
    _State.done = status


def finished(status: int) -> None:
    """The command has returned (its result printed). The zoo program, asked to
    stop meanwhile, stops now with the work's status."""
    if _State.done is None:
        _State.done = status
    _State.printed = True
    if _State.program and _State.received:
        _exit(_State.done)
    if _State.program and (_State.abandoned or threads_left()):
        _exit(_State.done)  # the interpreter's exit would wait on plugin threads, or tear down a library mid-call (SIGABRT)


def threads_left() -> bool:
    """Whether a thread that is not a daemon still runs (one a plugin started): the
    interpreter's exit would wait for it, forever if it never ends."""
    main = threading.main_thread()
    return any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate())


def end_without_waiting_for_threads() -> None:
    """In a worker process: when its work is done, plugin threads that are not daemons do
    not keep it alive (multiprocessing joins them after its exit finalizers, which end here)."""
    from multiprocessing import util

    def leave() -> None:
        if threads_left():
            _exit(0)

    util.Finalize(None, leave, exitpriority=-1000)  # the last finalizer to run


def _outside_command(signum: int, frame: object) -> None:
    """Outside a command: before it (nothing to clean up) or after it (the work's status stands)."""
    if _State.done is None:
        print(Interrupted(signum).line, file=sys.stderr)
        _exit(128 + signum)
    _exit(_State.done)


def _exit(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed, or None (never opened)
            pass
    os._exit(status)  # interpreter shutdown (torch's atexit work) is not the command's business


def abandoned_native_call() -> None:
    """A thread is left inside native code that cannot be stopped (a runtime past
    ``--timeout``): the zoo program ends with ``os._exit`` once the command is done,
    since the interpreter's exit would destroy that library under the running call."""
    _State.abandoned = True


def quick_shutdown() -> None:
    """At exit, freeze the objects the process holds, so the interpreter's shutdown
    does not collect torch's millions of them (about a second after every export)."""
    atexit.register(gc.freeze)


def as_program() -> None:
    """For the ``zoo`` program: a signal before or after the command ends the process
    with the right status at once, instead of a traceback or a late exit 130."""
    _State.program = True
    quick_shutdown()
    for signum in HANDLED:
        signal.signal(signum, _outside_command)
