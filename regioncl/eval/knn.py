"""Weighted kNN classification on frozen features (SPEC §10, the InstDisc protocol).

Example:
    >>> bank = torch.nn.functional.normalize(torch.eye(4).repeat(5, 1), dim=1)
    >>> labels = torch.arange(4).repeat(5)
    >>> float(knn_top1(bank, labels, bank[:4], labels[:4], k=5, temperature=0.07))
    1.0
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .features import encode_source


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
    kwargs = dict(batch_size=batch_size, num_workers=num_workers, channels_last=channels_last, gather=True)
    bank, bank_labels = encode_source(encoder, bank_source, transform, device, **kwargs)
    val, val_labels = encode_source(encoder, val_source, transform, device, **kwargs)
    if bool((bank_labels < 0).any()) or bool((val_labels < 0).any()):
        return None
    return float(knn_top1(bank, bank_labels, val, val_labels, k=k, temperature=temperature))


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
