"""Fault injection: a run SIGKILLed at random moments and resumed each time must end where an
uninterrupted run ends: the same per-step losses, the same final weights.

A kill may land anywhere: in a step, in a checkpoint being written, in start-up. What survives
is the last complete checkpoint (atomic, verified); the resumed run repeats the steps after it
exactly (every random draw is a function of the seed and the step or the example) and drops the
metric records the killed run wrote past it. ``scripts/fault_injection.py`` runs this for any
number of kills; the test suite runs a few.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files import checkpoint_dir, list_checkpoints
from ..processes import regioncl_command, regioncl_env


def step_losses(output_dir: str | os.PathLike) -> dict[int, dict[str, float]]:
    """``{step: {loss terms}}`` from a run's ``metrics.jsonl``; a step logged twice is an error."""
    losses: dict[int, dict[str, float]] = {}
    for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            if record["step"] in losses:
                raise AssertionError(f"step {record['step']} was logged twice in {output_dir}")
            losses[record["step"]] = {k: v for k, v in record.items() if k.startswith("loss")}
    return losses


def _last_step(output_dir: Path) -> int:
    path = output_dir / "metrics.jsonl"
    if not path.is_file():
        return -1
    steps = [json.loads(line).get("step", -1) for line in path.read_text().splitlines() if line.strip()]
    return max(steps, default=-1)


def kill_and_resume(
    args: Sequence[str],
    output_dir: str | os.PathLike,
    kills: int,
    seed: int = 0,
    max_delay: float = 1.5,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Run ``regioncl pretrain ARGS --run.output_dir OUT``, SIGKILL it ``kills`` times and resume
    it each time (``--run.resume latest`` once a checkpoint exists) until it finishes. Every other
    kill lands while a checkpoint is being written (as soon as its hidden folder appears); the
    others once the run has made progress since the last kill, after a random further
    0–``max_delay`` s.

    Returns:
        ``{"kills", "killed_after_steps", "mid_checkpoint"}``: the kills made, the newest step
        logged before each, and how many left a checkpoint half-written.
    """
    out = Path(output_dir)
    rng = random.Random(seed)
    report: dict[str, Any] = {"kills": 0, "killed_after_steps": [], "mid_checkpoint": 0}
    deadline = time.time() + timeout
    while True:
        command = [*regioncl_command("pretrain"), *args, "--run.output_dir", str(out)]
        if list_checkpoints(out):
            command += ["--run.resume", "latest"]
        before = _last_step(out)
        half_written = set(checkpoint_dir(out).glob(".tmp-*")) if checkpoint_dir(out).is_dir() else set()
        with open(out.with_name(out.name + ".log"), "a") as log:
            proc = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True, env=regioncl_env()
            )
        if report["kills"] < kills:
            if report["kills"] % 2:  # in the middle of writing a checkpoint
                while (
                    proc.poll() is None
                    and not (set(checkpoint_dir(out).glob(".tmp-*")) - half_written)
                    and time.time() < deadline
                ):
                    time.sleep(0.002)
            else:
                while proc.poll() is None and _last_step(out) <= before and time.time() < deadline:
                    time.sleep(0.05)
                time.sleep(rng.uniform(0.0, max_delay))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                report["kills"] += 1
                report["killed_after_steps"].append(_last_step(out))
                now = set(checkpoint_dir(out).glob(".tmp-*")) if checkpoint_dir(out).is_dir() else set()
                report["mid_checkpoint"] += bool(now - half_written)
                continue
        if proc.wait(timeout=max(1.0, deadline - time.time())) != 0:
            raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}; see {out.name}.log beside it")
        if (out / "encoder.safetensors").is_file():
            return report
