"""Every call into plugin code goes through here: guarded, quieted and translated.

``call_plugin`` is the one guarded call for plugin code (a build, sample inputs,
task functions, weights hooks, plugin commands): what it prints goes to stderr,
its warnings to zoo's log, and whatever it raises (``sys.exit()`` included, only
Ctrl-C excepted) becomes one ``PluginError`` line naming the plugin; ``check``
refuses a result of the wrong type where zoo consumes the value.

Exporters are built on chatty libraries (torch, onnxscript, onnx_ir) and raise
their own exceptions with pages of context. ``call_exporter`` runs one call with
that output kept off the terminal (zoo's log shows it with ``-v``) and turns a
failure into a ``ZooError`` whose one line says what failed and why.
"""

from __future__ import annotations

import errno
import io
import logging
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, TypeVar

from zoo.errors import PluginError, ZooError, one_line, write_error
from zoo.interrupts import interrupt_since, received, stop_if_interrupted

log = logging.getLogger(__name__)

# OSErrors inside an exporter that are about the disk, not the model (others stay the exporter's failure).
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}
# The libraries exporters are built on. torch gives its loggers their own stderr
# handlers and stops propagation, so redirecting stderr alone does not quiet them.
NOISY_LOGGERS = ("torch", "onnxscript", "onnx_ir")

T = TypeVar("T")


def call_exporter(
    function: Callable[..., T],
    *args: Any,
    error: Callable[[str], ZooError],
    what: str,
    disk_path: Any = None,
    limit: int = 300,
    hint: str = "",
    user_code: Path | None = None,
    **kwargs: Any,
) -> T:
    """``function(*args, **kwargs)``, quieted; any exception but a ``ZooError``
    becomes ``error(f"{what}: {reason}{hint}")``. With ``disk_path``, a full disk or an
    I/O error inside the call is reported as a failed write to that path instead:
    it is not the exporter's fault. With ``user_code`` (a folder or file), the
    reason names the first frame of that code in the traceback: the user's line."""
    before = received()
    try:
        with quiet_exporter():
            value = function(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a plugin's failure becomes one line
        interrupt = interrupt_since(before)
        if interrupt is not None:  # torch swallowed the Ctrl-C (an import cut in half) and failed later
            raise interrupt from exc
        if isinstance(exc, ZooError):
            raise
        cause = root_cause(exc)
        if disk_path is not None and isinstance(cause, OSError) and cause.errno in DISK_ERRNOS:
            raise write_error(cause, disk_path) from exc
        # -v shows the exporter's own words, -vv its traceback too.
        log.info("%s: %s", what, exc)
        log.debug("exporter traceback", exc_info=True)
        where = user_frame(exc, user_code) if user_code is not None else ""
        raise error(f"{what}: {reason(exc, limit)}{where}{hint}") from exc
    stop_if_interrupted(before)  # swallowed on the way (a __del__, a callback), yet the user asked to stop
    return value


@contextmanager
def plugin_code() -> Iterator[None]:
    """Around every call into a plugin (import, hooks, ``build``, ``forward``): what it
    prints goes to stderr, so it can never break the JSON a command prints on
    stdout, and its warnings (torch's ``UserWarning``s) go to zoo's log, shown with -v."""
    before = received()
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught, redirect_stdout(sys.stderr):
            yield
    finally:
        for warning in caught:
            log.info("plugin warning: %s: %s", warning.category.__name__, warning.message)
    stop_if_interrupted(before)  # one the plugin's code (or torch under it) swallowed: stop now, not at the end


def plugin_fault(exc: BaseException) -> bool:
    """An exception from plugin code that must not end zoo: anything but the
    user's Ctrl-C (``sys.exit()``, a ``BaseException`` subclass of its own)."""
    return not isinstance(exc, KeyboardInterrupt)


def call_plugin(
    function: Callable[..., T],
    *args: Any,
    what: str,
    check: Callable[[Any], str | None] | None = None,
    error: Callable[[str], ZooError] = PluginError,
    passes: tuple[type[BaseException], ...] = (),
    speaks: bool = False,
    **kwargs: Any,
) -> T:
    """``function(*args, **kwargs)`` as plugin code. ``what`` names the call and its
    plugin (``task 'binary' (plugin 'tasks'): torch_loss``). A ``ZooError`` the plugin
    raises on purpose passes through; anything else, ``SystemExit`` included, becomes
    ``error(f"{what} raised ...")``. ``check(value)`` says what is wrong with the value
    (``None``: nothing), for a value zoo goes on to use. ``passes``: exceptions that are
    the plugin's way to end on purpose (a command's ``click.exceptions.Exit``); ``speaks``:
    its prints are its output (a plugin command), so they stay on stdout."""
    before = received()
    try:
        with nullcontext() if speaks else plugin_code():
            value = function(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - sys.exit() and the like in plugin code end nothing but this call
        interrupt = interrupt_since(before)
        if interrupt is not None:
            raise interrupt from exc
        if isinstance(exc, (ZooError, *passes)) or not plugin_fault(exc):
            raise
        log.debug("%s raised", what, exc_info=True)
        raise error(f"{what} raised {one_line(exc, 200)}") from exc
    wrong = check(value) if check is not None else None
    if wrong is not None:
        raise error(f"{what} returned {wrong}")
    return value


def code_location(function: Any) -> Path | None:
    """Where an architecture's own code lives: its package's folder, or its module's
    file when that sits among other installed packages (site-packages)."""
    module = sys.modules.get(getattr(function, "__module__", "") or "")
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    if path.name == "__init__.py" or path.parent.name not in ("site-packages", "dist-packages"):
        return path.parent
    return path


def user_frame(exc: BaseException, code: Path) -> str:
    """`` at nets.py:11: if x.sum() > 0`` for the first frame inside ``code`` in the
    tracebacks of ``exc`` and the exceptions it wraps; empty when there is none."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for frame in traceback.extract_tb(current.__traceback__):
            path = Path(frame.filename)
            if path == code or code in path.parents:
                return f" at {path.name}:{frame.lineno}: {(frame.line or '').strip()}".rstrip(": ")
        current = current.__cause__ or current.__context__
    return ""


def root_cause(exc: BaseException) -> BaseException:
    """The innermost explicit cause: exporters wrap the real reason in their own errors."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def reason(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of the root cause: exporters put their gist first and
    pages of context after it."""
    return one_line(root_cause(exc), limit, first_line=True)


class _Relay(logging.Handler):
    """Hands an exporter library's log records to zoo's log at INFO (shown with -v)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record must not break the export
            message = str(record.msg)
        log.info("exporter: %s: %s", record.name, message)


def _noisy(name: str) -> bool:
    return name.split(".", 1)[0] in NOISY_LOGGERS


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """Around every call into an exporter: its log records, warnings and prints go
    to zoo's log at INFO, so a user sees them with -v and never without.

    With -v (the root logger at INFO or lower) nothing is captured: they speak directly.
    """
    if logging.getLogger().getEffectiveLevel() <= logging.INFO:
        yield
        return
    relay = _Relay()
    saved = []
    # Only loggers with handlers of their own, or that stop propagation, need changing:
    # the rest already hand their records up to the top logger, which gets the relay.
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    loggers += [
        logger
        for name, logger in list(logging.root.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and (logger.handlers or not logger.propagate) and _noisy(name)
        and name not in NOISY_LOGGERS
    ]
    for logger in loggers:
        saved.append((logger, logger.propagate, logger.handlers[:]))
        top = logger.name in NOISY_LOGGERS  # every record of these libraries ends at the relay
        logger.handlers = [relay] if top else []
        logger.propagate = not top
    stderr = sys.stderr
    out, err = io.StringIO(), io.StringIO()
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught, redirect_stdout(out), redirect_stderr(err):
            warnings.simplefilter("always")
            yield
    finally:
        for logger, propagate, handlers in saved:
            logger.propagate = propagate
            logger.handlers = handlers
        # torch imported inside (a reader's first use) bound its new handlers to our buffer
        for logger in list(logging.root.manager.loggerDict.values()):
            for handler in getattr(logger, "handlers", []):
                if isinstance(handler, logging.StreamHandler) and handler.stream in (out, err):
                    handler.setStream(stderr)
        for text in (out.getvalue(), err.getvalue()):
            for line in text.splitlines():
                if line.strip():
                    log.info("exporter: %s", line)
        for warning in caught:
            log.info("exporter warning: %s", warning.message)
