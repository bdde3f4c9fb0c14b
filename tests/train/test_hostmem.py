"""Freed host memory stays in the process: a training step on the CPU stops page-faulting."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from regioncl.train import hostmem
from regioncl.train.config import make_config
from regioncl.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# Allocate, touch and free blocks the sizes of large activations, as every training step does;
# print the block size and the median minor page faults per cycle once the first cycles have
# grown the heap ("release": the kept memory handed back before every cycle). The large block is
# 64 MiB, above glibc's largest dynamic mmap threshold, or 16 MiB where the setting keeps blocks
# up to 32 MiB only (an older glibc).
CYCLES = """
import statistics, sys, torch
from regioncl.train.hostmem import keep_freed_host_memory, minor_page_faults, release_freed_host_memory
limit = keep_freed_host_memory() if sys.argv[1] != "default" else 1 << 31
big = 64 << 20 if limit >= 72 << 20 else 16 << 20
def cycle():
    a = torch.empty(big // 4); a.fill_(1.0)
    b = torch.empty(2 << 20); b.fill_(2.0)  # 8 MiB
    del a, b
faults = []
for _ in range(12):
    if sys.argv[1] == "release":
        release_freed_host_memory()
    before = minor_page_faults()
    cycle()
    faults.append(minor_page_faults() - before)
print(big, statistics.median(faults[4:]))
"""


def _fraction_faulted(mode: str) -> tuple[int, float]:
    """``(large block bytes, median faults per cycle / pages per cycle)`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", CYCLES, mode],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    big, faults = done.stdout.split()[-2:]
    return int(big), float(faults) / ((int(big) + (8 << 20)) // 4096)


def _huge_pages_always() -> bool:
    try:
        return "[always]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


@glibc
@pytest.mark.slow
def test_kept_memory_is_reused_without_page_faults_until_released():
    big, kept = _fraction_faulted("keep")
    assert kept < 0.02
    if not _huge_pages_always():  # (2 MiB pages would fault 512 times less)
        # The memory handed back by release_freed_host_memory faults in again every cycle.
        assert _fraction_faulted("release")[1] > 0.8
        if big == 64 << 20:
            # So does, with glibc's defaults, a block above its largest dynamic mmap threshold.
            assert _fraction_faulted("default")[1] > 0.8


def test_nothing_is_applied_where_the_c_library_is_not_glibc(monkeypatch):
    monkeypatch.setattr(hostmem, "_kept", None)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert hostmem.keep_freed_host_memory() == 0
    assert hostmem.keep_host_memory_for(True, "cpu") == 0
    hostmem.release_freed_host_memory()  # a no-op, no error


@pytest.mark.parametrize("setting", [None, False, True])
def test_trainer_keeps_host_memory_on_the_cpu_unless_told_not_to(tmp_path, monkeypatch, setting):
    calls = []
    monkeypatch.setattr(hostmem, "keep_freed_host_memory", lambda: calls.append(1) or 1 << 30)
    cfg = make_config(
        overrides=dict(
            backbone="resnet10t",
            image_size=16,
            batch_size=8,
            queue_size=32,
            knn=False,
            num_workers=0,
            output_dir=str(tmp_path),
            keep_host_memory=setting,
        )
    )
    trainer = Trainer(cfg)
    expected = setting if setting is not None else trainer.accelerator.device.type == "cpu"
    assert bool(calls) == expected
