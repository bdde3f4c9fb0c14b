"""End-to-end fine-tuning of a pretrained encoder with a new classifier (RegionCL-M*, 50 epochs).

Built from timm's factories (optimizer, scheduler, mixup/cutmix, losses) on Accelerate, so
the same code runs on a CPU, one GPU or many, in any precision Accelerate is set to.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from accelerate import Accelerator
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn

from ..data.transforms import eval_transform
from ..data.workers import WorkerLoader
from ..distributed import default_workers, make_accelerator, progress_bar
from ..export.checkpoints import load_encoder
from .configs import FinetuneConfig
from .features import LabelledImages, create_timm_model, eval_image_size, topk_accuracy
from .linear import train_transform


def load_finetune_model(spec: str, num_classes: int) -> nn.Module:
    """A timm model with a fresh ``num_classes`` classifier on a pretrained encoder: a timm
    ``local-dir:``/``hf-hub:`` name, or anything :func:`regioncl.export.hub.export` accepts."""
    if spec.startswith(("local-dir:", "hf-hub:")):
        return create_timm_model(spec, num_classes)
    model = load_encoder(spec)[0]
    model.reset_classifier(num_classes)
    return model


def finetune(
    model: nn.Module,
    train_source: Any,
    val_source: Any,
    num_classes: int,
    cfg: FinetuneConfig,
    accelerator: Accelerator | None = None,
) -> dict[str, Any]:
    """Train ``model`` end to end; returns ``{"top1", "top5", "history"}`` (accuracies in [0, 1])."""
    acc = accelerator or make_accelerator()
    cfg = dataclasses.replace(cfg, image_size=eval_image_size(model, cfg.image_size))
    torch.manual_seed(cfg.seed)
    per_process = max(1, cfg.batch_size // acc.num_processes)
    mixing = cfg.mixup > 0 or cfg.cutmix > 0
    workers = default_workers(cfg.num_workers)
    # persistent: workers started once, not once an epoch (each start imports the main module)
    train_loader = WorkerLoader(
        LabelledImages(train_source, train_transform(cfg.image_size), substitute_bad=True),
        batch_size=per_process,
        shuffle=True,
        drop_last=mixing,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    optimizer = create_optimizer_v2(
        model,
        opt=cfg.opt,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        **({"momentum": cfg.momentum} if cfg.opt in ("sgd", "momentum") else {}),
    )
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.lr * 1e-3
    )
    mixup = (
        Mixup(
            mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing, num_classes=num_classes
        )
        if mixing
        else None
    )
    criterion = (
        SoftTargetCrossEntropy()
        if mixing
        else (LabelSmoothingCrossEntropy(cfg.label_smoothing) if cfg.label_smoothing > 0 else nn.CrossEntropyLoss())
    )
    model, optimizer, train_loader = acc.prepare(model, optimizer, train_loader)
    history = []
    bar = progress_bar(acc, range(cfg.epochs), desc="fine-tune", unit="epoch")
    for epoch in bar:
        model.train()
        total, seen = torch.zeros((), device=acc.device), 0
        for images, labels in train_loader:
            if mixup is not None:
                images, labels = mixup(images, labels)
            with acc.autocast():
                loss = criterion(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            acc.backward(loss)
            optimizer.step()
            total += loss.detach() * images.shape[0]
            seen += images.shape[0]
        scheduler.step(epoch + 1)
        history.append(float(total) / max(seen, 1))
        bar.set_postfix(loss=f"{history[-1]:.4f}", refresh=False)
    net = acc.unwrap_model(model).eval()  # no DDP collectives: the processes' validation shares may differ by a batch

    def predict(images: torch.Tensor) -> torch.Tensor:
        with acc.autocast():
            return net(images)

    top1, top5 = topk_accuracy(
        predict,
        val_source,
        eval_transform(cfg.image_size, crop_pct=cfg.crop_pct),
        acc.device,
        batch_size=per_process,
        num_workers=workers,
    )
    return {"top1": top1, "top5": top5, "history": history}
