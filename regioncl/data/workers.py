"""DataLoader workers that leave the stop signals to the main process.

A scheduler stops a job by signalling every process in it (``scancel``, a pod's termination, a
``kill`` of the process group, Ctrl-C in a terminal). The trainer turns a stop signal into a
checkpoint at the next step boundary (:mod:`regioncl.train.preemption`); a worker killed by the
same signal would fail that step first, and the run would crash instead of saving. So while the
main process handles stop signals (:func:`main_handles`), the workers of a :class:`WorkerLoader`:

- are born with those signals blocked: the main process blocks them while it starts the workers
  and unblocks them once they are started (a signal that arrived meanwhile is then delivered to
  it), so no worker is exposed between its birth and its own set-up. A forked or spawned worker
  inherits the mask; one forked by a forkserver gets the server's, so under that start method a
  worker is exposed until its ``worker_init_fn`` runs;
- hand them to a thread that discards them, except from the main process itself: it sends
  SIGTERM to shut its workers down (multiprocessing does so at interpreter exit, for instance
  after an exception left an iterator alive), and a worker deaf to that would keep the exit
  waiting forever.

Where the platform has no ``sigwaitinfo`` (macOS, Windows) workers keep torch's behaviour::

    with main_handles([signal.SIGTERM]):  # the trainer's StopSignals does this
        for batch in WorkerLoader(dataset, batch_size=8, num_workers=2):
            ...
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from torch.utils.data import DataLoader

#: the signals the main process handles itself now (see :func:`main_handles`)
_handled: frozenset[signal.Signals] = frozenset()

SUPPORTED = hasattr(signal, "sigwaitinfo") and hasattr(signal, "pthread_sigmask")


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
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # already so unless a forkserver forked this worker
    threading.Thread(target=_discard_unless_from, args=(signals, main_pid), name="stop-signals", daemon=True).start()
    if init is not None:
        init(worker_id)


class WorkerLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` whose workers leave to the main process the signals
    it handles when it starts them (:func:`main_handles`); otherwise the same."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._own_init = self.worker_init_fn

    def _get_iterator(self) -> Any:
        signals = _handled if SUPPORTED and self.num_workers > 0 else frozenset()
        if not signals:
            self.worker_init_fn = self._own_init
            return super()._get_iterator()
        self.worker_init_fn = functools.partial(leave_to_main, signals, os.getpid(), self._own_init)
        if (self.multiprocessing_context or multiprocessing).get_start_method() != "fork":
            # Starting multiprocessing's resource tracker, which the workers' queues need under
            # spawn and forkserver, unblocks SIGINT and SIGTERM in this thread when done: if that
            # happened inside the block below, the workers would be born with them unblocked.
            from multiprocessing import resource_tracker  # POSIX only, as SUPPORTED is

            resource_tracker.ensure_running()
        before = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            return super()._get_iterator()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
