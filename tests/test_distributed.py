"""Two CPU processes (gloo) under `accelerate launch`."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]

pytestmark = pytest.mark.slow


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, tmp_path):
    args = ["--main_process_port", str(free_port()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(ACCELERATE + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_queue_holds_keys_of_both_ranks(tmp_path):
    launch([str(ROOT / "tests" / "dist_queue_worker.py"), str(tmp_path)], tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == 2
    assert r0["ptr"] == r1["ptr"] == 8  # the global batch, not the local one
    gathered = torch.cat([r0["keys"], r1["keys"]])
    for r in (r0, r1):  # every rank holds the same queue, in rank order
        assert torch.allclose(r["queue"][:8], gathered, atol=1e-6)
    assert not torch.allclose(r0["keys"], r1["keys"])


def test_every_method_trains_in_two_processes(tmp_path):
    from regioncl.methods import METHODS

    launch([str(ROOT / "tests" / "dist_methods_worker.py"), str(tmp_path)], tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted(results) == sorted(METHODS)
    for name, res in results.items():
        assert res["world"] == 2
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [1, 2, 3], name
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records), name
        if res["queue_ptr"] is not None:  # 3 steps × global batch 8 into a queue of 32
            assert res["queue_ptr"] == 24, name
        if res["dense_queue_ptr"] is not None:
            assert res["dense_queue_ptr"] == 24, name


def test_pretrain_script_runs_in_two_processes(tmp_path):
    out = tmp_path / "run"
    launch([str(ROOT / "scripts" / "pretrain.py"), "--backbone", "resnet10t", "--image-size", "16", "--batch-size", "8",
            "--queue-size", "32", "--max-steps", "4", "--log-every", "2", "--num-workers", "0", "--no-knn",
            "--output-dir", str(out)], tmp_path)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert (out / "checkpoints" / "step_00000004" / "trainer_state.json").is_file()


def test_streaming_with_uneven_shares_stops_every_process_together(tmp_path):
    """23 streamed images, 2 processes, 2 per process a step: rank 0 has 6 batches in an epoch,
    rank 1 only 5. Both must stop the epoch after 5 steps (no hang, no step out of step)."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)) for _ in range(23)]
    (tmp_path / "pq").mkdir()
    ds = datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(23)]})
    ds.cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "pq" / "part-0.parquet"))
    out = tmp_path / "run"
    launch([str(ROOT / "scripts" / "pretrain.py"), "--data", f"hf:{tmp_path / 'pq'}", "--streaming",
            "--backbone", "resnet10t", "--image-size", "16", "--batch-size", "4", "--queue-size", "32",
            "--max-steps", "8", "--epochs", "2", "--log-every", "1", "--num-workers", "0", "--no-knn",
            "--shuffle-buffer", "0", "--output-dir", str(out)], tmp_path)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert [r["epoch"] for r in records] == [0] * 5 + [1] * 3


def test_two_process_knn_equals_one_process(tmp_path):
    """Each rank encodes every other image (11 + 10 bank images: uneven shares); the gathered
    result must equal the single-process one."""
    import numpy as np
    from PIL import Image

    from regioncl.backbones import create_encoder
    from regioncl.data import build_source, eval_transform
    from regioncl.knn import knn_evaluate

    rng = np.random.default_rng(0)
    for split, n in (("train", 21), ("val", 9)):
        for i in range(n):
            d = tmp_path / split / f"c{int(rng.integers(0, 3))}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(d / f"{i}.png")
    launch([str(ROOT / "tests" / "dist_knn_worker.py"), str(tmp_path)], tmp_path)
    two = json.loads((tmp_path / "knn.json").read_text())
    torch.manual_seed(0)
    encoder = create_encoder("resnet18", output_stride=8)
    one = knn_evaluate(encoder, build_source(str(tmp_path / "train")), build_source(str(tmp_path / "val")),
                       eval_transform(16, crop_pct=1.0), torch.device("cpu"), k=5, batch_size=4)
    assert two["world"] == 2
    assert two["top1"] == one
    assert 0.0 < one < 1.0  # random images and labels: neither trivially right nor wrong


def test_two_process_linear_probe_learns_with_one_classifier(tmp_path, separable_folder):
    """Data-parallel probe, cached features (each rank caches its own share) and augmented
    (Accelerate's sharded loader): both learn the separable set, the two ranks end with the
    same classifier and the same reduced numbers, and the encoder is untouched."""
    launch([str(ROOT / "tests" / "dist_probe_worker.py"), str(separable_folder)], tmp_path)
    r0, r1 = (torch.load(separable_folder / f"probe_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert int(r0["world"]) == 2
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key  # DDP kept the heads equal; losses and counts were reduced
    for augment in (False, True):
        assert float(r0[f"{augment}_top1"]) >= 0.9
        assert r0[f"{augment}_history"][-1] < r0[f"{augment}_history"][0]
    assert bool(r0["unchanged"])
