"""DataLoader workers leave the stop signals to the main process, yet obey its own shutdown."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch.utils.data import Dataset

from regioncl.data.workers import SUPPORTED, WorkerLoader, main_handles

pytestmark = pytest.mark.skipif(not SUPPORTED, reason="no sigwaitinfo on this platform")


class Numbers(Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([i])


def test_workers_signalled_by_another_process_as_they_start_still_deliver_every_batch(tmp_path, monkeypatch):
    """A scheduler's SIGTERM to every process of a job may land while a worker starts, before any
    worker_init_fn runs (torch's worker installs a SIGTERM handler that dies first thing): the
    signal must not kill it. Each worker is held in that gap until the signal has been sent."""
    parent, seed = os.getpid(), random.seed

    def held_seed(*args):  # torch's worker loop seeds `random` between its handlers and worker_init_fn
        if os.getpid() != parent:
            (tmp_path / f"started-{os.getpid()}").touch()
            deadline = time.time() + 30
            while not (tmp_path / "signalled").exists() and time.time() < deadline:
                time.sleep(0.01)
        seed(*args)

    monkeypatch.setattr(random, "seed", held_seed)  # the forked workers inherit the patch
    loader = WorkerLoader(Numbers(), batch_size=4, num_workers=2, multiprocessing_context="fork")
    with main_handles([signal.SIGTERM]):
        it = iter(loader)
        deadline = time.time() + 60
        while len(list(tmp_path.glob("started-*"))) < 2 and time.time() < deadline:
            time.sleep(0.01)
        pids = [p.name.split("-")[1] for p in tmp_path.glob("started-*")]
        assert len(pids) == 2
        subprocess.run(["kill", "-TERM", *pids], check=True)  # sent by `kill`, not by this process
        (tmp_path / "signalled").touch()
        try:
            got = torch.cat(list(it)).flatten().tolist()
        finally:
            it._shutdown_workers()  # else a failure here is reported from wherever its SIGCHLD lands
        assert got == list(range(16))


def test_spawned_workers_signalled_as_they_start_still_deliver_every_batch(tmp_path):
    """A spawned worker inherits the signal mask too: held while it unpickles its dataset (before
    torch installs any handler, so SIGTERM would still kill it by default) and signalled then by
    another process, it still delivers its batches."""
    script = tmp_path / "spawned.py"
    script.write_text(textwrap.dedent("""
        import os, pathlib, signal, subprocess, sys, time, torch
        from regioncl.data.workers import WorkerLoader, main_handles

        FLAGS = pathlib.Path(sys.argv[1])

        class Held(torch.utils.data.Dataset):
            def __init__(self):
                self.n = 16  # pickle calls __setstate__ only for a non-empty state

            def __len__(self):
                return self.n

            def __getitem__(self, i):
                return torch.tensor([i])

            def __setstate__(self, state):  # runs in the worker as it unpickles its arguments
                (FLAGS / f"started-{os.getpid()}").touch()
                deadline = time.time() + 60
                while not (FLAGS / "signalled").exists() and time.time() < deadline:
                    time.sleep(0.01)
                self.__dict__.update(state)

        if __name__ == "__main__":
            loader = WorkerLoader(Held(), batch_size=4, num_workers=2, multiprocessing_context="spawn")
            with main_handles([signal.SIGTERM]):
                it = iter(loader)
                deadline = time.time() + 60
                while len(list(FLAGS.glob("started-*"))) < 2 and time.time() < deadline:
                    time.sleep(0.01)
                pids = [p.name.split("-")[1] for p in FLAGS.glob("started-*")]
                assert len(pids) == 2, pids
                subprocess.run(["kill", "-TERM", *pids], check=True)
                (FLAGS / "signalled").touch()
                print(torch.cat(list(it)).flatten().tolist())
    """))
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(list(range(16)))


def test_workers_outside_main_handles_keep_torchs_behaviour(tmp_path):
    """Only the signals the main process handles are left to it: a SIGTERM to a worker of a loader
    started outside :func:`main_handles` still ends that worker, and the loader says so."""
    loader = WorkerLoader(Numbers(), batch_size=1, num_workers=1, persistent_workers=True, prefetch_factor=1)
    it = iter(loader)
    next(it)
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        subprocess.run(["kill", "-TERM", str(it._workers[0].pid)], check=True)
        list(it)


def test_a_crash_with_live_workers_exits_instead_of_waiting_for_them(tmp_path):
    """An exception that keeps an iterator alive leaves its workers to multiprocessing's exit
    hook, which SIGTERMs them and waits: workers that ignored that signal would hang the exit
    (a crashed cluster job would hold its nodes until the time limit)."""
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent("""
        import signal, torch
        from regioncl.data.workers import WorkerLoader, main_handles

        def train():
            it = iter(WorkerLoader(torch.arange(64), batch_size=4, num_workers=2, persistent_workers=True))
            next(it)
            raise RuntimeError("crashed mid-epoch")

        with main_handles([signal.SIGTERM, signal.SIGINT]):
            train()
    """))
    try:
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the process hung at exit waiting for its DataLoader workers")
    assert done.returncode == 1 and "crashed mid-epoch" in done.stderr, done.stderr[-2000:]
