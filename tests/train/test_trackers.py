"""Accelerate's trackers receive the metrics: TensorBoard always in the tests, W&B offline where installed."""

import pytest

from regioncl.train.config import make_config
from regioncl.train.trainer import Trainer

TINY = {
    "model.backbone": "resnet10t",
    "data.image_size": 16,
    "optim.batch_size": 8,
    "method.queue_size": 32,
    "data.num_workers": 0,
    "run.log_every": 1,
    "optim.max_steps": 2,
}


@pytest.mark.slow
def test_tensorboard_event_files_hold_loss_lr_and_knn(tmp_path):
    from test_distributed import tensorboard_scalars

    Trainer(
        make_config(overrides={**TINY, "run.output_dir": str(tmp_path / "r"), "run.log_with": ["tensorboard"]})
    ).train()
    scalars = tensorboard_scalars(tmp_path / "r")
    assert {"loss", "loss_ins", "loss_reg", "lr", "knn_top1"} <= set(scalars)
    assert [s for s, _ in scalars["loss"]] == [1, 2] and [s for s, _ in scalars["knn_top1"]] == [0, 2]


def test_wandb_offline_receives_the_metrics(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install wandb to test its tracker)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    Trainer(make_config(overrides={**TINY, "run.output_dir": str(tmp_path / "r"), "run.log_with": ["wandb"]})).train()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and any(f.suffix == ".wandb" for f in runs[0].iterdir())
