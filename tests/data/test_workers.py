"""DataLoader workers start from the fork server, not forked from a process with threads, and leave the
stop signals to the main process, yet obey its own shutdown."""

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from regioncl.data.workers import SUPPORTED, WorkerLoader

pytestmark = pytest.mark.skipif(not SUPPORTED, reason="no sigwaitinfo on this platform")


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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

        if __name__ == "__main__":  # the workers import this file (they are not forked from it)
            with main_handles([signal.SIGTERM, signal.SIGINT]):
                train()
    """))
    try:
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the process hung at exit waiting for its DataLoader workers")
    assert done.returncode == 1 and "crashed mid-epoch" in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("start_method", [None, "fork"])
@pytest.mark.slow
def test_a_lock_held_by_another_thread_as_the_workers_start_does_not_hang_them(tmp_path, start_method):
    """What hung multi-process runs: a worker forked while another thread of its process held a
    lock (gloo's, an allocator's, Python's) inherits it held, with no thread left to release it,
    and sleeps for ever on it. Workers from the fork server (the default) are not forked from this
    process: they deliver every batch. Forked ones (the control) do not."""
    script = tmp_path / "locked.py"
    script.write_text(textwrap.dedent("""
        import sys, threading, torch
        from regioncl.data.workers import WorkerLoader

        LOCK = threading.Lock()

        class Locking(torch.utils.data.Dataset):
            def __len__(self):
                return 8

            def __getitem__(self, i):
                with LOCK:
                    return i

        if __name__ == "__main__":
            held, release = threading.Event(), threading.Event()

            def hold():
                with LOCK:
                    held.set()
                    release.wait()

            threading.Thread(target=hold, daemon=True).start()
            held.wait()
            timeout, method = int(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else None)
            loader = WorkerLoader(Locking(), batch_size=2, num_workers=2, timeout=timeout, multiprocessing_context=method)
            it = iter(loader)  # the workers start while the other thread holds LOCK
            release.set()
            print(loader.multiprocessing_context.get_start_method(), torch.cat(list(it)).tolist())
    """))
    # (the fork server's first start imports torch: a generous timeout for it, a short one for the control)
    timeout = "10" if start_method == "fork" else "150"
    done = subprocess.run([sys.executable, str(script), timeout, *([start_method] if start_method else [])],
                          capture_output=True, text=True, timeout=300)
    if start_method == "fork":
        assert done.returncode != 0 and "DataLoader timed out after 10 seconds" in done.stderr, done.stderr[-2000:]
    else:
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split(None, 1) == ["forkserver", str(list(range(8))) + "\n"]


@pytest.mark.slow
def test_workers_log_as_the_main_process_does(tmp_path):
    """A worker from the fork server logs with the main process's handlers and formats, as a
    forked one did (the trainer's warnings of bad images and stream retries come from workers)."""
    script = tmp_path / "logs.py"
    script.write_text(textwrap.dedent("""
        import logging, torch
        from regioncl.data.workers import WorkerLoader

        class Logging(torch.utils.data.Dataset):
            def __len__(self):
                return 2

            def __getitem__(self, i):
                logging.getLogger("regioncl.data").warning("item %d", i)
                logging.getLogger("regioncl.data").debug("not shown")
                return i

        if __name__ == "__main__":
            logging.basicConfig(level=logging.INFO, format="[main format] %(levelname)s %(name)s: %(message)s")
            print(torch.cat(list(WorkerLoader(Logging(), batch_size=1, num_workers=1))).tolist())
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "main format" in line or "not shown" in line]
    assert lines == ["[main format] WARNING regioncl.data: item 0", "[main format] WARNING regioncl.data: item 1"]


@pytest.mark.slow
def test_a_script_without_a_main_guard_is_told_to_add_one(tmp_path):
    """The workers import the main module as they start: a script that makes its accelerator at
    the top level would have every worker join the job. It is refused, naming the cure."""
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent("""
        import torch
        from regioncl.data.workers import WorkerLoader
        from regioncl.distributed import make_accelerator

        acc = make_accelerator()
        print(list(WorkerLoader(torch.arange(4), batch_size=2, num_workers=1)))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    assert "work under `if __name__ == \"__main__\":`" in done.stderr, done.stderr[-2000:]


def test_a_dataset_that_cannot_be_pickled_is_told_what_to_do():
    from regioncl.errors import UserError

    class Local(torch.utils.data.Dataset):  # a class inside a function: not picklable
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return i

    with pytest.raises(UserError, match="cannot be.*top level of a module.*num_workers 0.*REGIONCL_WORKER_START=fork"):
        iter(WorkerLoader(Local(), num_workers=1))


def test_the_start_method_is_the_fork_server_unless_the_environment_names_another(monkeypatch):
    from regioncl.errors import UserError

    def method():
        return WorkerLoader(list(range(4)), num_workers=1).multiprocessing_context.get_start_method()

    assert method() == "forkserver"
    assert WorkerLoader(list(range(4))).multiprocessing_context is None  # no workers, no processes
    monkeypatch.setenv("REGIONCL_WORKER_START", "fork")
    assert method() == "fork"
    monkeypatch.setenv("REGIONCL_WORKER_START", "threads")
    with pytest.raises(UserError, match="REGIONCL_WORKER_START='threads'"):
        method()


def test_every_loader_of_the_package_is_a_worker_loader():
    """One start method for every loader: regioncl makes no plain DataLoader (only WorkerLoader,
    which starts its workers from the fork server)."""
    import ast
    from pathlib import Path

    import regioncl

    plain = []
    for path in Path(regioncl.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "DataLoader":
                plain.append(f"{path.name}:{node.lineno}")
    assert plain == []


@pytest.mark.slow
def test_the_fork_server_and_the_resource_tracker_outlive_a_jobs_stop_signals(tmp_path):
    """scancel signals every process of the job: the fork server and multiprocessing's resource
    tracker too. A dead server would make the workers it started look dead to their loader (it
    reports their exits), crashing a run that was about to save; so both ignore the stop signals,
    and the loader, waiting longer than torch's 5 s between checks of its workers, gets every batch."""
    script = tmp_path / "signalled.py"
    script.write_text(textwrap.dedent("""
        import os, signal, time, torch
        from multiprocessing import forkserver, resource_tracker
        from regioncl.data.workers import WorkerLoader

        class Slow(torch.utils.data.Dataset):
            def __len__(self):
                return 3

            def __getitem__(self, i):
                time.sleep(6 if i else 0)  # more than torch's 5 s between checks that its workers live
                return i

        if __name__ == "__main__":
            it = iter(WorkerLoader(Slow(), batch_size=1, num_workers=1, prefetch_factor=1))
            first = next(it)
            helpers = [forkserver._forkserver._forkserver_pid, resource_tracker._resource_tracker._pid]
            for pid in helpers:
                for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
                    os.kill(pid, sig)
            time.sleep(0.5)
            print([os.waitpid(pid, os.WNOHANG)[0] for pid in helpers], torch.cat([first, *it]).tolist())
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[0, 0] [0, 1, 2]"  # both still running; every batch
    assert "died unexpectedly" not in done.stderr


@pytest.mark.slow
def test_the_workers_and_the_fork_server_end_with_a_killed_main_process(tmp_path):
    """The workers' parent is the fork server, not the main process, so torch's check of the
    parent does not see a main process killed outright (SIGKILL, or a signal it does not handle):
    the workers end with it all the same, and then the server, rather than wait for ever."""
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent("""
        import os, signal, torch
        from multiprocessing import forkserver
        from regioncl.data.workers import WorkerLoader

        if __name__ == "__main__":
            it = iter(WorkerLoader(torch.arange(64), batch_size=2, num_workers=2, persistent_workers=True))
            next(it)
            print(forkserver._forkserver._forkserver_pid, *(w.pid for w in it._workers), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """))
    # (the output is read to its end: were the workers or the server left running, they would hold it open)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    pids = [int(pid) for pid in done.stdout.split()]
    assert len(pids) == 3

    def running(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.time() + 60
    while any(running(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in pids if running(pid)]
