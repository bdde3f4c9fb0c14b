"""DenseCL (and, with the RegionCL mechanism, RegionCL-D): SPEC §4.

DenseCL is MoCo v2's global branch plus a dense branch: a 1×1-conv projector on the query's
feature map, its momentum copy on the key's, a second queue, and a loss per query cell against
the key cell whose backbone feature is most similar. :meth:`DenseCL.forward` states both
branches; the shared pieces (momentum update, shuffled keys, the instance and region losses)
are MoCo v2's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..backbones import Encoder
from ..distributed import concat_all_gather
from ..errors import UserError
from ..heads import conv_projector
from ..losses import dense_correspondence, dense_info_nce
from ..queue import KeyQueue
from ..region import RegionCL
from .mocov2 import MoCoV2


class DenseCL(MoCoV2):
    """DenseCL: L = (1 − λ) L_ins + λ L_dense (+ w L_reg for RegionCL-D).

    w = 1 − λ unless given: the region term weighs what the instance term weighs (our choice;
    the paper gives no value, SPEC §4).

    Args:
        encoder, region, hidden_dim, dim, queue_size, temperature, momentum, bn_groups, seed:
            as :class:`MoCoV2`; the dense queue has ``queue_size`` keys too.
        dense_weight: λ (0.5).
        region_weight: w; ``None``: 1 − λ.
    """

    def __init__(
        self,
        encoder: Encoder,
        region: RegionCL | None = None,
        *,
        dense_weight: float = 0.5,
        region_weight: float | None = None,
        **kwargs,
    ) -> None:
        if not 0.0 <= dense_weight <= 1.0:
            raise UserError(f"dense_weight (λ) must be in [0, 1], got {dense_weight}")
        super().__init__(
            encoder, region, region_weight=1.0 - dense_weight if region_weight is None else region_weight, **kwargs
        )
        self.dense_weight = dense_weight
        hidden, dim = self.projector[0].out_features, self.projector[-1].out_features
        self.dense_projector = conv_projector(encoder.num_features, hidden, dim)
        self.key_dense_projector = self.add_momentum_pair(self.dense_projector)
        self.dense_queue = KeyQueue(self.queue.size, dim)

    def key_heads(self, fmap: torch.Tensor) -> dict[str, torch.Tensor]:
        """MoCo's ``k``, the dense keys ``(B, dim, N)``, their pooled form ``(B, dim)`` (for the dense
        queue) and the key's backbone map ``(B, C, N)`` (for the correspondence)."""
        dense = self.key_dense_projector(fmap)
        return {
            **super().key_heads(fmap),
            "k_grid": F.normalize(dense.flatten(2), dim=1),
            "k_dense_pooled": F.normalize(dense.mean((2, 3)), dim=1),
            "k_backbone": fmap.flatten(2),
        }

    def forward(self, view_q: torch.Tensor, view_k: torch.Tensor, step: int = 0) -> dict[str, torch.Tensor]:
        """One training step's losses: ``loss``, ``loss_ins``, ``loss_dense`` and, with RegionCL, ``loss_reg``."""
        # Queries: the global rows as MoCo v2's, and the dense query grid from the same map.
        fmap, pooled, region = self.online_features(view_q, step)
        q, canvas, paste = self.split_rows(F.normalize(self.projector(pooled), dim=1), view_q.shape[0])
        # Keys: MoCo v2's key branch, with the dense heads.
        self.momentum_update()
        keys = self.keys(view_k, step)
        queue, dense_queue = self.queue.keys.clone(), self.dense_queue.keys.clone()  # snapshots, as MoCo v2
        out = self.instance_and_region_losses(q, keys["k"], queue, canvas, paste, region)
        # The dense loss: each query cell against its best-matching key cell (by backbone features).
        q_grid = F.normalize(self.dense_projector(fmap).flatten(2), dim=1)
        match = dense_correspondence(fmap.detach().flatten(2), keys["k_backbone"])
        out["loss_dense"] = dense_info_nce(q_grid, keys["k_grid"], match, dense_queue, self.temperature)
        loss = (1.0 - self.dense_weight) * out["loss_ins"] + self.dense_weight * out["loss_dense"]
        out["loss"] = loss + self.region_weight_at(step) * out["loss_reg"] if region is not None else loss
        self.queue.enqueue(concat_all_gather(keys["k"]))
        self.dense_queue.enqueue(concat_all_gather(keys["k_dense_pooled"]))
        return out
