"""The evaluations' settings, apart from their code: the command line reads them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ProbeConfig:
    """The linear probe on frozen, pooled features.

    MoCo's protocol by default: SGD lr 30, momentum 0.9, no weight decay, 100 epochs, lr × 0.1 at
    60 % and 80 % of them, batch 256, RandomResizedCrop + flip for training."""

    epochs: int = 100
    lr: float = 30.0
    """for the global batch"""
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 256
    """global: split over the processes"""
    milestones: list[int] | None = None
    """epochs where the lr drops ×0.1 (step schedule); null: at 60 % and 80 % of the epochs (MoCo's 60 and 80 of 100)"""
    schedule: str = "step"
    """step (MoCo) or cosine (SimSiam)"""
    optimizer: str = "sgd"
    """sgd, or lars (SimSiam: lr 0.02 × batch / 256, batch 4096, cosine, 90 epochs)"""
    augment: bool = True
    """RandomResizedCrop + flip; false caches the features once"""
    standardize: bool = False
    """standardise the features first (BatchNorm without affine, as MAE's probe): one lr then fits
    encoders whose features differ in scale; off in MoCo's protocol"""
    image_size: int | None = None
    """input size; null: the size the encoder was trained at (its run's or its export's), else 224"""
    crop_pct: float = 0.875
    """evaluation crop: the shorter side is resized to image_size / crop_pct, then centre-cropped"""
    num_workers: int | None = None
    """DataLoader workers per process; null: one core short of all, at most 8"""
    seed: int = 0

    def lr_milestones(self) -> list[int]:
        """The epochs where the step schedule drops the lr."""
        if self.milestones is not None:
            return list(self.milestones)
        return [round(0.6 * self.epochs), round(0.8 * self.epochs)]


@dataclass
class FinetuneConfig:
    """End-to-end fine-tuning with a new classifier (timm's optimizers, schedulers, mixup and cutmix)."""

    epochs: int = 50
    batch_size: int = 256
    """global: split over the processes"""
    opt: str = "sgd"
    """any timm optimizer name (sgd, adamw, lamb...)"""
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    sched: str = "cosine"
    """any timm scheduler name"""
    warmup_epochs: int = 5
    mixup: float = 0.0
    """mixup alpha (0: off)"""
    cutmix: float = 0.0
    """cutmix alpha (0: off)"""
    label_smoothing: float = 0.1
    image_size: int | None = None
    """input size; null: the size the encoder was trained at (its run's or its export's), else 224"""
    crop_pct: float = 0.875
    num_workers: int | None = None
    """DataLoader workers per process; null: one core short of all, at most 8"""
    seed: int = 0
