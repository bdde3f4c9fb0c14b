"""What every self-supervised method shares: the online encoder and the RegionCL hook."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..backbones import Encoder
from ..distributed import rank
from ..region import RegionCL, RegionFeatures
from ..rng import generator


class SSLMethod(nn.Module):
    """Base class of the pretraining methods.

    Subclasses build their heads and implement ``forward(view_q, view_k, step) -> dict``
    returning ``loss`` (what to backpropagate) and the terms it is made of (``loss_ins``,
    ``loss_reg``, ...); every entry is logged.

    Args:
        encoder: the online backbone; ``encoder.model`` is what gets published.
        region: the RegionCL mechanism, or ``None`` for the plain base method.
        region_weight: the weight of L_reg in the total loss (1 unless the method passes its own
            default, as DenseCL does).
        seed: the run seed; the box, π and the key shuffle of step t are drawn from
            generators seeded with (seed, t), so a resumed run repeats them exactly.
    """

    #: Whether the method wants its BN synchronised across processes (SimSiam).
    sync_batch_norm: bool = False

    def __init__(
        self, encoder: Encoder, region: RegionCL | None = None, seed: int = 0, region_weight: float = 1.0
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.region = region
        self.seed = seed
        self.region_weight = float(region_weight)
        # Steps over which the region weight ramps up from 0 (method.region_warmup; set by the
        # trainer, which knows the warm-up's length); 0: the full weight from the first step.
        self.region_ramp_steps = 0

    def region_weight_at(self, step: int) -> float:
        """The weight of L_reg at ``step``: ``region_weight``, ramped linearly over the first
        ``region_ramp_steps`` steps as the learning rate's warm-up is (step 0 gets 1/ramp of it)."""
        if step >= self.region_ramp_steps:
            return self.region_weight
        return self.region_weight * (step + 1) / self.region_ramp_steps

    def instance_chance(self) -> float:
        """The instance loss of an encoder that has learnt nothing (SimSiam's negative cosine: 0)."""
        return 0.0

    def region_chance(self) -> float:
        """The region loss of an encoder that has learnt nothing (SimSiam's negative cosine: 0)."""
        return 0.0

    def step_generator(self, step: int, stream: str, per_process: bool = True) -> torch.Generator:
        """A CPU generator for one random stream of one step (``per_process=False``: same on every rank)."""
        return generator(self.seed, step, stream, rank() if per_process else -1)

    def check(self, image_size: int, batch_per_process: int, num_processes: int = 1) -> None:
        """Refuse an image size or batch this method cannot train on, before any compute."""
        grid = self.encoder.check_image_size(image_size)
        if self.region is not None:
            self.region.check(grid, batch_per_process)

    def param_groups(self, fix_predictor_lr: bool = False) -> list[dict[str, Any]]:
        """Optimizer parameter groups; a group with ``fix_lr=True`` keeps its lr off the schedule."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def online_features(
        self, view_q: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, RegionFeatures | None]:
        """The online encoder's outputs for the query view (and the composites, with RegionCL).

        Returns:
            ``(fmap, pooled, region)``: the query feature map ``(B, C, G, G)``; pooled rows
            ``(B, C)``, or ``(3B, C)`` stacked ``[q; canvas; paste]`` with RegionCL so that one
            projector call serves all three, as in the paper; the region features or ``None``.
        """
        fmap = self.encoder(view_q)
        pooled = fmap.mean((2, 3))
        if self.region is None:
            return fmap, pooled, None
        region = self.region.features(self.encoder, view_q, self.step_generator(step, "swap"))
        return fmap, torch.cat([pooled, region.canvas, region.paste]), region

    @staticmethod
    def split_rows(rows: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``[q; canvas; paste]`` rows → ``(q, canvas, paste)`` (the last two ``None`` without RegionCL)."""
        if rows.shape[0] == batch:
            return rows, None, None
        return rows[:batch], rows[batch : 2 * batch], rows[2 * batch :]
