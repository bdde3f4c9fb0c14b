"""What every self-supervised method shares: the online encoder and the RegionCL hook."""

from __future__ import annotations

import torch
from torch import nn

from ..backbones import Encoder
from ..distributed import rank
from ..region import RegionCL, RegionFeatures
from ..rng import generator


class SSLMethod(nn.Module):
    """Base class of the pretraining methods.

    Subclasses build their heads and implement ``forward(view_q, view_k, step) -> dict``
    returning at least ``loss`` (and ``loss_ins``, ``loss_reg`` where they apply).

    Args:
        encoder: the online backbone; ``encoder.model`` is what gets published.
        region: the RegionCL mechanism, or ``None`` for the plain base method.
        seed: the run seed; the box, π and the key shuffle of step t are drawn from
            generators seeded with (seed, t), so a resumed run repeats them exactly.
    """

    def __init__(self, encoder: Encoder, region: RegionCL | None = None, seed: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.region = region
        self.seed = seed

    def step_generator(self, step: int, stream: str, per_process: bool = True) -> torch.Generator:
        """A CPU generator for one random stream of one step (``per_process=False``: same on every rank)."""
        return generator(self.seed, step, stream, rank() if per_process else -1)

    def check(self, image_size: int, batch_per_process: int) -> None:
        """Refuse an image size or batch this method cannot train on, before any compute."""
        grid = self.encoder.check_image_size(image_size)
        if self.region is not None:
            self.region.check(grid, batch_per_process)

    def online_pooled(self, view_q: torch.Tensor, step: int) -> tuple[torch.Tensor, RegionFeatures | None]:
        """Pooled online features: ``(B, C)`` instance rows, then canvas and paste rows with RegionCL.

        The instance view and the composite batch are two encoder calls (two BN batches);
        their pooled features are stacked ``[q; canvas; paste]`` so that one projector call
        serves all of them, as in the paper.
        """
        pooled = self.encoder(view_q).mean((2, 3))
        if self.region is None:
            return pooled, None
        region = self.region.features(self.encoder, view_q, self.step_generator(step, "swap"))
        return torch.cat([pooled, region.canvas, region.paste]), region
