"""Stopping cleanly: preemption signals, a diverged loss, a checkpoint that cannot be written.

Clusters announce a preemption with a signal (SLURM with ``--signal=USR1@120`` sends SIGUSR1 two
minutes before the end; SLURM, Kubernetes and spot instances send SIGTERM, then kill a little
later). The handler only sets a flag. At each step boundary the processes agree on it through one
small collective on the CPU (a gloo group beside Accelerate's, started one step and read the next,
so it never waits for the device); once any process has seen a signal, all save a checkpoint at
the same step, flush their metrics and stop with :data:`EXIT_STOPPED`. A signal sent to every
process of the job (``scancel``) reaches the DataLoader workers too: they leave it to the trainer
(:mod:`regioncl.data.workers`). Under SLURM the run can requeue itself first
(``run.requeue_on_signal``)::

    #SBATCH --signal=USR1@120     # SIGUSR1 two minutes before the time limit
    #SBATCH --requeue             # the job may be requeued
    srun accelerate launch ... scripts/pretrain.py --config regioncl_m_r50 \\
        --run.resume latest --run.requeue_on_signal true

Exit statuses of ``scripts/pretrain.py``: 0 done, :data:`EXIT_STOPPED` stopped by a signal after
saving (resume with ``--run.resume latest``), :data:`EXIT_NONFINITE` stopped at a non-finite loss
without saving those weights, :data:`EXIT_CHECKPOINT` a checkpoint could not be written,
:data:`EXIT_BAD_DATA` too many images could not be read (after saving). They are defined in
:mod:`regioncl.errors`, which the command imports without torch.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from contextlib import ExitStack
from typing import Any

import torch

from ..data.workers import main_handles
from ..errors import EXIT_BAD_DATA, EXIT_CHECKPOINT, EXIT_NONFINITE, EXIT_STOPPED, RunStopped  # noqa: F401 (re-exported)

logger = logging.getLogger("regioncl")


class StopSignals:
    """Flags the stop signals of ``names`` while installed; :meth:`agreed` tells, at a step
    boundary, whether any process has seen one. A second SIGINT interrupts at once."""

    def __init__(self, names: list[str], accelerator: Any) -> None:
        self.accelerator = accelerator
        self.signals = [getattr(signal, name) for name in names]
        self.received: str | None = None
        self.previous: dict[int, Any] = {}
        self._flag: torch.Tensor | None = None
        self._pending: Any = None
        self._group: Any = None
        self._shield = ExitStack()

    def _handler(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received == name == "SIGINT":  # a second Ctrl-C: the user wants out now
            raise KeyboardInterrupt
        if self.received is None:
            logger.warning("%s received: saving a checkpoint at the next step boundary, then stopping", name)
        self.received = name

    def __enter__(self) -> StopSignals:
        for sig in self.signals:
            self.previous[sig] = signal.signal(sig, self._handler)
        self._shield.enter_context(main_handles(self.signals))  # a worker killed first would fail the step
        if self.accelerator.num_processes > 1:
            import torch.distributed as dist

            # A CPU group of its own: the flag never touches the device, so reading it never waits for it.
            self._group = dist.new_group(backend="gloo")
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()
        self._shield.close()
        if self._pending is not None:
            self._pending.wait()  # leave no collective in flight

    def agreed(self) -> bool:
        """Whether any process has seen a stop signal (every process calls this at every step;
        with several processes the answer lags one step: the flag sent now is read next time)."""
        if self.accelerator.num_processes == 1:
            return self.received is not None
        import torch.distributed as dist

        stop = False
        if self._pending is not None:
            self._pending.wait()
            stop = bool(self._flag.item() > 0)
        self._flag = torch.tensor([1 if self.received else 0], dtype=torch.int32)
        self._pending = dist.all_reduce(self._flag, op=dist.ReduceOp.MAX, group=self._group, async_op=True)
        return stop


def requeue_slurm_job() -> None:
    """``scontrol requeue $SLURM_JOB_ID`` (the main process calls it), or a warning saying why not."""
    job = os.environ.get("SLURM_JOB_ID")
    scontrol = shutil.which("scontrol")
    if not job or not scontrol:
        logger.warning(
            "run.requeue_on_signal: not requeued (%s)", "no SLURM_JOB_ID" if not job else "no scontrol on PATH"
        )
        return
    done = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True)
    if done.returncode:
        logger.warning("scontrol requeue %s failed (%d): %s", job, done.returncode, done.stderr.strip())
    else:
        logger.info("SLURM job %s requeued", job)
