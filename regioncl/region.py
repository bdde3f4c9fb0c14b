"""RegionCL: the one mechanism that every base method composes with.

A base method (MoCo v2 here; DenseCL and SimSiam reuse it) asks the mechanism for
the paste and canvas features of a composite batch, projects them together with
its instance features, and hands its own pairwise loss to :meth:`RegionCL.loss`,
which arranges the 2B region rows (SPEC §3):

* canvas row i: positive = target of image i,     extra negative = sg(paste_i);
* paste row i:  positive = target of image π(i),  extra negative = sg(canvas_i).

Example:
    >>> from regioncl.backbones import create_encoder
    >>> enc = create_encoder("resnet18", output_stride=16)
    >>> region = RegionCL()
    >>> feats = region.features(enc, torch.randn(4, 3, 64, 64), torch.Generator().manual_seed(0))
    >>> feats.paste.shape, feats.canvas.shape
    (torch.Size([4, 512]), torch.Size([4, 512]))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .backbones import Encoder
from .errors import UserError
from .pooling import paste_canvas_pool
from .swapping import PAIRINGS, Box, Pairing, noswap_views, pairing_permutation, region_swap, sample_box

PairLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class RegionFeatures:
    """Mask-pooled backbone features of a composite batch.

    Attributes:
        paste: ``(B, C)`` mean over the box cells of composite i (content of image π(i)).
        canvas: ``(B, C)`` mean over the other cells of composite i (content of image i).
        perm: π, ``(B,)`` int64.
        box: the box, in cells.
        keep: ``(2B,)`` bool, the region rows (canvas rows, then paste rows) that enter the loss;
            ``None``: all of them.
    """

    paste: torch.Tensor
    canvas: torch.Tensor
    perm: torch.Tensor
    box: Box
    keep: torch.Tensor | None = None


class RegionCL:
    """Region swapping + mask pooling + the region loss (SPEC §1–3).

    Args:
        region_cells: inclusive box side range ``[lo, hi]`` in feature cells; ``None``
            scales the authors' 3–5 cells of a 7×7 grid.
        pairing: ``"derangement"`` (default) or the authors' ``"reverse"``.
        swap: ``False`` for the no-swapping ablation (SPEC §7): the paste region on a zero
            image and the canvas with the region zeroed are encoded separately.
        min_content: leave out of the loss the rows whose pixels hold content (:func:`row_content`)
            in less than this share; 0 keeps every row, as the paper does.
    """

    def __init__(
        self,
        region_cells: tuple[int, int] | list[int] | None = None,
        pairing: Pairing = "derangement",
        swap: bool = True,
        min_content: float = 0.0,
    ) -> None:
        if pairing not in PAIRINGS:
            raise UserError(f"unknown pairing {pairing!r}; expected one of {PAIRINGS}")
        if not 0.0 <= min_content < 1.0:
            raise UserError(f"method.region_min_content must be in [0, 1), got {min_content}")
        self.region_cells = None if region_cells is None else tuple(int(v) for v in region_cells)
        self.pairing = pairing
        self.swap = swap
        self.min_content = float(min_content)

    def check(self, grid: int, batch_per_process: int) -> None:
        """Refuse, before any compute, a grid or batch that region swapping cannot use: the
        draws every step makes are made once here, so their own checks speak now."""
        throwaway = torch.Generator().manual_seed(0)
        sample_box(grid, self.region_cells, throwaway)
        pairing_permutation(batch_per_process, self.pairing, throwaway)

    def features(self, encoder: Encoder, images: torch.Tensor, generator: torch.Generator) -> RegionFeatures:
        """Paste and canvas features of ``images`` ``(B, 3, S, S)``.

        With swapping, the composites are encoded in one call (their own BN batch) and both
        regions are mask-pooled from the same map. Without, the paste views and the canvas
        views are two encoder calls, each pooled on its own cells.
        """
        args = (images, encoder.stride, self.region_cells, self.pairing, generator)
        if self.swap:
            swap = region_swap(*args)
            paste, canvas = paste_canvas_pool(encoder(swap.composite), swap.box)
            box, perm = swap.box, swap.perm
        else:
            views = noswap_views(*args)
            paste, _ = paste_canvas_pool(encoder(views.paste), views.box)
            _, canvas = paste_canvas_pool(encoder(views.canvas), views.box)
            box, perm = views.box, views.perm
        keep = None
        if self.min_content > 0:
            keep = row_content(images, box.pixel_slices(encoder.stride), perm) >= self.min_content
        return RegionFeatures(paste, canvas, perm, box, keep)

    @staticmethod
    def rows(
        canvas: torch.Tensor, paste: torch.Tensor, targets: torch.Tensor, perm: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The 2B region rows ``[canvas; paste]``, each row's positive and its partner (SPEC §3).

        Args:
            canvas: ``(B, D)`` projected canvas embeddings (gradient flows).
            paste: ``(B, D)`` projected paste embeddings (gradient flows).
            targets: ``(B, D)`` the instance targets of the *original* images (MoCo's keys k).
            perm: π; composite i's paste came from image π(i).
        """
        rows = torch.cat([canvas, paste])
        positives = torch.cat([targets, targets[perm]])
        # The partner region of the same composite is a hard negative, with a stop-gradient.
        partners = torch.cat([paste, canvas]).detach()
        return rows, positives, partners

    @staticmethod
    def loss(
        pair_loss: PairLoss,
        canvas: torch.Tensor,
        paste: torch.Tensor,
        targets: torch.Tensor,
        perm: torch.Tensor,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """L_reg over the 2B canvas and paste rows (:meth:`rows`), averaged together.

        Args:
            pair_loss: the base method's loss ``(rows, positives, extra_negatives) → scalar``
                (mean over rows); a method without negatives ignores the third argument.
            canvas, paste, targets, perm: as for :meth:`rows`.
            keep: ``(2B,)`` bool, the rows to average over (:attr:`RegionFeatures.keep`); with
                none kept the loss is 0, with a gradient of zeros.
        """
        rows, positives, partners = RegionCL.rows(canvas, paste, targets, perm)
        if keep is None:
            return pair_loss(rows, positives, partners)
        keep = keep.to(rows.device)
        if not bool(keep.any()):
            return rows.sum() * 0.0
        return pair_loss(rows[keep], positives[keep], partners[keep])


#: a pixel holds content when it differs from its image's background by more than this share of
#: the image's range ...
CONTENT_RELATIVE = 0.1
#: ... and by more than this (in the units of the normalised view), so that a flat image has none
CONTENT_FLOOR = 0.1


def content_mask(images: torch.Tensor) -> torch.Tensor:
    """``(B, S, S)`` bool: the pixels of ``images`` ``(B, C, S, S)`` that differ from their image's
    background, read as the median of its border pixels (per channel). Right for objects on a plain
    background; a view that lies inside an object reads its texture as content."""
    x = images.detach().float()
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1)
    background = border.median(dim=-1).values[..., None, None]
    distance = (x - background).abs().amax(dim=1)
    span = x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))
    threshold = torch.clamp(CONTENT_RELATIVE * span, min=CONTENT_FLOOR)
    return distance > threshold[:, None, None]


def row_content(images: torch.Tensor, box_slices: tuple[slice, slice], perm: torch.Tensor) -> torch.Tensor:
    """``(2B,)``: the share of content pixels (:func:`content_mask`) of each region row, in the
    order of :meth:`RegionCL.rows`: canvas row i, image i outside the box; paste row i, image π(i)
    inside it."""
    mask = content_mask(images)
    inside = torch.zeros(mask.shape[1:], dtype=torch.bool, device=mask.device)
    inside[box_slices] = True
    canvas = mask[:, ~inside].float().mean(dim=1)
    paste = mask[perm.to(mask.device)][:, inside].float().mean(dim=1)
    return torch.cat([canvas, paste])
