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
    """

    paste: torch.Tensor
    canvas: torch.Tensor
    perm: torch.Tensor
    box: Box


class RegionCL:
    """Region swapping + mask pooling + the region loss (SPEC §1–3).

    Args:
        region_cells: inclusive box side range ``[lo, hi]`` in feature cells; ``None``
            scales the authors' 3–5 cells of a 7×7 grid.
        pairing: ``"derangement"`` (default) or the authors' ``"reverse"``.
        swap: ``False`` for the no-swapping ablation (SPEC §7): the paste region on a zero
            image and the canvas with the region zeroed are encoded separately.
    """

    def __init__(
        self,
        region_cells: tuple[int, int] | list[int] | None = None,
        pairing: Pairing = "derangement",
        swap: bool = True,
    ) -> None:
        if pairing not in PAIRINGS:
            raise UserError(f"unknown pairing {pairing!r}; expected one of {PAIRINGS}")
        self.region_cells = None if region_cells is None else tuple(int(v) for v in region_cells)
        self.pairing = pairing
        self.swap = swap

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
            return RegionFeatures(paste, canvas, swap.perm, swap.box)
        views = noswap_views(*args)
        paste, _ = paste_canvas_pool(encoder(views.paste), views.box)
        _, canvas = paste_canvas_pool(encoder(views.canvas), views.box)
        return RegionFeatures(paste, canvas, views.perm, views.box)

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
        pair_loss: PairLoss, canvas: torch.Tensor, paste: torch.Tensor, targets: torch.Tensor, perm: torch.Tensor
    ) -> torch.Tensor:
        """L_reg over the 2B canvas and paste rows (:meth:`rows`), averaged together.

        Args:
            pair_loss: the base method's loss ``(rows, positives, extra_negatives) → scalar``
                (mean over rows); a method without negatives ignores the third argument.
            canvas, paste, targets, perm: as for :meth:`rows`.
        """
        return pair_loss(*RegionCL.rows(canvas, paste, targets, perm))
