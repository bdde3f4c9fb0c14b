"""MoCo v2 (and, with the RegionCL mechanism, RegionCL-M): SPEC §3 and §6.

Read :meth:`MoCoV2.forward` beside the reference ``moco/builder.py``: the query, the momentum
update, the shuffled keys, InfoNCE against the queue, the enqueue; RegionCL adds the paste and
canvas rows to the query's projector call and one more loss, L_reg.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Encoder
from ..distributed import batch_shuffle, batch_unshuffle, concat_all_gather
from ..errors import UserError
from ..heads import mlp_projector
from ..losses import info_nce
from ..queue import KeyQueue
from ..region import RegionCL, RegionFeatures
from .base import SSLMethod


class MoCoV2(SSLMethod):
    """MoCo v2 with an optional RegionCL mechanism; DenseCL extends it.

    Args:
        encoder: online backbone.
        region: ``RegionCL(...)`` for RegionCL-M, ``None`` for MoCo v2.
        hidden_dim, dim: projector widths (2048, 128).
        queue_size: K, keys in the queue (65,536).
        temperature: τ (0.2).
        momentum: m of the key encoder (0.999).
        bn_groups: sub-batches with their own BN statistics for the shuffled keys in
            each process (SPEC §6); 1 leaves only the cross-process shuffle.
        region_weight: the weight of L_reg (1).
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
        region_weight: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(encoder, region, seed, region_weight)
        if bn_groups < 1:
            raise UserError(f"bn_groups must be >= 1, got {bn_groups}")
        self.temperature = temperature
        self.momentum = momentum
        self.bn_groups = bn_groups
        self.projector = mlp_projector(encoder.num_features, hidden_dim, dim)
        self.key_encoder = copy.deepcopy(encoder)
        self.key_projector = copy.deepcopy(self.projector)
        self.queue = KeyQueue(queue_size, dim)
        # (online, key) module pairs kept in step by the momentum update; DenseCL adds its dense head.
        self.momentum_pairs: list[tuple[nn.Module, nn.Module]] = [
            (self.encoder, self.key_encoder),
            (self.projector, self.key_projector),
        ]
        self.freeze_keys()

    def add_momentum_pair(self, online: nn.Module) -> nn.Module:
        """A frozen copy of ``online`` that follows it by momentum; returns the copy."""
        key = copy.deepcopy(online)
        self.momentum_pairs.append((online, key))
        self.freeze_keys()
        return key

    def freeze_keys(self) -> None:
        for _, key in self.momentum_pairs:
            key.requires_grad_(False)

    def check(self, image_size: int, batch_per_process: int, num_processes: int = 1) -> None:
        super().check(image_size, batch_per_process, num_processes)
        self.queue.check_batch(batch_per_process * num_processes)
        if batch_per_process % self.bn_groups:
            raise UserError(f"bn_groups={self.bn_groups} does not divide the per-process batch {batch_per_process}")

    @torch.no_grad()
    def momentum_update(self) -> None:
        """key ← m·key + (1 − m)·online, fused over all parameters (BN buffers are the key encoder's own)."""
        online = [p for o, _ in self.momentum_pairs for p in o.parameters()]
        keys = [p for _, k in self.momentum_pairs for p in k.parameters()]
        torch._foreach_lerp_(keys, online, 1.0 - self.momentum)

    def key_heads(self, fmap: torch.Tensor) -> dict[str, torch.Tensor]:
        """MoCo's key: ``k`` ``(B, dim)``, the L2-normalised projection of the pooled key map."""
        return {"k": F.normalize(self.key_projector(fmap.mean((2, 3))), dim=1)}

    def instance_chance(self) -> float:
        """log(K + 1): InfoNCE over the positive and the queue's K keys, all alike."""
        return math.log(self.queue.keys.shape[0] + 1)

    def region_chance(self) -> float:
        """log(K + 2): a region row's InfoNCE over its positive, its partner and the queue's K keys, all alike."""
        return math.log(self.queue.keys.shape[0] + 2)

    @torch.no_grad()
    def keys(self, view_k: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """The key branch with shuffle-BN: the key view is shuffled across processes, encoded in
        ``bn_groups`` sub-batches with statistics of their own, passed through :meth:`key_heads`
        and unshuffled."""
        shuffled, unshuffle = batch_shuffle(view_k, self.step_generator(step, "shuffle", per_process=False))
        chunks = [self.key_heads(self.key_encoder(chunk)) for chunk in shuffled.chunk(self.bn_groups)]
        return {name: batch_unshuffle(torch.cat([c[name] for c in chunks]), unshuffle) for name in chunks[0]}

    def instance_and_region_losses(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        queue: torch.Tensor,
        canvas: torch.Tensor | None,
        paste: torch.Tensor | None,
        region: RegionFeatures | None,
    ) -> dict[str, torch.Tensor]:
        """L_ins = InfoNCE(q, k, queue) and, with RegionCL, L_reg over the canvas and paste rows
        (each with its partner region as an extra, stop-gradient negative; SPEC §3)."""
        out = {"loss_ins": info_nce(q, k, queue, self.temperature)}
        if region is not None:
            out["loss_reg"] = self.region.loss(
                lambda rows, positives, partners: info_nce(rows, positives, queue, self.temperature, partners),
                canvas,
                paste,
                k,
                region.perm,
                region.keep,
            )
        return out

    def forward(self, view_q: torch.Tensor, view_k: torch.Tensor, step: int = 0) -> dict[str, torch.Tensor]:
        """One training step's losses.

        Args:
            view_q, view_k: the two augmented views ``(B, 3, S, S)``.
            step: the global step (seeds the box, π and the key shuffle).

        Returns:
            ``loss`` (to backpropagate), ``loss_ins`` and, with RegionCL, ``loss_reg``.
        """
        # Queries: q, and with RegionCL the canvas and paste rows, through one projector call.
        _, pooled, region = self.online_features(view_q, step)
        q, canvas, paste = self.split_rows(F.normalize(self.projector(pooled), dim=1), view_q.shape[0])
        # Keys: no gradient, momentum encoder, shuffle-BN.
        self.momentum_update()
        k = self.keys(view_k, step)["k"]
        # A snapshot: the enqueue below writes the buffer in place, which autograd must not see.
        queue = self.queue.keys.clone()
        out = self.instance_and_region_losses(q, k, queue, canvas, paste, region)
        out["loss"] = (
            out["loss_ins"] + self.region_weight_at(step) * out["loss_reg"] if region is not None else out["loss_ins"]
        )
        self.queue.enqueue(concat_all_gather(k))
        return out
