"""``zoo export --all`` across processes: ``--jobs N`` (``--shard I/N``, across
machines, is part of the plan: ``zoo.exporting.plan.shard``).

``--jobs N`` exports in N worker processes. Each worker imports torch and loads
the plugins once, then exports one target after another; what comes back to
the parent is the finished record, the summary row and the exit code, never a
model. Workers load plugins the way ``zoo`` does (built-ins, installed entry
points, ``ZOO_LOAD_PLUGINS``), plus plugins given to ``load_zoo`` as modules.

Ctrl-C, SIGTERM or SIGHUP stop every worker, whether it reached the workers
itself (Ctrl-C in a terminal) or only the parent (a scheduler's kill, passed
on): a worker removes its export's staging and ends, and no queued target
starts. A worker that dies (SIGKILL, out of memory, a crash in native code)
ends the command in one line naming the targets left unfinished.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing import resource_tracker
from pathlib import Path
from types import ModuleType
from typing import Any

from zoo.build.sizing import dry_build
from zoo.errors import ExportFailed, UsageError, ZooError
from zoo.exporting.pipeline import export_targets
from zoo.exporting.plan import ExportPlan, Target
from zoo.host.manager import load_zoo
from zoo.interrupts import (
    HANDLED,
    Interrupted,
    count_signal,
    deferring,
    end_without_waiting_for_threads,
    quick_shutdown,
    signals_blocked,
)
from zoo.verification.results import FailedExport, Outcome
from zoo.verification.runtimes import RuntimeChoice

log = logging.getLogger(__name__)
STOP_GRACE_S = 10.0  # how long a stopped worker may take to remove its staging before it is killed


@dataclass
class Finished(Outcome):
    """An export done in a worker: its record, summary row and exit code."""

    name: str
    record: dict[str, Any]
    row: tuple[str, ...]
    ok: bool
    exit_code: int = 0

    @property
    def error(self) -> str | None:
        return self.record.get("error")

    def to_dict(self) -> dict[str, Any]:
        return self.record

    def summary_row(self) -> tuple[str, ...]:
        return self.row


def export_in_workers(
    plan: ExportPlan,
    jobs: int,
    plugin_modules: list[tuple[str, str]],
    on_done: Callable[[int, Finished], None] | None = None,
    plugin_sources: tuple[str, ...] | list[str] = (),
) -> list[Finished]:
    """Export ``plan``'s targets in ``jobs`` processes; results in the targets' order.

    ``plugin_modules``: ``(plugin name, module name)`` of plugins the parent got
    as objects (``load_zoo(extra=...)``), imported again in each worker."""
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold torch's threads
    threads = max(1, (os.cpu_count() or 1) // jobs)  # workers side by side must not oversubscribe the cores
    results: dict[int, Finished] = {}
    others = set(multiprocessing.active_children())  # a host program's own children: never ours to stop
    with signals_blocked():  # multiprocessing's helper ignores SIGINT and SIGTERM; started now, SIGHUP stays held in it too
        resource_tracker.ensure_running()
    warm = (plan.exporter.name, plan.opset)
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker, initargs=(plugin_modules, threads, list(plugin_sources), warm)) as pool:
        pending: dict[Future[Finished], int] = {}
        try:
            with signals_blocked():  # workers start (here, on submit) with them held, until their own handlers are set
                for index in longest_first(plan.targets):
                    pending[pool.submit(_export_one, _portable(plan, plan.targets[index]))] = index
            for future, index in _as_completed(pending):
                results[index] = future.result()
                if on_done is not None:
                    on_done(index, results[index])
        except BrokenProcessPool:
            unfinished = ", ".join(plan.targets[i].arch.name for i in sorted(set(pending.values()) - set(results)))
            raise ExportFailed(
                f"a worker process died (killed, out of memory, or a crash in native code) while exporting one of: "
                f"{unfinished}; export them with --jobs 1 to find which and why"
            ) from None
        except BaseException as exc:
            workers = set(multiprocessing.active_children()) - others
            # an interrupt that reached this process alone is passed on; any other failure here stops them as SIGTERM would
            interrupt = isinstance(exc, KeyboardInterrupt)
            _stop_workers(workers, getattr(exc, "signum", signal.SIGINT) if interrupt else signal.SIGTERM)
            _end_workers(workers)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [results[i] for i in range(len(plan.targets))]


def _stop_workers(workers: set[Any], signum: int) -> None:
    """Interrupt every worker as this process was: each removes its staging and exits
    (a queued target never starts); a worker already stopped by the same Ctrl-C is gone."""
    for worker in workers:
        try:
            os.kill(worker.pid, signum)
        except (ProcessLookupError, TypeError):
            pass


def _end_workers(workers: set[Any], grace_s: float = STOP_GRACE_S) -> None:
    """Give the stopped workers ``grace_s`` to clean up and exit, then kill those
    left (one that swallowed the interrupt, or waits on a lock a dead sibling
    held): the pool's shutdown must never wait on them. A further Ctrl-C kills at once."""
    deadline = time.monotonic() + grace_s
    try:
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join(5)


def _as_completed(pending: dict[Future[Finished], int]) -> Iterator[tuple[Future[Finished], int]]:
    waiting = set(pending)
    while waiting:
        done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
        for future in sorted(done, key=pending.__getitem__):
            yield future, pending[future]


@dataclass(frozen=True)
class _PortableTarget:
    """What a worker needs to export one target: names and plain settings, no plugin objects."""

    architecture: str
    path: str
    refused: str | None
    refused_code: int
    format_name: str
    recorded: dict[str, str] | None
    plan: ExportPlan  # its exporter, targets and runtimes left out: the worker has its own, from the same plugins
    runtimes: list[tuple[str, dict[str, str]]]  # by name and settings: a Runtime's callables do not pickle


def _portable(plan: ExportPlan, target: Target) -> _PortableTarget:
    refused = target.refused
    return _PortableTarget(
        target.arch.name, str(target.path), None if refused is None else str(refused),
        0 if refused is None else refused.exit_code, plan.exporter.name, target.recorded, replace(plan, exporter=None, targets=[], runtimes=[]),
        [(c.name, c.settings) for c in plan.runtimes],
    )


_worker_zoo: Any = None


_exporting = False  # whether a worker is inside an export (with staging to remove) or waiting for one


def longest_first(targets: list[Target]) -> list[int]:
    """Target indices, the largest model first (by its parameter count from a build
    on torch's ``meta`` device): the longest export must not start last."""
    def size(index: int) -> int:
        try:
            dry = dry_build(targets[index].arch, {}, limit_bytes=2**34)
        except Exception:  # noqa: BLE001 - a plugin's build that fails here fails in its export, with its reason
            return 0
        return 0 if dry is None else dry.elements

    return sorted(range(len(targets)), key=lambda index: -size(index))


def _start_worker(plugin_modules: list[tuple[str, str]], threads: int, sources: list[str], warm: tuple[str, int | None]) -> None:
    for signum in HANDLED:  # first: a signal while torch imports ends the worker without a traceback
        signal.signal(signum, _worker_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)  # held since the parent started this process (one may be waiting)
    quick_shutdown()
    end_without_waiting_for_threads()
    os.dup2(2, 1)  # stdout belongs to the parent's record: whatever a worker prints, at any level, goes to stderr
    sys.stdout = sys.stderr


    import torch


    global _worker_zoo
    torch.set_num_threads(threads)
    extra: list[tuple[str, ModuleType]] = [(name, importlib.import_module(module)) for name, module in plugin_modules]
    _worker_zoo = load_zoo(extra=extra, plugins=sources)
    _warm_up(*warm)


def _warm_up(format_name: str, opset: int | None) -> None:
    """The format's one-off start-up cost, paid before the first target arrives."""
    from zoo.host.plugin_calls import quiet_exporter

    exporter = _worker_zoo.exporters.get(format_name)
    if exporter is None or exporter.warm_up is None:
        return
    try:
        with quiet_exporter():
            exporter.warm_up(opset)
    except Exception:  # noqa: BLE001 - only a head start: the export itself reports any real problem
        log.debug("warming up %s failed", format_name, exc_info=True)


def _worker_signal(signum: int, frame: object) -> None:
    """Ctrl-C, SIGTERM or SIGHUP in a worker: an export in progress is interrupted
    (its staging removed on the way out, see ``_export_one``); a waiting worker just ends."""
    count_signal(signum)  # if a library swallows the Interrupted, the export still stops before placing its files
    for handled in HANDLED:  # once: a second signal (the parent passing on the same Ctrl-C) must not cut the cleanup short
        signal.signal(handled, _already_stopping)
    if _exporting and deferring():
        return  # placing files: raised once they are all in place
    if _exporting:
        raise Interrupted(signum)
    os._exit(128 + signum)


def _already_stopping(signum: int, frame: object) -> None:
    """A further signal while a worker stops: nothing to do. A Python handler, not SIG_IGN: one
    that arrived with the first, before it was handled, would find SIG_IGN and Python would
    print ``Signal 15 ignored due to race condition``."""


def _export_one(portable: _PortableTarget) -> Finished:
    """``_export``, ending the worker once an interrupt has cleaned up: it takes no further target."""
    global _exporting
    _exporting = True
    try:
        return _export(portable)
    except KeyboardInterrupt as exc:
        os._exit(getattr(exc, "exit_code", 130))
    finally:
        _exporting = False


def _export(portable: _PortableTarget) -> Finished:
    zoo = _worker_zoo
    arch = zoo.architectures.get(portable.architecture)
    refused = None if portable.refused is None else ZooError(portable.refused)
    if refused is not None:
        refused.exit_code = portable.refused_code
    runtimes = [RuntimeChoice(zoo.runtime(name) if name else None, chosen) for name, chosen in portable.runtimes]
    plan = replace(
        portable.plan, exporter=zoo.exporter(portable.format_name), targets=[Target(arch, Path(portable.path), refused, portable.recorded)],
        runtimes=runtimes,
    )
    (result,) = export_targets(plan)
    exit_code = 0 if result.ok else result.exit_code if isinstance(result, FailedExport) else 1
    return Finished(arch.name, result.to_dict(), result.summary_row(), result.ok, exit_code)


def run_plan(plan: ExportPlan, jobs: int, zoo: Any, progress: Callable[[str], None] | None = None) -> list[Any]:
    """Carry out ``plan``: in ``jobs`` worker processes when there is more than one
    target, else here. ``progress`` gets a line as each target starts (here) or
    finishes (in workers, which finish in any order: counted, then named)."""
    count = len(plan.targets)
    say = progress or (lambda line: None)
    if jobs > 1 and count > 1:
        done: list[int] = []

        def finished(index: int, result: Finished) -> None:
            done.append(index)
            say(f"[{len(done)}/{count}] {result.name} {'ok' if result.ok else 'FAILED'}")

        return export_in_workers(plan, min(jobs, count), plugin_modules(zoo), on_done=finished, plugin_sources=plugin_sources(zoo))
    return export_targets(plan, on_start=lambda index, target: say(f"[{index + 1}/{count}] {target.arch.name} ..."))


def plugin_sources(zoo: Any) -> list[str]:
    """The ``--plugin`` values (absolute paths, module names) a worker loads again."""
    return [info.source for info in zoo.plugins.values() if info.source is not None]


def plugin_modules(zoo: Any) -> list[tuple[str, str]]:
    """Plugins the parent's zoo got as modules (not from entry points), by import name;
    a plugin object that is not a module cannot be loaded again in a worker."""
    found = []
    for info in zoo.plugins.values():
        if info.builtin or info.distribution is not None or info.source is not None:
            continue  # workers load these themselves (--plugin ones from plugin_sources)
        plugin = zoo.pm.get_plugin(info.name)
        if not isinstance(plugin, ModuleType):
            raise UsageError(f"--jobs: plugin {info.name!r} was given as an object, not a module; workers cannot load it (use --jobs 1)")
        found.append((info.name, plugin.__name__))
    return found
