"""Freed host memory stays in the process: a training step on the CPU stops page-faulting."""

import platform
import subprocess
import sys

import pytest

from regioncl.config import make_config
from regioncl.trainer import Trainer

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# Allocate, touch and free blocks the sizes of large activations, as every training step does;
# print the median minor page faults per cycle once the first cycles have grown the heap.
CYCLES = """
import statistics, sys, torch
from regioncl.hostmem import keep_freed_host_memory, minor_page_faults
if sys.argv[1] == "keep":
    assert keep_freed_host_memory()
def cycle():
    a = torch.empty(16 << 20); a.fill_(1.0)  # 64 MiB: above glibc's largest dynamic mmap threshold
    b = torch.empty(2 << 20); b.fill_(2.0)   # 8 MiB
    del a, b
faults = []
for _ in range(12):
    before = minor_page_faults()
    cycle()
    faults.append(minor_page_faults() - before)
print(statistics.median(faults[4:]))
"""
PAGES_PER_CYCLE = (72 << 20) // 4096


def _faults_per_cycle(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", CYCLES, mode], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def _huge_pages_always() -> bool:
    try:
        return "[always]" in open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return False


@glibc
def test_kept_memory_is_reused_without_page_faults():
    if not _huge_pages_always():  # (2 MiB pages would fault 512 times less)
        # glibc's defaults unmap the 64 MiB block on free: it faults in again every cycle.
        assert _faults_per_cycle("default") > 0.8 * PAGES_PER_CYCLE
    assert _faults_per_cycle("keep") < 0.02 * PAGES_PER_CYCLE


@pytest.mark.parametrize("setting, applied", [(None, True), (False, False), (True, True)])
def test_trainer_keeps_host_memory_on_the_cpu_unless_told_not_to(tmp_path, monkeypatch, setting, applied):
    calls = []
    monkeypatch.setattr("regioncl.trainer.keep_freed_host_memory", lambda: calls.append(1) or True)
    cfg = make_config(overrides=dict(backbone="resnet10t", image_size=16, batch_size=8, queue_size=32, knn=False,
                                     num_workers=0, output_dir=str(tmp_path), keep_host_memory=setting))
    Trainer(cfg)
    assert bool(calls) == applied
