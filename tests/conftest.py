import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the dist_*_worker scripts, which some tests also import
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# make test runs a pytest-xdist worker per core: each worker, and every command a test starts, keeps to its share of
# the cores, since torch on more threads than it has cores stalls for as long as another process holds one.
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
THREADS = max(1, min(2, CORES // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
torch.set_num_threads(THREADS)

# Scripts that the multi-process tests launch, not test modules: never imported by the collection.
collect_ignore_glob = ["dist_*_worker.py"]


# optional: pytest without xdist (`-p no:xdist`, or the dev extra not installed) runs on one process
@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (make test): a worker per core this process may use, at most eight (each holds a torch and its
    caches; more gain little on tests that mostly start commands)."""
    return min(8, CORES)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def separable_folder(tmp_path):
    """train/ and val/ folders of two classes any encoder separates: dark vs bright 16 px images."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "separable"
    for split in ("train", "val"):
        for c, level in enumerate((40, 210)):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(12):
                arr = np.clip(level + rng.normal(0, 12, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


@pytest.fixture
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state: a test that needs other mixed precision than the tests before it
    starts and leaves a fresh one, so the order of tests does not matter."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()
