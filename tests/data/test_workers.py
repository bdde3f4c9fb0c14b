"""DataLoader workers leave the stop signals to the main process, yet obey its own shutdown."""

import subprocess
import sys
import textwrap

import pytest

from regioncl.data.workers import SUPPORTED, WorkerLoader

pytestmark = pytest.mark.skipif(not SUPPORTED, reason="no sigwaitinfo on this platform")


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_workers_signalled_by_another_process_as_they_start_still_deliver_every_batch(tmp_path, start_method):
    """A scheduler's SIGTERM to every process of a job may land while a worker starts, before any
    worker_init_fn runs (torch's worker installs a SIGTERM handler that dies first thing): the
    signal must not kill it, whether the worker was forked or spawned. Each worker is held in that
    gap until another process has signalled it."""
    script = tmp_path / "held.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing, os, pathlib, random, signal, subprocess, sys, time, torch
        from regioncl.data.workers import WorkerLoader, main_handles

        FLAGS, START_METHOD = pathlib.Path(sys.argv[1]), sys.argv[2]
        seed = random.seed

        def held_seed(*args):  # torch's worker loop seeds `random` between its handlers and worker_init_fn
            if multiprocessing.parent_process() is not None:
                (FLAGS / f"started-{os.getpid()}").touch()
                deadline = time.time() + 60
                while not (FLAGS / "signalled").exists() and time.time() < deadline:
                    time.sleep(0.01)
            seed(*args)

        random.seed = held_seed  # at the top level: a spawned worker runs it again as it imports this file

        if __name__ == "__main__":
            loader = WorkerLoader(torch.arange(16), batch_size=4, num_workers=2, multiprocessing_context=START_METHOD)
            with main_handles([signal.SIGTERM]):
                it = iter(loader)
                deadline = time.time() + 60
                while len(list(FLAGS.glob("started-*"))) < 2 and time.time() < deadline:
                    time.sleep(0.01)
                pids = [p.name.split("-")[1] for p in FLAGS.glob("started-*")]
                assert len(pids) == 2, pids
                subprocess.run(["kill", "-TERM", *pids], check=True)  # sent by `kill`, not by the main process
                (FLAGS / "signalled").touch()
                print(torch.cat(list(it)).tolist())
    """))
    done = subprocess.run([sys.executable, str(script), str(tmp_path), start_method],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(list(range(16)))


def test_workers_outside_main_handles_keep_torchs_behaviour(tmp_path):
    """Only the signals the main process handles are left to it: a SIGTERM to a worker of a loader
    started outside :func:`main_handles` still ends that worker, and the loader says so."""
    # plain lists as batches: a tensor batch in flight is passed as a file descriptor by its worker,
    # and a worker killed meanwhile would fail that hand-over first, with another error
    loader = WorkerLoader(list(range(16)), batch_size=1, num_workers=1, persistent_workers=True,
                          prefetch_factor=1, collate_fn=list)
    it = iter(loader)
    next(it)
    try:
        with pytest.raises(RuntimeError, match="DataLoader worker"):
            subprocess.run(["kill", "-TERM", str(it._workers[0].pid)], check=True)
            list(it)
    finally:
        it._shutdown_workers()  # else torch reports the dead worker again at the next SIGCHLD, anywhere


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
