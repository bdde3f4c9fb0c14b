"""MoCo v2 (and, with the RegionCL mechanism, RegionCL-M): SPEC §3 and §6."""

from __future__ import annotations

import copy
from functools import partial

import torch
import torch.nn.functional as F

from ..backbones import Encoder
from ..distributed import batch_shuffle, batch_unshuffle, concat_all_gather
from ..heads import mlp_projector
from ..losses import info_nce
from ..queue import KeyQueue
from ..region import RegionCL
from .base import SSLMethod


class MoCoV2(SSLMethod):
    """MoCo v2 with an optional RegionCL mechanism.

    Args:
        encoder: online backbone.
        region: ``RegionCL(...)`` for RegionCL-M, ``None`` for MoCo v2.
        hidden_dim, dim: projector widths (2048, 128).
        queue_size: K, keys in the queue (65,536).
        temperature: τ (0.2).
        momentum: m of the key encoder (0.999).
        bn_groups: sub-batches with their own BN statistics for the shuffled keys in
            each process (SPEC §6); 1 leaves only the cross-process shuffle.
        seed: run seed (see :class:`SSLMethod`).
    """

    def __init__(
        self,
        encoder: Encoder,
        region: RegionCL | None = None,
        *,
        hidden_dim: int = 2048,
        dim: int = 128,
        queue_size: int = 65536,
        temperature: float = 0.2,
        momentum: float = 0.999,
        bn_groups: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(encoder, region, seed)
        if bn_groups < 1:
            raise ValueError(f"bn_groups must be >= 1, got {bn_groups}")
        self.temperature = temperature
        self.momentum = momentum
        self.bn_groups = bn_groups
        self.projector = mlp_projector(encoder.num_features, hidden_dim, dim)
        self.key_encoder = copy.deepcopy(encoder)
        self.key_projector = copy.deepcopy(self.projector)
        for p in self.key_parameters():
            p.requires_grad_(False)
        self.queue = KeyQueue(queue_size, dim)

    def key_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.key_encoder.parameters(), *self.key_projector.parameters()]

    def online_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.encoder.parameters(), *self.projector.parameters()]

    def check(self, image_size: int, batch_per_process: int, num_processes: int = 1) -> None:
        super().check(image_size, batch_per_process)
        self.queue.check_batch(batch_per_process * num_processes)
        if batch_per_process % self.bn_groups:
            raise ValueError(
                f"bn_groups={self.bn_groups} does not divide the per-process batch {batch_per_process}"
            )

    @torch.no_grad()
    def momentum_update(self) -> None:
        """key ← m·key + (1 − m)·online, fused over all parameters (BN buffers are the key encoder's own)."""
        torch._foreach_lerp_(self.key_parameters(), self.online_parameters(), 1.0 - self.momentum)

    @torch.no_grad()
    def keys(self, view_k: torch.Tensor, step: int) -> torch.Tensor:
        """L2-normalised keys ``(B, dim)`` with shuffle-BN across processes and ``bn_groups`` in each."""
        shuffled, unshuffle = batch_shuffle(view_k, self.step_generator(step, "shuffle", per_process=False))
        pooled = torch.cat([self.key_encoder(chunk).mean((2, 3)) for chunk in shuffled.chunk(self.bn_groups)])
        k = F.normalize(self.key_projector(pooled), dim=1)
        return batch_unshuffle(k, unshuffle)

    def forward(self, view_q: torch.Tensor, view_k: torch.Tensor, step: int = 0) -> dict[str, torch.Tensor]:
        """One training step's losses.

        Args:
            view_q, view_k: the two augmented views ``(B, 3, S, S)``.
            step: the global step (seeds the box, π and the key shuffle).

        Returns:
            ``loss`` (to backpropagate), ``loss_ins`` and, for RegionCL-M, ``loss_reg``.
        """
        b = view_q.shape[0]
        pooled, region = self.online_pooled(view_q, step)
        z = F.normalize(self.projector(pooled), dim=1)
        self.momentum_update()
        k = self.keys(view_k, step)
        # A snapshot: the enqueue below writes the buffer in place, which autograd must not see.
        loss_fn = partial(info_nce, queue=self.queue.keys.clone(), temperature=self.temperature)
        out = {"loss_ins": loss_fn(z[:b], k)}
        out["loss"] = out["loss_ins"]
        if region is not None:
            canvas, paste = z[b : 2 * b], z[2 * b :]
            out["loss_reg"] = self.region.loss(
                lambda rows, pos, extra: loss_fn(rows, pos, extra_negatives=extra), canvas, paste, k, region.perm
            )
            out["loss"] = out["loss"] + self.region.weight * out["loss_reg"]
        self.queue.enqueue(concat_all_gather(k))
        return out
