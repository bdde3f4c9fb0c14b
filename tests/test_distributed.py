"""Two CPU processes (gloo) under `accelerate launch`."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from launch import ACCELERATE, free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


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
        # Each rank's BN statistics followed its own batches; evaluation and export use the main
        # process's on every rank.
        assert res["buffer_digests"][0] == res["buffer_digests"][1], name
        if res["queue_ptr"] is not None:  # 3 steps × global batch 8 into a queue of 32
            assert res["queue_ptr"] == 24, name
        if res["dense_queue_ptr"] is not None:
            assert res["dense_queue_ptr"] == 24, name


def test_pretrain_script_runs_in_two_processes(tmp_path):
    out = tmp_path / "run"
    launch(
        [
            str(ROOT / "scripts" / "pretrain.py"),
            "--model.backbone",
            "resnet10t",
            "--data.image_size",
            "16",
            "--optim.batch_size",
            "8",
            "--method.queue_size",
            "32",
            "--optim.max_steps",
            "4",
            "--run.log_every",
            "2",
            "--data.num_workers",
            "0",
            "--knn.enabled",
            "false",
            "--run.output_dir",
            str(out),
        ],
        tmp_path,
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert (out / "checkpoints" / "step_00000004" / "trainer_state.json").is_file()


def test_two_process_knn_equals_one_process(tmp_path):
    """Each rank encodes every other image (11 + 10 bank images: uneven shares); the gathered
    result must equal the single-process one."""
    import numpy as np
    from PIL import Image

    from regioncl.backbones import create_encoder
    from regioncl.data import build_source, eval_transform
    from regioncl.eval.knn import knn_evaluate

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
    one = knn_evaluate(
        encoder,
        build_source(str(tmp_path / "train")),
        build_source(str(tmp_path / "val")),
        eval_transform(16, crop_pct=1.0),
        torch.device("cpu"),
        k=5,
        batch_size=4,
    )
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


def _parquet_ids(folder: Path, sizes: list[int], row_group_size: int) -> list[int]:
    """Parquet files of the given sizes whose labels are unique example ids."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    folder.mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (90, 120, 150)).save(buf, format="PNG")
    start = 0
    for f, n in enumerate(sizes):
        images = [{"bytes": buf.getvalue(), "path": f"{i}.png"} for i in range(start, start + n)]
        pq.write_table(
            pa.table({"image": images, "label": list(range(start, start + n))}),
            folder / f"train-{f:05d}.parquet",
            row_group_size=row_group_size,
        )
        start += n
    return list(range(start))


def _stream_overrides(data: Path, out: Path, procs: int, steps: int) -> dict:
    return dict(
        method="mocov2",
        backbone="resnet10t",
        data=f"hf:{data}",
        streaming=True,
        image_size=16,
        batch_size=2 * procs,
        queue_size=24 * procs,
        proj_hidden_dim=32,
        proj_dim=16,
        epochs=2,
        max_steps=steps,
        num_workers=0,
        shuffle_buffer=4,
        knn=False,
        log_every=1,
        output_dir=str(out),
    )


@pytest.mark.parametrize("procs,files", [(2, 4), (2, 5), (3, 4), (3, 5)])
def test_streamed_epoch_is_read_once_across_processes(tmp_path, procs, files):
    """4 or 5 parquet files (row groups of 2: 24 or 30 shards) on 2 or 3 processes: in one
    epoch the processes together train on every example exactly once, in the same number of
    steps; each process read only its own shards."""
    ids = _parquet_ids(tmp_path / "pq", [12] * files, row_group_size=2)
    per_epoch = len(ids) // (2 * procs)
    out = tmp_path / "run"
    launch(
        [
            "--num_processes",
            str(procs),
            str(ROOT / "tests" / "dist_stream_worker.py"),
            json.dumps(_stream_overrides(tmp_path / "pq", out, procs, 2 * per_epoch)),
            "all",
        ],
        tmp_path,
    )
    ranks = [json.loads((out / f"seen_rank{r}_all.json").read_text()) for r in range(procs)]
    epoch0 = [[i for e, _, batch, _ in seen if e == 0 for i in batch] for seen in ranks]
    assert sorted(i for part in epoch0 for i in part) == ids  # all, once
    assert [sum(e == 0 for e, *_ in seen) for seen in ranks] == [per_epoch] * procs
    assert all(len(seen) == 2 * per_epoch for seen in ranks)


def test_uneven_stream_stops_every_process_together(tmp_path):
    """5 files of one row group each on 2 processes: 3 shards against 2, 36 examples against 24.
    Both processes end epoch 0 after the shorter share (no hang), none trains on an example twice."""
    ids = _parquet_ids(tmp_path / "pq", [12] * 5, row_group_size=12)
    out = tmp_path / "run"
    launch(
        [
            "--num_processes",
            "2",
            str(ROOT / "tests" / "dist_stream_worker.py"),
            json.dumps(_stream_overrides(tmp_path / "pq", out, 2, 14)),
            "all",
        ],
        tmp_path,
    )
    ranks = [json.loads((out / f"seen_rank{r}_all.json").read_text()) for r in range(2)]
    assert [sum(e == 0 for e, *_ in seen) for seen in ranks] == [12, 12]  # 24 examples / per-process batch 2
    assert [sum(e == 1 for e, *_ in seen) for seen in ranks] == [2, 2]
    epoch0 = [i for seen in ranks for e, _, batch, _ in seen if e == 0 for i in batch]
    assert len(epoch0) == len(set(epoch0)) == 48 and set(epoch0) <= set(ids)


def test_streamed_epochs_with_loader_workers_in_two_processes(tmp_path):
    """Two processes with two DataLoader workers each (re-created every epoch, from each process's
    fork server: never forked from a process whose gloo threads run) read three epochs of a stream:
    every epoch is every example once, reshuffled, in the same steps on both processes."""
    ids = _parquet_ids(tmp_path / "pq", [8, 8], row_group_size=2)  # 8 shards for 2 × 2 readers
    out = tmp_path / "run"
    overrides = {**_stream_overrides(tmp_path / "pq", out, 2, 12), "num_workers": 2, "epochs": 3}
    launch([str(ROOT / "tests" / "dist_stream_worker.py"), json.dumps(overrides), "all"], tmp_path)
    ranks = [json.loads((out / f"seen_rank{r}_all.json").read_text()) for r in range(2)]
    orders = []
    for epoch in range(3):
        parts = [[i for e, _, batch, _ in seen if e == epoch for i in batch] for seen in ranks]
        assert sorted(parts[0] + parts[1]) == ids, epoch  # all, once
        assert [sum(e == epoch for e, *_ in seen) for seen in ranks] == [4, 4]
        orders.append(parts)
    assert orders[0] != orders[1] != orders[2]  # each epoch reshuffled
    state = json.loads((out / "checkpoints" / "step_00000012" / "trainer_state.json").read_text())
    assert len(state["stream_positions"]) == 4  # 2 processes × 2 workers read the stream


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in the TensorBoard event files under ``folder``, as a reader parses them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, list[tuple[int, float]]] = {}
    for events in folder.rglob("events.out.tfevents.*"):
        reader = EventAccumulator(str(events.parent))
        reader.Reload()
        for tag in reader.Tags()["scalars"]:
            series.setdefault(tag, []).extend((e.step, e.value) for e in reader.Scalars(tag))
    return series


def test_two_machines_on_localhost_train_and_log_to_tensorboard(tmp_path):
    """Two `accelerate launch` commands, one per "machine" (--num_machines 2, --machine_rank 0/1,
    one process each, gloo), rendezvous on localhost and train a few steps; the TensorBoard event
    files hold the loss, lr and kNN scalars."""
    port = str(free_port())
    out = tmp_path / "run"
    launch = [a for a in ACCELERATE if a not in ("--num_machines", "1")]
    procs = [
        subprocess.Popen(
            [
                *launch,
                "--num_machines",
                "2",
                "--machine_rank",
                str(r),
                "--main_process_ip",
                "127.0.0.1",
                "--main_process_port",
                port,
                "-m",
                "regioncl",
                "pretrain",
                "--optim.max_steps",
                "3",
                "--data.num_workers",
                "0",
                "--optim.batch_size",
                "8",
                "--method.queue_size",
                "32",
                "--data.image_size",
                "16",
                "--run.log_every",
                "1",
                "--run.output_dir",
                str(out),
                "--run.log_with",
                '["tensorboard"]',
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        )
        for r in (0, 1)
    ]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    state = json.loads((out / "checkpoints" / "step_00000003" / "trainer_state.json").read_text())
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= set(state["files"])  # one part per machine
    scalars = tensorboard_scalars(out)
    assert [step for step, _ in scalars["loss"]] == [1, 2, 3] and len(scalars["lr"]) == 3
    assert [step for step, _ in scalars["knn_top1"]] == [0, 3]  # before and after training
    losses = {r["step"]: r["loss"] for r in records if "loss" in r}
    assert all(value == pytest.approx(losses[step], rel=1e-6) for step, value in scalars["loss"])
