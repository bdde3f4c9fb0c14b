"""Faults a long run meets: preemption signals, a diverged loss, damaged checkpoints, a full disk,
transient read errors, untrusted files. Nothing already written is lost; every fault is a message."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import torch_threads

from regioncl.files import STATE_FILE, list_checkpoints
from regioncl.train import checkpoint as ckpt
from regioncl.train.config import make_config
from regioncl.train.fault_injection import kill_and_resume, step_losses
from regioncl.train.preemption import EXIT_CHECKPOINT, EXIT_NONFINITE, EXIT_STOPPED, RunStopped
from regioncl.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
# A run of tiny steps, long enough for a signal to land in it.
TINY = {
    "model.backbone": "resnet10t",
    "data.image_size": 16,
    "optim.batch_size": 8,
    "method.queue_size": 32,
    "method.proj_hidden_dim": 32,
    "method.proj_dim": 16,
    "data.num_workers": 0,
    "knn.enabled": False,
    "run.log_every": 1,
    "optim.lr": 0.05,
}


def cli(options: dict) -> list[str]:
    return [
        arg for k, v in options.items() for arg in (f"--{k}", json.dumps(v) if isinstance(v, (bool, list)) else str(v))
    ]


def trainer(out: Path, **kw) -> Trainer:
    return Trainer(make_config(overrides={**TINY, "run.output_dir": str(out), **kw}))


def assert_same_losses(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for step in a:
        for key, value in a[step].items():
            assert b[step][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, key)


def signalled_run(out: Path, sig: int, extra: dict | None = None, env: dict | None = None, group: bool = False):
    """scripts/pretrain.py on one thread, signalled once it has logged step 3: ``(exit status, stderr)``.
    With ``group`` every process of it gets the signal (as from ``scancel`` or ``kill -- -PGID``)."""
    options = {
        **TINY,
        "optim.max_steps": 400,
        "run.checkpoint_every": 1000,
        **(extra or {}),
        "run.output_dir": str(out),
    }
    command = [sys.executable, str(ROOT / "scripts" / "pretrain.py"), *cli(options)]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=out.parent,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        start_new_session=group,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_saves_at_the_step_reached_and_the_resumed_run_matches(tmp_path, sig):
    out = tmp_path / "run"
    status, err = signalled_run(out, sig)
    assert status == EXIT_STOPPED, err[-3000:]
    reached = max(step_losses(out))
    assert [p.name for p in list_checkpoints(out)] == [f"step_{reached:08d}"]  # saved at the step reached
    assert f"stopped by {signal.Signals(sig).name} at step {reached}" in err
    # Resumed, it trains on to the end with the losses of an uninterrupted run.
    stop_at = reached + 5
    with torch_threads(1):
        trainer(out, **{"optim.max_steps": 400, "run.stop_at_step": stop_at, "run.resume": "latest"}).train()
        trainer(tmp_path / "whole", **{"optim.max_steps": 400, "run.stop_at_step": stop_at}).train()
    assert_same_losses(step_losses(tmp_path / "whole"), step_losses(out))


@pytest.mark.slow
def test_a_stop_signal_to_every_process_of_the_job_leaves_the_workers_to_the_trainer(tmp_path):
    """scancel signals the DataLoader workers too: they must go on serving the trainer until it
    has saved at the step reached, and then let it exit (not keep it waiting for them)."""
    out = tmp_path / "run"
    status, err = signalled_run(out, signal.SIGTERM, {"data.num_workers": 2}, group=True)
    assert status == EXIT_STOPPED, err[-3000:]
    reached = max(step_losses(out))
    assert [p.name for p in list_checkpoints(out)] == [f"step_{reached:08d}"]
    assert f"stopped by SIGTERM at step {reached}" in err and "DataLoader worker" not in err


@pytest.mark.slow
def test_requeue_on_signal_calls_scontrol_with_the_job_id(tmp_path):
    fake = tmp_path / "bin" / "scontrol"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "scontrol_args"}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    status, err = signalled_run(tmp_path / "run", signal.SIGUSR1, {"run.requeue_on_signal": True}, env)
    assert status == EXIT_STOPPED, err[-3000:]
    assert (tmp_path / "scontrol_args").read_text().split() == ["requeue", "4242"]


@pytest.mark.slow
def test_a_stop_signal_to_one_of_two_processes_stops_both_at_the_same_step(tmp_path):
    """Two processes started as a scheduler starts its tasks (``srun``: one process per rank, the
    rendezvous in the environment); only rank 1 is signalled. They agree on the step (no rank
    saves alone, none hangs), write one checkpoint there, and both exit with the code."""
    from launch import free_port

    out = tmp_path / "run"
    options = {**TINY, "optim.max_steps": 400, "run.checkpoint_every": 1000, "run.output_dir": str(out)}
    port = str(free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "pretrain.py"), *cli(options)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env={
                **os.environ,
                "OMP_NUM_THREADS": "1",
                "RANK": str(r),
                "LOCAL_RANK": str(r),
                "WORLD_SIZE": "2",
                "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
            },
        )
        for r in (0, 1)
    ]
    deadline = time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if (out / "metrics.jsonl").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    errs = [p.communicate(timeout=300)[1] for p in procs]
    reached = max(step_losses(out))
    assert [p.returncode for p in procs] == [EXIT_STOPPED, EXIT_STOPPED], errs[0][-2000:] + errs[1][-2000:]
    assert [p.name for p in list_checkpoints(out)] == [f"step_{reached:08d}"]
    assert f"stopped by a signal to another process at step {reached}" in errs[0]
    assert f"stopped by SIGTERM at step {reached}" in errs[1]
    state = json.loads((list_checkpoints(out)[0] / STATE_FILE).read_text())
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= set(state["files"])  # both ranks' parts


@pytest.mark.slow
def test_a_stop_signal_to_accelerate_launch_reaches_both_processes(tmp_path):
    """SIGTERM to the launcher only (as Kubernetes sends it to a container's first process): it
    passes it on, both processes save one checkpoint at the same step and stop; the resumed run
    goes on from there."""
    from launch import accelerate_launch

    out = tmp_path / "run"
    options = {**TINY, "optim.max_steps": 400, "run.checkpoint_every": 1000, "run.output_dir": str(out)}
    proc = subprocess.Popen(
        [*accelerate_launch(), str(ROOT / "scripts" / "pretrain.py"), *cli(options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    reached = max(step_losses(out))
    assert [p.name for p in list_checkpoints(out)] == [f"step_{reached:08d}"], err[-3000:]
    assert err.count(f"at step {reached}: checkpoint") == 2, err[-3000:]  # each process stopped there
    assert proc.returncode != 0  # the launcher reports the signal it got itself


def poison_step(t: Trainer, step: int) -> None:
    """The batch of ``step`` (1-based) comes out of the loader as NaN: its loss is not finite."""
    real = t.data.to_device

    def to_device(images, view, at):
        x = real(images, view, at)
        return x * float("nan") if at + 1 == step else x

    t.data.to_device = to_device


def test_a_non_finite_loss_stops_without_a_checkpoint_from_those_weights(tmp_path):
    t = trainer(
        tmp_path / "r",
        **{"optim.max_steps": 10, "run.checkpoint_every": 2, "run.log_every": 2, "run.keep_checkpoints": 5},
    )
    poison_step(t, 5)
    with pytest.raises(RunStopped) as stopped:
        t.train()
    assert stopped.value.exit_code == EXIT_NONFINITE
    message = str(stopped.value)
    assert "steps 5–6" in message and "step_00000004" in message and "optim.lr" in message
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step_00000002", "step_00000004"]
    saved = load_file(str(list_checkpoints(tmp_path / "r")[-1] / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())


@pytest.mark.slow
def test_rollback_reloads_the_last_good_checkpoint_and_skips_the_offending_steps(tmp_path):
    t = trainer(
        tmp_path / "r",
        **{
            "optim.max_steps": 10,
            "run.checkpoint_every": 2,
            "run.log_every": 2,
            "run.on_nonfinite": "rollback",
            "run.keep_checkpoints": 5,
        },
    )
    poison_step(t, 5)
    result = t.train()
    assert result["step"] == 10 and t.rollbacks == 1
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 6, "nonfinite_steps": [5, 6], "rolled_back_to": 4} in records
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 8, 10]  # steps 5–6 neither trained nor logged
    assert all(
        torch.isfinite(v).all()
        for v in load_file(str(tmp_path / "r" / "encoder.safetensors")).values()
        if v.is_floating_point()
    )
    # No rollbacks left: it stops.
    t = trainer(
        tmp_path / "s",
        **{
            "optim.max_steps": 10,
            "run.checkpoint_every": 2,
            "run.log_every": 2,
            "run.on_nonfinite": "rollback",
            "run.max_rollbacks": 0,
        },
    )
    poison_step(t, 5)
    with pytest.raises(RunStopped, match="0 rollbacks spent"):
        t.train()


def damaged_run(tmp_path: Path) -> Path:
    out = tmp_path / "r"
    trainer(
        out, **{"optim.max_steps": 8, "run.stop_at_step": 6, "run.checkpoint_every": 2, "run.keep_checkpoints": 5}
    ).train()
    assert [p.name for p in list_checkpoints(out)] == ["step_00000002", "step_00000004", "step_00000006"]
    return out


@pytest.mark.parametrize("damage", ["truncate", "delete", "alter"])
@pytest.mark.slow
def test_resume_skips_a_damaged_checkpoint_with_a_warning(tmp_path, damage, caplog):
    out = damaged_run(tmp_path)
    newest = list_checkpoints(out)[-1]
    state = json.loads((newest / STATE_FILE).read_text())
    assert {"model.safetensors", "optimizer.bin"} <= set(state["files"])  # every file, size and checksum
    weights = newest / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "delete":
        (newest / "optimizer.bin").unlink()
    else:  # same size, other bytes
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        assert ckpt.resolve_resume("latest", out).name == "step_00000004"
    assert "skipping damaged checkpoint" in caplog.text and str(newest) in caplog.text
    with pytest.raises(ckpt.CheckpointError, match="is damaged: .*(model.safetensors|optimizer.bin)"):
        ckpt.resolve_resume(str(newest), out)
    # The run resumes from the good one and finishes.
    result = trainer(
        out, **{"optim.max_steps": 8, "run.checkpoint_every": 2, "run.resume": "latest", "run.keep_checkpoints": 5}
    ).train()
    assert result["step"] == 8


def test_a_save_that_fails_leaves_the_previous_checkpoint_and_no_temporary_folder(tmp_path):
    import errno

    def failing(t: Trainer, failing_calls: set[int]) -> None:
        """save_state writes part of the checkpoint, then meets a full disk, at these calls."""
        real, calls = t.accelerator.save_state, {"n": 0}

        def save_state(path):
            calls["n"] += 1
            if calls["n"] in failing_calls:
                (Path(path) / "partial.bin").write_bytes(b"x" * 100)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path)

        t.accelerator.save_state = save_state

    t = trainer(tmp_path / "r", **{"optim.max_steps": 6, "run.checkpoint_every": 2})
    failing(t, {2, 3})
    with pytest.raises(RunStopped) as stopped:
        t.train()
    assert stopped.value.exit_code == EXIT_CHECKPOINT
    assert "No space left on device" in str(stopped.value) and "step_00000002" in str(stopped.value)
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step_00000002"]
    assert ckpt.resolve_resume("latest", tmp_path / "r").name == "step_00000002"  # intact: it verifies
    assert not list((tmp_path / "r" / "checkpoints").glob(".tmp-*"))
    # Asked to, training goes on past a periodic checkpoint that failed, and the next is written.
    t = trainer(
        tmp_path / "c",
        **{"optim.max_steps": 6, "run.checkpoint_every": 2, "run.on_save_error": "continue", "run.keep_checkpoints": 5},
    )
    failing(t, {2})
    assert t.train()["step"] == 6
    assert [p.name for p in list_checkpoints(tmp_path / "c")] == ["step_00000002", "step_00000006"]
    assert not list((tmp_path / "c" / "checkpoints").glob(".tmp-*"))


def test_read_with_retries_reads_every_item_once_in_order():
    from regioncl.data.twoview import read_with_retries

    failures = {"left": 2}

    def open_stream():
        for i in range(10):
            if i == 4 and failures["left"]:
                failures["left"] -= 1
                raise ConnectionError("connection reset by peer")
            yield i

    assert list(read_with_retries(open_stream, retries=2, wait=0.0, where="shard 3 of 8")) == list(range(10))
    failures["left"] = 3
    with pytest.raises(OSError, match="reading shard 3 of 8 failed 3 times in a row at example 4"):
        list(read_with_retries(open_stream, retries=2, wait=0.0, where="shard 3 of 8"))


def test_a_stream_that_fails_twice_gives_the_same_examples_in_the_same_order(tmp_path, monkeypatch):
    import io

    import datasets
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from regioncl.data import MoCoV2Views, build_source
    from regioncl.data.twoview import StreamingTwoViewDataset

    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0
    rng = np.random.default_rng(0)
    for f in range(2):
        rows = []
        for i in range(12):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(buf, format="PNG")
            rows.append({"image": {"bytes": buf.getvalue(), "path": None}, "label": 12 * f + i})
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / f"part{f}.parquet", row_group_size=4)
    source = build_source(f"hf:{tmp_path}", "train", streaming=True)

    def labels(dataset):
        return [(item["label"], item["index"]) for item in dataset]

    clean = labels(StreamingTwoViewDataset(source, MoCoV2Views(16), seed=0, shuffle_buffer=8))
    real, calls = source.iterate, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        for position, item in enumerate(real(*args, **kwargs)):
            if position == 7 and calls["n"] <= 2:
                raise OSError("HTTP 503 while reading a row group")
            yield item

    monkeypatch.setattr(source, "iterate", flaky)
    faulty = labels(StreamingTwoViewDataset(source, MoCoV2Views(16), seed=0, shuffle_buffer=8, retry_wait=0.0))
    assert calls["n"] == 3 and faulty == clean and len(clean) == 24


@pytest.mark.slow
def test_killed_at_random_moments_and_resumed_it_ends_as_an_uninterrupted_run(tmp_path):
    """A few SIGKILLs in steps and in checkpoints (scripts/fault_injection.py runs many)."""
    options = {**TINY, "optim.max_steps": 24, "run.checkpoint_every": 2, "data.num_workers": 1}
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "pretrain.py"),
            *cli(options),
            "--run.output_dir",
            str(tmp_path / "reference"),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    report = kill_and_resume(cli(options), tmp_path / "killed", kills=4, seed=1, max_delay=1.0)
    assert report["kills"] == 4 and report["mid_checkpoint"] >= 1, report
    assert_same_losses(step_losses(tmp_path / "reference"), step_losses(tmp_path / "killed"))
    ref, end = (load_file(str(tmp_path / r / "encoder.safetensors")) for r in ("reference", "killed"))
    for key in ref:
        assert torch.allclose(ref[key].float(), end[key].float(), rtol=1e-4, atol=1e-6), key


@pytest.mark.slow
def test_resume_auto_starts_a_new_run_and_continues_a_stopped_one(tmp_path):
    """What a requeued job needs: the same command line the first time and every time after."""
    args = {"optim.max_steps": 6, "run.checkpoint_every": 2, "run.resume": "auto"}
    assert trainer(tmp_path / "r", **args, **{"run.stop_at_step": 4}).train()["step"] == 4
    assert trainer(tmp_path / "r", **args).train()["step"] == 6
    trainer(tmp_path / "whole", **{"optim.max_steps": 6, "run.checkpoint_every": 2}).train()
    assert_same_losses(step_losses(tmp_path / "whole"), step_losses(tmp_path / "r"))
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):  # `latest` insists on one
        trainer(tmp_path / "new", **{**args, "run.resume": "latest"}).train()


def test_a_save_that_fails_inside_torch_or_safetensors_is_handled_the_same(tmp_path):
    """A full disk surfaces as torch.save's RuntimeError (and safetensors' own error), not only OSError."""
    t = trainer(tmp_path / "r", **{"optim.max_steps": 4, "run.checkpoint_every": 2})
    real, calls = t.accelerator.save_state, {"n": 0}

    def save_state(path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("[enforce fail at inline_container.cc] PytorchStreamWriter failed writing file")
        return real(path)

    t.accelerator.save_state = save_state
    with pytest.raises(RunStopped, match="PytorchStreamWriter failed writing file") as stopped:
        t.train()
    assert stopped.value.exit_code == EXIT_CHECKPOINT
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step_00000002"]
    assert not list((tmp_path / "r" / "checkpoints").glob(".tmp-*"))


def test_rollback_of_a_window_that_ends_at_the_last_step_trains_no_step_beyond(tmp_path):
    t = trainer(
        tmp_path / "r",
        **{
            "optim.max_steps": 6,
            "run.checkpoint_every": 2,
            "run.log_every": 2,
            "run.on_nonfinite": "rollback",
            "run.keep_checkpoints": 5,
        },
    )
    poison_step(t, 6)
    assert t.train()["step"] == 6
    assert [p.name for p in list_checkpoints(tmp_path / "r")][-1] == "step_00000006"
    good = load_file(str(tmp_path / "r" / "checkpoints" / "step_00000004" / "model.safetensors"))
    last = load_file(str(tmp_path / "r" / "checkpoints" / "step_00000006" / "model.safetensors"))
    assert all(torch.equal(good[k], last[k]) for k in good)  # steps 5–6 skipped: the weights of step 4


def test_a_stop_signal_after_a_non_finite_loss_saves_nothing(tmp_path):
    t = trainer(tmp_path / "r", **{"optim.max_steps": 10, "run.checkpoint_every": 2, "run.log_every": 2})
    poison_step(t, 3)
    real = t.train_step

    def signalled_at_3(batch, lr):
        real(batch, lr)
        if t.state.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    t.train_step = signalled_at_3
    with pytest.raises(RunStopped) as stopped:
        t.train()
    assert stopped.value.exit_code == EXIT_NONFINITE and "steps 3–3" in str(stopped.value)
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step_00000002"]


def test_a_new_run_in_a_folder_with_checkpoints_is_refused_and_old_checkpoints_are_not_resumed(tmp_path):
    from regioncl.errors import UserError

    trainer(tmp_path / "r", **{"optim.max_steps": 2, "run.checkpoint_every": 2}).train()
    with pytest.raises(UserError, match="holds checkpoints of an earlier run"):
        trainer(tmp_path / "r", **{"optim.max_steps": 2, "run.checkpoint_every": 2}).train()
    saved = json.loads((list_checkpoints(tmp_path / "r")[-1] / STATE_FILE).read_text())
    flat = {"method": "regioncl_m", "backbone": "resnet10t", "backbone_args": {}, "lr": 0.05}  # an earlier layout
    with pytest.raises(UserError, match="earlier version of regioncl"):
        ckpt.check_resumable(make_config(overrides=TINY), flat, tmp_path)
    # The configuration as the trainer resolves it (run.precision: the Accelerator's, fp32 here).
    ckpt.check_resumable(
        make_config(
            overrides={
                **TINY,
                "optim.max_steps": 2,
                "run.checkpoint_every": 2,
                "run.output_dir": str(tmp_path / "r"),
                "run.precision": "fp32",
            }
        ),
        saved["config"],
        tmp_path,
    )
