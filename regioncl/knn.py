"""Weighted kNN classification on frozen features (SPEC §10, the InstDisc protocol).

Example:
    >>> bank = torch.nn.functional.normalize(torch.eye(4).repeat(5, 1), dim=1)
    >>> labels = torch.arange(4).repeat(5)
    >>> float(knn_top1(bank, labels, bank[:4], labels[:4], k=5, temperature=0.07))
    1.0
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .distributed import concat_all_gather, rank, world_size


class LabelledImages(Dataset):
    """``(transform(image), label)`` pairs of a source, for feature extraction."""

    def __init__(self, source: Any, transform: Any) -> None:
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.source[index]
        return self.transform(image), label


def feature_map(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``(B, C, G, G)`` from a regioncl :class:`~regioncl.backbones.Encoder` or any timm model."""
    forward_features = getattr(encoder, "forward_features", None)
    return forward_features(images) if forward_features is not None else encoder(images)


def load_eval_encoder(spec: str) -> nn.Module:
    """A frozen encoder to evaluate: a timm ``local-dir:``/``hf-hub:`` name, or anything
    :func:`regioncl.hub.export` accepts (a run folder, a checkpoint folder, a weights file)."""
    if spec.startswith(("local-dir:", "hf-hub:")):
        import timm

        return timm.create_model(spec, pretrained=True, num_classes=0)
    from .hub import load_encoder

    return load_encoder(spec)[0]


def knn_evaluate(
    encoder: nn.Module,
    bank_source: Any,
    val_source: Any,
    transform: Any,
    device: torch.device,
    *,
    k: int = 200,
    temperature: float = 0.07,
    batch_size: int = 256,
    num_workers: int = 0,
    channels_last: bool = False,
) -> float | None:
    """kNN top-1 (SPEC §10) of ``encoder`` with ``bank_source`` as the labelled bank, or
    ``None`` when either source has no labels.

    In a multi-process run every process must call it: each encodes its share of the images
    and all get the same result.
    """
    feats = []
    world, me = world_size(), rank()
    for source in (bank_source, val_source):
        images = LabelledImages(source, transform)
        # Each process encodes every world-th image; the features are then gathered on all of them.
        mine = Subset(images, range(me, len(images), world)) if world > 1 else images
        loader = DataLoader(mine, batch_size=batch_size, num_workers=num_workers)
        x, y = extract_features(encoder, loader, device, channels_last)
        feats.append((gather_rows(x, device), gather_rows(y, device)))
    (bank, bank_labels), (val, val_labels) = feats
    if bool((bank_labels < 0).any()) or bool((val_labels < 0).any()):
        return None
    return float(knn_top1(bank, bank_labels, val, val_labels, k=k, temperature=temperature))


@torch.no_grad()
def extract_features(
    encoder: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device, channels_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised, globally pooled backbone features ``(N, C)`` and labels ``(N,)`` (on CPU).

    The encoder is put in eval mode for the pass and restored afterwards.
    """
    was_training = encoder.training
    encoder.eval()
    feats, labels = [], []
    try:
        for images, target in batches:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            fmap = feature_map(encoder, images)
            feats.append(F.normalize(fmap.float().mean((2, 3)), dim=1).cpu())
            labels.append(target.cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def gather_rows(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Concatenate ``t`` ``(N_r, ...)`` from every process (N_r may differ), on the CPU."""
    if world_size() == 1:
        return t
    local = t.to(device)
    sizes = concat_all_gather(torch.tensor([t.shape[0]], device=device)).tolist()
    padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=device)
    padded[: t.shape[0]] = local
    parts = concat_all_gather(padded).view(len(sizes), max(sizes), *t.shape[1:])
    return torch.cat([parts[i, :n] for i, n in enumerate(sizes)]).cpu()


@torch.no_grad()
def knn_predict(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    k: int = 200,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores ``(M, num_classes)`` of each query by cosine-weighted votes of its k nearest.

    Votes are ``exp(sim / temperature)``; queries are processed in chunks so memory
    stays ``O(chunk_size × N)``.

    Args:
        bank: ``(N, C)`` L2-normalised features of labelled images.
        bank_labels: ``(N,)`` int labels.
        queries: ``(M, C)`` L2-normalised features.
    """
    num_classes = int(bank_labels.max()) + 1 if num_classes is None else num_classes
    k = min(k, bank.shape[0])
    scores = []
    for start in range(0, queries.shape[0], chunk_size):
        sim = queries[start : start + chunk_size] @ bank.t()
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        scores.append(votes)
    return torch.cat(scores)


def knn_top1(
    bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, query_labels: torch.Tensor, **kwargs
) -> torch.Tensor:
    """Top-1 accuracy (a 0-dim tensor in [0, 1]) of :func:`knn_predict`."""
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    pred = knn_predict(bank, bank_labels, queries, num_classes=num_classes, **kwargs).argmax(1)
    return (pred == query_labels).float().mean()
