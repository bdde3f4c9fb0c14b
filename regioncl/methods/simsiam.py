"""SimSiam (and, with the RegionCL mechanism, RegionCL-S): SPEC §5."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..backbones import Encoder
from ..heads import simsiam_predictor, simsiam_projector
from ..losses import negative_cosine
from ..region import RegionCL
from .base import SSLMethod


class SimSiam(SSLMethod):
    """SimSiam: a shared encoder and projector, a predictor, negative cosine with stop-gradient.

    RegionCL-S (our reading of Algorithm 3): the paste and canvas features go through the
    projector (batched with the query rows) and the predictor, and
    L_reg = (D(p_i, sg(z_k[π(i)])) + D(c_i, sg(z_k[i]))) / 2, with z_k the other view's
    projection. No momentum encoder, no queue; the backbone should zero-init its residual
    branches (timm's ``zero_init_last``, on by default).

    Args:
        encoder: online backbone.
        region: ``RegionCL(...)`` for RegionCL-S, ``None`` for SimSiam.
        hidden_dim, dim: projector widths (2048, 2048).
        pred_dim: predictor bottleneck (512).
        region_weight: the weight of L_reg (1).
        seed: run seed (see :class:`SSLMethod`).
    """

    sync_batch_norm = True

    def __init__(
        self,
        encoder: Encoder,
        region: RegionCL | None = None,
        *,
        hidden_dim: int = 2048,
        dim: int = 2048,
        pred_dim: int = 512,
        region_weight: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(encoder, region, seed, region_weight)
        self.projector = simsiam_projector(encoder.num_features, hidden_dim, dim)
        self.predictor = simsiam_predictor(dim, pred_dim)

    def param_groups(self, fix_predictor_lr: bool = False) -> list[dict[str, Any]]:
        """The predictor in a group of its own, off the schedule when ``fix_predictor_lr`` (as SimSiam)."""
        predictor = set(self.predictor.parameters())
        rest = [p for p in self.parameters() if p.requires_grad and p not in predictor]
        return [{"params": rest}, {"params": list(self.predictor.parameters()), "fix_lr": fix_predictor_lr}]

    def forward(self, view_q: torch.Tensor, view_k: torch.Tensor, step: int = 0) -> dict[str, torch.Tensor]:
        """One training step's losses: ``loss``, ``loss_ins``, ``loss_reg`` (RegionCL-S) and ``z_std``.

        ``z_std`` is the mean over dimensions of the per-dimension standard deviation of the
        L2-normalised projections: about 1/√dim when healthy, 0 when collapsed.
        """
        b = view_q.shape[0]
        _, pooled, region = self.online_features(view_q, step)
        z_rows = self.projector(pooled)
        z_k = self.projector(self.encoder(view_k).mean((2, 3)))
        h_rows, h_k = self.predictor(z_rows), self.predictor(z_k)
        h_q, canvas, paste = self.split_rows(h_rows, b)
        z_q = z_rows[:b]
        out = {"loss_ins": 0.5 * negative_cosine(h_q, z_k) + 0.5 * negative_cosine(h_k, z_q)}
        out["loss"] = out["loss_ins"]
        if region is not None:
            out["loss_reg"] = self.region.loss(
                lambda rows, pos, _: negative_cosine(rows, pos), canvas, paste, z_k, region.perm, region.keep
            )
            out["loss"] = out["loss"] + self.region_weight_at(step) * out["loss_reg"]
        out["z_std"] = F.normalize(z_q.detach().float(), dim=1).std(0).mean()
        return out
