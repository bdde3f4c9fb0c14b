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
import torch.distributed as dist
from torch import nn

from ..distributed import world_size
from ..errors import UserError
from .features import encode_source


def check_k(k: int, bank_size: int, option: str) -> None:
    """Refuse a ``k`` larger than the bank (every image would vote: no neighbourhood left), naming
    the option that set it and a ``k`` that fits."""
    if k > bank_size:
        fits = max(1, min(20, bank_size // 3))
        raise UserError(
            f"{option} {k} is more than the bank's {bank_size} images: every image would vote; give "
            f"{option} {fits} or so, or a larger bank"
        )


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
    counts: dict[str, int] | None = None,
) -> float | None:
    """kNN top-1 (SPEC §10) of ``encoder`` with ``bank_source`` as the labelled bank, or
    ``None`` when either source has no labels. ``counts``, when given, receives the numbers of
    bank and query images scored (``bank``, ``val``): those that could be decoded (only ``bank``
    when it returns None).

    In a multi-process run every process must call it: each encodes its share of the images;
    the bank is gathered on every device (in half precision on a GPU, a quarter of the float32
    host copies it replaces), each process scores its own share of the queries against it, and
    the counts of correct answers are summed, so all get the same result.
    """
    kwargs = dict(batch_size=batch_size, num_workers=num_workers, channels_last=channels_last, on_device=True)
    half = torch.float16 if device.type == "cuda" else torch.float32
    bank, bank_labels = encode_source(encoder, bank_source, transform, device, gather=True, dtype=half, **kwargs)
    val, val_labels = encode_source(encoder, val_source, transform, device, gather=False, **kwargs)
    if counts is not None:
        counts["bank"] = len(bank_labels)
    # Whether any label is missing, and the largest query label, as every process sees them.
    facts = torch.tensor(
        [
            float((bank_labels < 0).any()),
            float((val_labels < 0).any()),
            float(val_labels.max()) if len(val_labels) else -1.0,
        ],
        device=device,
    )
    if world_size() > 1:
        dist.all_reduce(facts, op=dist.ReduceOp.MAX)
    if facts[0] > 0 or facts[1] > 0:
        return None
    num_classes = int(max(float(bank_labels.max()), float(facts[2]))) + 1
    pred = knn_predict(bank, bank_labels, val, k=k, temperature=temperature, num_classes=num_classes).argmax(1)
    scored = torch.tensor(
        [float((pred == val_labels).sum()), float(len(val_labels))], dtype=torch.float64, device=device
    )
    if world_size() > 1:
        dist.all_reduce(scored)
    if counts is not None:
        counts["val"] = int(scored[1])
    return float(scored[0] / scored[1])


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
        bank: ``(N, C)`` L2-normalised features of labelled images (any float dtype; the
            queries are scored in it, the votes in float32).
        bank_labels: ``(N,)`` int labels.
        queries: ``(M, C)`` L2-normalised features.
    """
    num_classes = int(bank_labels.max()) + 1 if num_classes is None else num_classes
    k = min(k, bank.shape[0])
    scores = [torch.zeros(0, num_classes, device=bank.device)]  # a process may hold no query
    for start in range(0, queries.shape[0], chunk_size):
        sim = queries[start : start + chunk_size].to(bank.dtype) @ bank.t()
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim.float() / temperature).exp()
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
