"""Linear probing of a frozen encoder (SPEC §10, MoCo's protocol by default; LARS for SimSiam's).

The backbone stays in eval mode with no gradient for the whole probe, so neither its
weights nor its BN statistics change; only a linear classifier on the pooled features
is trained. Without augmentation the features are computed once and cached.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from ..data.workers import WorkerLoader
from ..distributed import concat_all_gather, default_workers, make_accelerator, progress_bar
from ..errors import UserError
from ..rng import derive_seed
from .configs import ProbeConfig
from .features import LabelledImages, encode_source, eval_image_size, feature_map, topk_accuracy


class LARS(torch.optim.SGD):
    """SGD with layer-wise adaptive rate scaling (You et al.), as SimSiam's linear probe uses it.

    For each parameter with more than one dimension the update is scaled by
    ``trust · ‖w‖ / ‖∇w + wd·w‖``; biases are updated as plain SGD.
    """

    def __init__(self, params: Any, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, trust: float = 0.001):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.trust = trust

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or p.ndim <= 1:
                    continue
                grad = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                scale = torch.where((w_norm > 0) & (g_norm > 0), self.trust * w_norm / g_norm, torch.ones_like(w_norm))
                p.grad.mul_(scale)
        return super().step(closure)


class _Frozen(nn.Module):
    """The encoder, pooled, always in eval mode and without gradients."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return feature_map(self.encoder, x).float().mean((2, 3))


class _FeatureBatches:
    """Shuffled batches of cached features: ``num_samples`` a pass, drawn from fresh
    permutations (more than one when ``num_samples`` exceeds the rows); indexed in one
    gather per batch, not collated row by row."""

    def __init__(
        self, feats: torch.Tensor, labels: torch.Tensor, batch_size: int, num_samples: int, generator: torch.Generator
    ) -> None:
        self.feats, self.labels, self.batch_size, self.num_samples = feats, labels, batch_size, num_samples
        self.generator = generator

    def __iter__(self) -> Any:
        n = len(self.labels)
        order = torch.cat([torch.randperm(n, generator=self.generator) for _ in range(-(-self.num_samples // n))])
        for start in range(0, self.num_samples, self.batch_size):
            index = order[start : min(start + self.batch_size, self.num_samples)]
            yield self.feats[index], self.labels[index]


def train_transform(image_size: int) -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD)),
        ]
    )


def _lr(cfg: ProbeConfig, epoch: float) -> float:
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    return cfg.lr * 0.1 ** sum(epoch >= m for m in cfg.lr_milestones())


def linear_probe(
    encoder: nn.Module,
    train_source: Any,
    val_source: Any,
    num_classes: int,
    cfg: ProbeConfig,
    accelerator: Any = None,
) -> dict[str, Any]:
    """Train a linear classifier on the frozen, pooled features; returns top-1/top-5 on ``val_source``.

    Runs on Accelerate: in a multi-process launch ``cfg.batch_size`` is the global batch,
    split evenly over the processes, and the classifier is trained data-parallel. With
    ``augment`` each process draws its batches from Accelerate's sharded loader; without,
    each process caches the features of its own share of the training set (every
    world-th image, so no process holds them all) and shuffles them every epoch, the
    processes running the same number of steps. Undecodable images are left out of the
    cached features and of the validation count, and substituted in augmented training.

    Returns:
        ``{"top1", "top5", "epochs", "history", "head"}`` with accuracies in [0, 1], the per-epoch
        training loss (averaged over processes) in ``history`` and the classifier's state dict
        (on CPU) in ``head``.
    """
    acc = accelerator if accelerator is not None else make_accelerator()
    device, world = acc.device, acc.num_processes
    if cfg.batch_size % world:
        raise UserError(f"batch_size {cfg.batch_size} does not split evenly over {world} processes")
    per_process = cfg.batch_size // world
    cfg = dataclasses.replace(cfg, image_size=eval_image_size(encoder, cfg.image_size))
    torch.manual_seed(cfg.seed)
    backbone = _Frozen(encoder).to(device)
    val_tf = eval_transform(cfg.image_size, crop_pct=cfg.crop_pct)
    num_features = backbone(torch.zeros(1, 3, cfg.image_size, cfg.image_size, device=device)).shape[1]
    linear = nn.Linear(num_features, num_classes)
    nn.init.normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    head = (
        nn.Sequential(nn.BatchNorm1d(num_features, affine=False, eps=1e-6), linear) if cfg.standardize else linear
    ).to(device)
    opt_cls = LARS if cfg.optimizer == "lars" else torch.optim.SGD
    opt = opt_cls(head.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    head, opt = acc.prepare(head, opt)

    workers = default_workers(cfg.num_workers)
    if cfg.augment:
        # persistent: workers started once, not once an epoch (each start imports the main module)
        train_loader = acc.prepare(
            WorkerLoader(
                LabelledImages(train_source, train_transform(cfg.image_size), substitute_bad=True),
                shuffle=True,
                batch_size=per_process,
                num_workers=workers,
                persistent_workers=workers > 0,
                pin_memory=device.type == "cuda",
            )
        )
    else:  # the features never change: compute this process's share once
        feats, labels = encode_source(
            backbone.encoder,
            train_source,
            val_tf,
            device,
            batch_size=per_process,
            num_workers=workers,
            normalize=False,
            gather=False,
        )
        # Shares differ by an image or two: each process draws as many samples as the largest
        # share (a smaller one repeats a few), so all run the same steps; one process: a plain shuffle.
        largest = int(concat_all_gather(torch.tensor([len(labels)], device=device)).max())
        train_loader = _FeatureBatches(
            feats, labels, per_process, largest, torch.Generator().manual_seed(derive_seed(cfg.seed, acc.process_index))
        )
    history = []
    head.train()
    bar = progress_bar(acc, range(cfg.epochs), desc="linear probe", unit="epoch")
    for epoch in bar:
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, epoch)
        total, seen = torch.zeros((), device=device), 0  # summed on the device: one host sync per epoch
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            if cfg.augment:
                with acc.autocast():
                    x = backbone(x)
            loss = F.cross_entropy(head(x.float()), y)
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt.step()
            total += loss.detach() * len(y)
            seen += len(y)
        sums = torch.stack([total, torch.tensor(float(seen), device=device)])
        sums = acc.reduce(sums, reduction="sum") if world > 1 else sums
        history.append(float(sums[0] / sums[1].clamp(min=1)))
        bar.set_postfix(loss=f"{history[-1]:.4f}", refresh=False)
    classifier = acc.unwrap_model(head).eval()

    def predict(images: torch.Tensor) -> torch.Tensor:
        with acc.autocast():
            return classifier(backbone(images).float())

    top1, top5 = topk_accuracy(predict, val_source, val_tf, device, batch_size=per_process, num_workers=workers)
    head_state = {k: v.detach().cpu() for k, v in classifier.state_dict().items()}
    return {"top1": top1, "top5": top5, "epochs": cfg.epochs, "history": history, "head": head_state}
