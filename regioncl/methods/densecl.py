"""DenseCL (and, with the RegionCL mechanism, RegionCL-D): SPEC §4."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..backbones import Encoder
from ..distributed import concat_all_gather
from ..heads import conv_projector
from ..losses import dense_correspondence, dense_info_nce
from ..queue import KeyQueue
from ..region import RegionCL
from .mocov2 import MoCoV2


class DenseCL(MoCoV2):
    """DenseCL: MoCo v2's global branch plus a dense branch with its own projector and queue.

    L = (1 − λ) L_ins + λ L_dense (+ w L_reg for RegionCL-D, w = 1 − λ unless set: the
    region term weighs what the instance term weighs; the paper gives no value).

    Args:
        encoder, region, hidden_dim, dim, queue_size, temperature, momentum, bn_groups, seed:
            as :class:`MoCoV2`; the dense queue has ``queue_size`` keys too.
        dense_weight: λ (0.5).
    """

    def __init__(self, encoder: Encoder, region: RegionCL | None = None, *, dense_weight: float = 0.5, **kwargs) -> None:
        super().__init__(encoder, region, **kwargs)
        if not 0.0 <= dense_weight <= 1.0:
            raise ValueError(f"dense_weight (λ) must be in [0, 1], got {dense_weight}")
        self.dense_weight = dense_weight
        hidden, dim = self.projector[0].out_features, self.projector[-1].out_features
        self.dense_projector = conv_projector(encoder.num_features, hidden, dim)
        self.key_dense_projector = self.add_momentum_pair(self.dense_projector)
        self.dense_queue = KeyQueue(self.queue.size, dim)
        self.loss_weights = {"loss_ins": 1.0 - dense_weight, "loss_dense": dense_weight}

    @property
    def default_region_weight(self) -> float:
        return 1.0 - self.dense_weight

    def key_heads(self, fmap: torch.Tensor) -> dict[str, torch.Tensor]:
        """Adds the dense keys ``(B, dim, N)``, their pooled form ``(B, dim)`` and the backbone map ``(B, C, N)``."""
        heads = super().key_heads(fmap)
        dense = self.key_dense_projector(fmap)
        heads["k_grid"] = F.normalize(dense.flatten(2), dim=1)
        heads["k_dense_pooled"] = F.normalize(dense.mean((2, 3)), dim=1)
        heads["k_backbone"] = fmap.flatten(2)
        return heads

    def extra_losses(self, fmap: torch.Tensor, keys: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        q_grid = F.normalize(self.dense_projector(fmap).flatten(2), dim=1)
        match = dense_correspondence(fmap.detach().flatten(2), keys["k_backbone"])
        loss = dense_info_nce(q_grid, keys["k_grid"], match, self.dense_queue.keys.clone(), self.temperature)
        return {"loss_dense": loss}

    def enqueue(self, keys: dict[str, torch.Tensor]) -> None:
        super().enqueue(keys)
        self.dense_queue.enqueue(concat_all_gather(keys["k_dense_pooled"]))
