"""What a GPU run would hit, checked where a CPU can show it: mixed precision around the device
augmentation, SyncBN on timm's fused norm-activation layers, host-device synchronisations."""

import copy
import math

import pytest
import torch

from benchmarks.gpu_check import HostReads
from regioncl.backbones import create_encoder
from regioncl.data.views import BatchedMoCoV2, sample_params
from regioncl.train.config import make_config
from regioncl.train.trainer import Trainer, synchronised_batch_norm

TINY = {
    "model.backbone": "resnet10t",
    "data.image_size": 16,
    "optim.batch_size": 8,
    "method.queue_size": 32,
    "method.proj_hidden_dim": 32,
    "method.proj_dim": 16,
    "data.num_workers": 0,
    "knn.enabled": False,
    "run.log_every": 1000,
    "run.checkpoint_every": 1000,
}


def test_device_augmentation_under_bf16_autocast_trains_and_makes_the_fp32_views(tmp_path, fresh_accelerator_state):
    from accelerate import Accelerator

    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    params = sample_params(16, torch.Generator().manual_seed(0))
    augment = BatchedMoCoV2(32)
    plain = augment.apply(images, params)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what accelerate.autocast() opens around a step
        mixed = augment.apply(images, params)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, plain)
    cfg = make_config(
        overrides={
            **TINY,
            "optim.max_steps": 4,
            "data.gpu_augment": True,
            "run.log_every": 1,
            "run.output_dir": str(tmp_path / "r"),
        }
    )
    trainer = Trainer(cfg, Accelerator(cpu=True, mixed_precision="bf16"))
    trainer.train()
    losses = [
        r["loss"]
        for r in map(__import__("json").loads, (tmp_path / "r" / "metrics.jsonl").read_text().splitlines())
        if "loss" in r
    ]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)


def test_sync_batch_norm_keeps_timm_norm_activation_layers():
    """efficientnet_b0's BatchNormAct2d: the same outputs (eval mode) before and after the
    conversion the trainer makes; torch's own conversion drops the activations."""
    encoder = create_encoder("efficientnet_b0").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = encoder(x)
        after = synchronised_batch_norm(copy.deepcopy(encoder)).eval()(x)
        torch_s = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(encoder)).eval()(x)
    assert torch.allclose(after, before, atol=1e-6)
    assert not torch.allclose(torch_s, before, atol=1e-2)  # the defect this guards against


@pytest.mark.parametrize("gpu_augment", [False, True])
@pytest.mark.parametrize("method", ["regioncl_m", "regioncl_d", "regioncl_s"])
@pytest.mark.slow
def test_a_training_step_reads_nothing_back_from_the_device(tmp_path, method, gpu_augment):
    """Between logging steps, a step (views to the device, augmentation, forward, backward,
    optimizer, metric sums) makes no host read: pinned at 0."""
    cfg = make_config(
        overrides={
            **TINY,
            "model.method": method,
            "method.pred_dim": 8,
            "optim.max_steps": 3,
            "data.gpu_augment": gpu_augment,
            "run.output_dir": str(tmp_path / "r"),
        }
    )
    trainer = Trainer(cfg)
    counter = HostReads()
    real = trainer.train_step

    def counted(batch, lr):
        with counter:
            real(batch, lr)

    trainer.train_step = counted
    trainer.train()
    assert counter.reads == []
