import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from regioncl.data import build_source
from regioncl.eval.finetune import FinetuneConfig, finetune, load_finetune_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkpoint(tmp_path):
    from regioncl.train.config import make_config
    from regioncl.train.trainer import Trainer

    Trainer(
        make_config(
            overrides=dict(
                backbone="resnet18",
                backbone_args={"output_stride": 8},
                image_size=16,
                batch_size=8,
                queue_size=32,
                proj_hidden_dim=32,
                proj_dim=16,
                num_workers=0,
                knn=False,
                max_steps=1,
                output_dir=str(tmp_path / "run"),
            )
        )
    ).train()
    return tmp_path / "run"


@pytest.mark.parametrize("mix", [0.0, 0.8])
@pytest.mark.slow
def test_finetune_trains_end_to_end(separable_folder, checkpoint, mix):
    train, val = (build_source(str(separable_folder / split)) for split in ("train", "val"))
    model = load_finetune_model(str(checkpoint), 2)
    assert model.num_classes == 2
    before = model.conv1.weight.detach().clone()
    cfg = FinetuneConfig(
        epochs=6,
        batch_size=8,
        lr=0.05,
        warmup_epochs=1,
        image_size=16,
        crop_pct=1.0,
        mixup=mix,
        cutmix=mix,
        label_smoothing=0.1,
    )
    result = finetune(model, train, val, 2, cfg)
    assert all(torch.isfinite(torch.tensor(result["history"])))
    assert not torch.equal(model.conv1.weight.detach(), before)  # the backbone is trained too
    if mix == 0.0:
        assert result["top1"] >= 0.9


@pytest.mark.slow
def test_finetune_script_accepts_a_local_dir(tmp_path, checkpoint, separable_folder):
    from regioncl.export.hub import export

    export(checkpoint, tmp_path / "export")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "finetune.py"),
            f"local-dir:{tmp_path / 'export'}",
            "--train_data",
            str(separable_folder / "train"),
            "--val_data",
            str(separable_folder / "val"),
            "--image_size",
            "16",
            "--crop_pct",
            "1.0",
            "--epochs",
            "3",
            "--batch_size",
            "8",
            "--lr",
            "0.05",
            "--warmup_epochs",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0.0 <= out["top1"] <= 1.0 and out["epochs"] == 3
