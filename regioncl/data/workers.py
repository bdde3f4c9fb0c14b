"""DataLoader workers that start safely in a process with threads, and leave the stop signals to
the main process.

**Start method.** By the time a loader starts its workers, a training or evaluation process has
threads: gloo's or NCCL's once the process group exists, tqdm's monitor, a tracker's writer, the
datasets library's. A worker *forked* from it inherits every lock as it was at that instant, and
none of the threads that would release one: a lock that was held (gloo's, an allocator's,
Python's) leaves the worker asleep for ever, its process waiting for the batch and the other
processes waiting in a collective. So a :class:`WorkerLoader` starts its workers from a fork
server (:func:`worker_context`): a process of its own, started afresh (``exec``) the first time
workers are needed, which imports torch and regioncl's data modules (and the datasets library,
timm, ..., where this process uses them) once and then only forks, with no thread of the main
process in it. A worker starts about as fast as a forked one (nothing heavy imported again);
unlike a forked one, it gets the dataset, its transform and ``collate_fn`` pickled (a copy each,
not pages shared with the main process), so they must be picklable (classes and functions at the
top level of a module; no lambdas, no open files), and it imports the main module first, so a
script's work must be under ``if __name__ == "__main__":`` (nothing to do for ``python -m
regioncl`` and the ``regioncl`` command). The start method is the same in one
process as in many, so what runs in one runs in eight. ``REGIONCL_WORKER_START=fork`` (or
``spawn``) chooses another: ``fork`` for a dataset that cannot be pickled, in one process only.

**Stop signals.** A scheduler stops a job by signalling every process in it (``scancel``, a pod's
termination, a ``kill`` of the process group, Ctrl-C in a terminal). The trainer turns a stop
signal into a checkpoint at the next step boundary (:mod:`regioncl.train.preemption`); a worker
killed by the same signal would fail that step first, and the run would crash instead of saving.
So while the main process handles stop signals (:func:`main_handles`), the workers of a
:class:`WorkerLoader`:

- are born with those signals blocked: the main process blocks them while it starts the workers
  and unblocks them once they are started (a signal that arrived meanwhile is then delivered to
  it), so no worker is exposed between its birth and its own set-up. A forked or spawned worker
  inherits the mask; one forked by the fork server blocks them as the first thing it unpickles
  (before its dataset), so it is exposed only while it imports the main module;
- hand them to a thread that discards them, except from the main process itself: it sends
  SIGTERM to shut its workers down (multiprocessing does so at interpreter exit, for instance
  after an exception left an iterator alive), and a worker deaf to that would keep the exit
  waiting forever.

Where the platform has no ``sigwaitinfo`` (macOS, Windows) workers keep torch's behaviour::

    with main_handles([signal.SIGTERM]):  # the trainer's StopSignals does this
        for batch in WorkerLoader(dataset, batch_size=8, num_workers=2):
            ...

A worker forked by the fork server also logs as the main process does (its root logger's level
and its handlers on stderr and stdout, with their formats), as a forked one would. The fork server
and multiprocessing's resource tracker outlive the stop signals a scheduler sends every process of
the job (:mod:`regioncl.fork_server`): with the server gone, its workers would look dead to their
loader.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import multiprocessing.context
import os
import pickle
import select
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from torch.utils.data import DataLoader

from ..errors import UserError
from ..fork_server import SHIELDED

#: the signals the main process handles itself now (see :func:`main_handles`)
_handled: frozenset[signal.Signals] = frozenset()

SUPPORTED = hasattr(signal, "sigwaitinfo") and hasattr(signal, "pthread_sigmask")

#: the environment variable that names the workers' start method instead of the fork server
START_METHOD_VARIABLE = "REGIONCL_WORKER_START"

#: what the fork server imports once, of what this process has imported when a loader is made
_PRELOAD = ("numpy", "PIL.Image", "torch", "torchvision", "timm", "datasets", "regioncl.data",
            "regioncl.eval.features", "regioncl.eval.embed")

#: the signals the workers that a :class:`WorkerLoader` starts now must be born with blocked
_birth_signals: frozenset[signal.Signals] = frozenset()


def _start_method() -> str:
    """``REGIONCL_WORKER_START``, else the fork server where the platform has one."""
    available = multiprocessing.get_all_start_methods()
    method = os.environ.get(START_METHOD_VARIABLE, "").strip()
    if method and method not in available:
        raise UserError(f"{START_METHOD_VARIABLE}={method!r}: this platform starts processes by "
                        f"{', '.join(available)}")
    return method or ("forkserver" if "forkserver" in available else multiprocessing.get_start_method())


#: a handler's format and date format, and its style ("%", "{" or "$")
_Format = tuple[str | None, str | None, str]


def _logging_setup() -> tuple[int, list[tuple[str, int, _Format]]]:
    """This process's root logger: its level, and its plain handlers on stderr or stdout
    (``(stream, level, format)``)."""
    styles = {logging.PercentStyle: "%", logging.StrFormatStyle: "{", logging.StringTemplateStyle: "$"}
    root, streams = logging.getLogger(), []
    for handler in root.handlers:
        if type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.stdout):
            form, style = handler.formatter, styles.get(type(getattr(handler.formatter, "_style", None)))
            streams.append(("stderr" if handler.stream is sys.stderr else "stdout", handler.level,
                            (form._fmt, form.datefmt, style) if form is not None and style else (None, None, "%")))
    return root.level, streams


def _end_with(main_pid: int) -> None:
    """A thread of a worker forked by the fork server: ends the worker once ``main_pid`` has.

    torch's worker ends when its parent has gone, but the parent is the fork server here, which
    lives on while any process it forked does: without this, the workers of a main process that
    was killed (or died of a signal it does not handle) would wait for work for ever, and keep
    the server too."""
    try:
        pidfd = os.pidfd_open(main_pid)  # readable once the process has ended (ESRCH: it has already)
        select.select([pidfd], [], [])
    except (AttributeError, OSError):  # no pidfd (not Linux, an old kernel, a sandbox): ask every 2 s
        while True:
            try:
                os.kill(main_pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
            time.sleep(2.0)
    os._exit(1)


def _born(signals: tuple[int, ...], logging_setup: tuple[int, list[tuple[str, int, _Format]]], main_pid: int) -> None:
    """The first thing a worker forked by the fork server runs: block ``signals``, end with the
    main process (:func:`_end_with`), log as the main process does."""
    if signals and SUPPORTED:
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    threading.Thread(target=_end_with, args=(main_pid,), name="end-with-main", daemon=True).start()
    level, streams = logging_setup
    root = logging.getLogger()
    if root.handlers:
        return
    root.setLevel(level)
    for stream, handler_level, (form, date_form, style) in streams:
        handler = logging.StreamHandler(getattr(sys, stream))
        handler.setLevel(handler_level)
        handler.setFormatter(logging.Formatter(form, date_form, style))  # type: ignore[arg-type]
        root.addHandler(handler)


class _Birth:
    """Unpickled, runs :func:`_born` with this process's stop signals and logging."""

    def __reduce__(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        return _born, (tuple(int(s) for s in sorted(_birth_signals)), _logging_setup(), os.getpid())


if hasattr(multiprocessing.context, "ForkServerContext"):  # POSIX

    class _ForkServerWorker(multiprocessing.context.ForkServerProcess):
        """A process of the fork server whose pickle starts with a :class:`_Birth`: the new
        process runs it before it unpickles anything else (the dataset, torch's worker loop)."""

        def __getstate__(self) -> tuple[_Birth, dict[str, Any]]:
            return _Birth(), self.__dict__

        def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
            self.__dict__.update(state[1])

    class _ForkServerContext(multiprocessing.context.ForkServerContext):
        Process = _ForkServerWorker

    _FORK_SERVER = _ForkServerContext()


def worker_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context DataLoader workers start from: the fork server (see the module
    docstring), or the start method ``REGIONCL_WORKER_START`` names.

    Each call adds to what the fork server imports when it starts the modules of ``_PRELOAD``
    that this process has imported by then (a server already running keeps what it has).
    """
    method = _start_method()
    return _fork_server() if method == "forkserver" else multiprocessing.get_context(method)


def _fork_server() -> multiprocessing.context.BaseContext:
    """The fork server's context, with the modules of ``_PRELOAD`` imported here added to what it preloads."""
    from multiprocessing import forkserver

    preload = [m for m in getattr(forkserver._forkserver, "_preload_modules", []) if m != "__main__"]
    # regioncl.fork_server first: the server is deaf to a job's stop signals before it imports torch
    # not __main__: where Python preloads it, the server would run a script that has no __main__ guard
    for module in ("regioncl.fork_server", "regioncl.data.workers", *_PRELOAD):
        if module not in preload and (module in sys.modules):
            preload.append(module)
    forkserver.set_forkserver_preload(preload)
    return _FORK_SERVER


@contextmanager
def main_handles(signals: Iterable[int]) -> Iterator[None]:
    """While inside, workers that a :class:`WorkerLoader` starts leave ``signals`` to this process."""
    global _handled
    before = _handled
    _handled = before | {signal.Signals(s) for s in signals}
    try:
        yield
    finally:
        _handled = before


def _discard_unless_from(signals: frozenset[signal.Signals], main_pid: int) -> None:
    while True:
        if signal.sigwaitinfo(signals).si_pid == main_pid:
            os._exit(0)  # as torch's own worker handler does for its parent's SIGTERM


def leave_to_main(signals: frozenset[signal.Signals], main_pid: int, init: Callable[[int], Any] | None,
                  worker_id: int) -> None:
    """A worker's ``worker_init_fn``: ``signals`` blocked in every thread of the worker and taken
    by a thread that discards them unless ``main_pid`` sent them; then ``init``."""
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # already so: inherited, or blocked by _born
    threading.Thread(target=_discard_unless_from, args=(signals, main_pid), name="stop-signals", daemon=True).start()
    if init is not None:
        init(worker_id)


def _start_helpers(method: str) -> None:
    """Start multiprocessing's resource tracker (the workers' queues need it under spawn and
    forkserver) with :data:`~regioncl.fork_server.SHIELDED` blocked, and the fork server, both
    outside :class:`WorkerLoader`'s block of the signals the main process handles: the tracker,
    started, unblocks SIGINT and SIGTERM in this thread (the workers would be born with them
    unblocked), and a server born with them blocked would give them blocked to every process it
    starts, a loader's outside :func:`main_handles` too."""
    if os.name != "posix":
        return
    from multiprocessing import forkserver, resource_tracker

    before = signal.pthread_sigmask(signal.SIG_BLOCK, SHIELDED)
    try:
        resource_tracker.ensure_running()  # ignores SIGINT and SIGTERM itself
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    if method == "forkserver":
        forkserver.ensure_running()


class WorkerLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` whose workers start from the fork server
    (:func:`worker_context`, unless ``multiprocessing_context`` says otherwise) and leave to the
    main process the signals it handles when it starts them (:func:`main_handles`); otherwise
    the same."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._own_init = self.worker_init_fn
        given = self.multiprocessing_context
        if self.num_workers > 0 and (given is None or given.get_start_method() == "forkserver"):
            self.multiprocessing_context = worker_context() if given is None else _fork_server()

    def _get_iterator(self) -> Any:
        global _birth_signals
        signals = _handled if SUPPORTED and self.num_workers > 0 else frozenset()
        method = (self.multiprocessing_context or multiprocessing).get_start_method() if self.num_workers else "fork"
        if method != "fork":
            _start_helpers(method)
        if not signals:
            self.worker_init_fn = self._own_init
            return self._start_workers(method)
        self.worker_init_fn = functools.partial(leave_to_main, signals, os.getpid(), self._own_init)
        before = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        _birth_signals = signals
        try:
            return self._start_workers(method)
        finally:
            _birth_signals = frozenset()
            signal.pthread_sigmask(signal.SIG_SETMASK, before)

    def _start_workers(self, method: str) -> Any:
        try:
            return super()._get_iterator()
        except (pickle.PicklingError, AttributeError, TypeError) as err:
            if method == "fork" or "pickle" not in str(err).lower():
                raise
            raise UserError(
                f"DataLoader workers start in processes of their own ({method}), which get the dataset, its "
                f"transform and collate_fn pickled, and this one cannot be: {err}. Define them at the top level "
                f"of a module (no lambdas, local functions or open files), or use no workers (num_workers 0); "
                f"in a single process, {START_METHOD_VARIABLE}=fork forks the workers instead"
            ) from err
