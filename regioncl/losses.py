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


def info_nce(
    query: torch.Tensor,
    positive: torch.Tensor,
    queue: torch.Tensor,
    temperature: float,
    extra_negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE with a queue of negatives, the positive at logit index 0 (MoCo, Eq. 1).

    Computed in fp32 whatever the autocast dtype: logits of 65,536 negatives divided by
    a temperature of 0.2 lose too much in bf16.

    Args:
        query: ``(N, D)`` L2-normalised queries.
        positive: ``(N, D)`` L2-normalised positive key of each row.
        queue: ``(K, D)`` L2-normalised negatives shared by every row (no gradient flows into it).
        temperature: τ.
        extra_negatives: optional ``(N, D)`` one more negative per row (RegionCL's
            paste/canvas partner), placed right after the positive. Pass it detached
            for a stop-gradient negative.

    Returns:
        The mean cross-entropy over the N rows, a scalar.
    """
    query = query.float()
    logits = [torch.einsum("nd,nd->n", query, positive.float()).unsqueeze(1)]
    if extra_negatives is not None:
        logits.append(torch.einsum("nd,nd->n", query, extra_negatives.float()).unsqueeze(1))
    logits.append(query @ queue.float().t())
    logits = torch.cat(logits, dim=1) / temperature
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)
