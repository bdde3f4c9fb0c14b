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
torch.set_num_threads(min(2, os.cpu_count() or 1))

# Scripts that the multi-process tests launch, not test modules: never imported by the collection.
collect_ignore_glob = ["dist_*_worker.py"]


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
