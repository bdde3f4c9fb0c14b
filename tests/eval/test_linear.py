import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from regioncl.backbones import create_encoder
from regioncl.data import build_source
from regioncl.eval.linear import LARS, ProbeConfig, linear_probe

ROOT = Path(__file__).resolve().parents[2]


def sources(root: Path):
    return build_source(str(root / "train")), build_source(str(root / "val"))


@pytest.mark.parametrize(
    "augment,optimizer,standardize",
    [(True, "sgd", False), (False, "sgd", False), (False, "lars", False), (True, "sgd", True)],
)
@pytest.mark.slow
def test_probe_learns_a_separable_set_and_leaves_the_backbone_untouched(
    separable_folder, augment, optimizer, standardize
):
    train, val = sources(separable_folder)
    torch.manual_seed(0)
    encoder = create_encoder("resnet18", output_stride=8).train()  # left in train mode on purpose
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    # LARS moves the 0.01-scale initial weights by lr · 0.001 of their norm per step: more steps than SGD.
    lars = optimizer == "lars"
    cfg = ProbeConfig(
        epochs=40 if lars else 15,
        lr=2.0 if lars else 1.0,
        batch_size=8,
        milestones=[30 if lars else 10],
        augment=augment,
        image_size=16,
        crop_pct=1.0,
        optimizer=optimizer,
        standardize=standardize,
    )
    result = linear_probe(encoder, train, val, 2, cfg)
    assert result["top1"] >= 0.9 and result["top5"] is None  # two classes: no top-5
    assert result["history"][-1] < result["history"][0]
    after = encoder.state_dict()
    # Weights and BN running statistics (and the batch counters) are exactly as before.
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_lars_scales_the_update_by_the_trust_ratio():
    w = torch.nn.Parameter(torch.full((2, 2), 3.0))
    w.grad = torch.full((2, 2), 4.0)
    LARS([w], lr=1.0, momentum=0.0, trust=0.5).step()
    # ‖w‖ = 6, ‖g‖ = 8: the step is lr · 0.5 · 6 / 8 · g = 1.5 per entry.
    assert torch.allclose(w, torch.full((2, 2), 1.5))


@pytest.mark.slow
def test_script_accepts_a_checkpoint_and_a_local_dir(tmp_path, separable_folder):
    from regioncl.export.hub import export
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
    export(tmp_path / "run", tmp_path / "export")
    results = []
    for spec in (str(tmp_path / "run"), f"local-dir:{tmp_path / 'export'}"):
        proc = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "linear_probe.py"),
                spec,
                "--train_data",
                str(separable_folder / "train"),
                "--val_data",
                str(separable_folder / "val"),
                "--image_size",
                "16",
                "--crop_pct",
                "1.0",
                "--epochs",
                "5",
                "--lr",
                "1.0",
                "--batch_size",
                "8",
                "--augment",
                "false",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert results[0]["top1"] == results[1]["top1"] >= 0.9
