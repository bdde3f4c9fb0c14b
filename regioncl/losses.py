"""Losses as pure functions of tensors.

Example:
    >>> q = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    >>> queue = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    >>> info_nce(q, q, queue, temperature=0.2).shape
    torch.Size([])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fp32(tensor: torch.Tensor) -> torch.autocast:
    """A region where autocast is off, so that ``.float()`` inputs stay fp32 through matmuls."""
    return torch.autocast(tensor.device.type, enabled=False)


def info_nce(
    query: torch.Tensor,
    positive: torch.Tensor,
    queue: torch.Tensor,
    temperature: float,
    extra_negatives: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """InfoNCE with a queue of negatives, the positive at logit index 0 (MoCo, Eq. 1).

    Computed in fp32 whatever the autocast dtype (autocast is switched off inside):
    logits of 65,536 negatives divided by a temperature of 0.2 lose too much in bf16.

    Args:
        query: ``(N, D)`` L2-normalised queries.
        positive: ``(N, D)`` L2-normalised positive key of each row.
        queue: ``(K, D)`` L2-normalised negatives shared by every row (no gradient flows into it).
        temperature: τ.
        extra_negatives: optional ``(N, D)`` one more negative per row (RegionCL's
            paste/canvas partner), placed right after the positive. Pass it detached
            for a stop-gradient negative.
        reduction: ``"mean"`` over the rows, or ``"none"``: each row's loss.

    Returns:
        The mean cross-entropy over the N rows, a scalar (``(N,)`` with ``reduction="none"``).
    """
    with fp32(query):
        query = query.float()
        logits = [torch.einsum("nd,nd->n", query, positive.float()).unsqueeze(1)]
        if extra_negatives is not None:
            logits.append(torch.einsum("nd,nd->n", query, extra_negatives.float()).unsqueeze(1))
        logits.append(query @ queue.float().t())
        logits = torch.cat(logits, dim=1) / temperature
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target, reduction=reduction)


def negative_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, sg(z)): the mean negative cosine similarity, no gradient into ``target``.

    Args:
        prediction: ``(N, D)`` predictor outputs (not normalised).
        target: ``(N, D)`` projector outputs (not normalised); detached here.

    Returns:
        A scalar in [−1, 1]; −1 when every prediction points along its target.
    """
    with fp32(prediction):
        return -F.cosine_similarity(prediction.float(), target.detach().float(), dim=1).mean()


def dense_correspondence(query_features: torch.Tensor, key_features: torch.Tensor) -> torch.Tensor:
    """DenseCL's matching: for each query cell, the key cell of highest cosine similarity.

    Args:
        query_features: ``(B, C, N)`` backbone features of the query view, N = G·G cells.
        key_features: ``(B, C, N)`` backbone features of the key view.

    Returns:
        ``(B, N)`` int64: entry ``[b, i]`` is the key cell matched to query cell i.
    """
    with fp32(query_features):
        q = F.normalize(query_features.float(), dim=1)
        k = F.normalize(key_features.float(), dim=1)
        return torch.einsum("bcn,bcm->bnm", q, k).argmax(dim=2)


def dense_info_nce(
    query_grid: torch.Tensor, key_grid: torch.Tensor, match: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    """DenseCL's dense loss: every query cell against its matched key cell and the dense queue.

    Args:
        query_grid: ``(B, D, N)`` L2-normalised (over D) dense query embeddings.
        key_grid: ``(B, D, N)`` L2-normalised dense key embeddings.
        match: ``(B, N)`` from :func:`dense_correspondence`.
        queue: ``(K, D)`` dense negatives.

    Returns:
        The mean over all B·N cells of :func:`info_nce`.
    """
    matched = torch.gather(key_grid, 2, match.unsqueeze(1).expand(-1, key_grid.shape[1], -1))
    rows = query_grid.permute(0, 2, 1).reshape(-1, query_grid.shape[1])
    positives = matched.permute(0, 2, 1).reshape(-1, matched.shape[1])
    return info_nce(rows, positives, queue, temperature)
