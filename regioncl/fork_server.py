"""The stop signals that the processes multiprocessing starts beside a worker's main process must
outlive (see :mod:`regioncl.data.workers`).

A scheduler stops a job by signalling every process in it, the fork server that starts the
DataLoader workers and multiprocessing's resource tracker among them. The main process may handle
the signal (the trainer saves a checkpoint first); those two must not die of it: with the fork
server gone every worker it started looks dead to its loader (the server reports their exits), and
the run would crash instead of saving. The fork server preloads this module, which, in that
process only, ignores :data:`SHIELDED` there and gives the processes it forks their default
actions back; the resource tracker is started with them blocked. Both exit with the main process.

Light on purpose (no torch): the server imports it first, before what takes it seconds.
"""

from __future__ import annotations

import os
import signal
import sys

#: what a scheduler may send every process of a job (SIGINT: the two ignore it themselves)
SHIELDED: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2") if hasattr(signal, name)
)


def in_fork_server() -> bool:
    """Whether this process is multiprocessing's fork server (its command line says so)."""
    return any(arg.startswith("from multiprocessing.forkserver import main") for arg in getattr(sys, "orig_argv", []))


def _heard_again() -> None:
    for sig in SHIELDED:
        signal.signal(sig, signal.SIG_DFL)


if in_fork_server():
    for _sig in SHIELDED:
        signal.signal(_sig, signal.SIG_IGN)
    os.register_at_fork(after_in_child=_heard_again)  # a worker it forks has the default actions, as usual
