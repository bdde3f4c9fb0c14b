"""Mask pooling (SPEC §2): average a feature map over the cells of a mask.

Example:
    >>> f = torch.randn(2, 8, 4, 4)
    >>> torch.allclose(mask_pool(f, torch.ones(4, 4)), f.mean((2, 3)), atol=1e-6)
    True
"""

from __future__ import annotations

import torch

from .swapping import Box


def mask_pool(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Average ``features`` over the cells where a mask is 1.

    Args:
        features: ``(B, C, G, G)`` feature map.
        masks: ``(G, G)`` for one mask, or ``(M, G, G)`` for M masks shared by the batch.

    Returns:
        ``(B, C)`` for one mask, or ``(M, B, C)``.
    """
    single = masks.ndim == 2
    masks = masks.to(features.dtype).reshape(-1, *masks.shape[-2:])
    area = masks.sum((1, 2))
    if bool((area <= 0).any()):
        raise ValueError("mask_pool got an empty mask: there is no cell to average over")
    pooled = torch.einsum("bchw,mhw->mbc", features, masks) / area[:, None, None]
    return pooled[0] if single else pooled


def paste_canvas_pool(features: torch.Tensor, box: Box) -> tuple[torch.Tensor, torch.Tensor]:
    """The paste feature (mean over the box cells) and canvas feature (mean over the rest).

    Args:
        features: ``(B, C, G, G)`` feature map of the composites.
        box: the pasted box on the same G × G grid.

    Returns:
        ``(paste, canvas)``, each ``(B, C)``.
    """
    if features.shape[-1] != box.grid or features.shape[-2] != box.grid:
        raise ValueError(f"feature map is {tuple(features.shape[-2:])} but the box is on a {box.grid}×{box.grid} grid")
    area = box.height * box.width
    if not 0 < area < box.grid * box.grid:
        raise ValueError(f"the box {box} leaves no paste or no canvas cell")
    # Sums by slicing: no mask tensor, no host synchronisation.
    paste_sum = features[:, :, box.cell_slices()[0], box.cell_slices()[1]].sum((2, 3))
    total = features.sum((2, 3))
    return paste_sum / area, (total - paste_sum) / (box.grid * box.grid - area)
