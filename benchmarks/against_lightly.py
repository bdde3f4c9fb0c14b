"""lightly's MoCo v2, DenseCL and SimSiam training steps, for side-by-side timing (``benchmark.py --compare lightly``).

Each model follows lightly's own example for the method (``examples/pytorch/{moco,densecl,simsiam}.py``:
its projection heads, losses, memory bank and ``update_momentum``), with the settings of
ours so that both do the same work: the same timm backbone (the feature map pooled as
lightly's examples pool torchvision's), heads 2048 → 128 (MoCo v2, DenseCL) and
2048 → 2048, predictor 512 (SimSiam), a memory bank of ``queue_size`` keys, temperature
0.2, momentum 0.999, DenseCL's λ = 0.5. DenseCL's key branch uses the momentum backbone
(lightly's example at the stored revision ran the online one there). Single process, so no
batch shuffle (ours does its one-process permutation). lightly is only needed for this
comparison: ``pip install regioncl[bench]``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from regioncl.backbones import create_encoder

__all__ = ["LIGHTLY_METHODS", "lightly_step"]

LIGHTLY_METHODS = ("mocov2", "densecl", "simsiam")


def _frozen_copy(module: nn.Module) -> nn.Module:
    key = copy.deepcopy(module)
    key.requires_grad_(False)
    return key


def lightly_step(
    method: str,
    backbone: str,
    backbone_args: dict | None = None,
    queue_size: int = 4096,
    momentum: float = 0.999,
) -> tuple[nn.Module, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """``(model, loss_fn)``: ``loss_fn(view_q, view_k)`` runs lightly's forward (momentum update
    included) and returns the loss to backpropagate; the caller steps the optimizer."""
    try:
        from lightly.loss import NegativeCosineSimilarity, NTXentLoss
        from lightly.models import utils
        from lightly.models.modules import (
            DenseCLProjectionHead,
            MoCoProjectionHead,
            SimSiamPredictionHead,
            SimSiamProjectionHead,
        )
    except ImportError as exc:
        raise ImportError("the lightly comparison needs lightly: pip install 'regioncl[bench]'") from exc
    if method not in LIGHTLY_METHODS:
        raise ValueError(f"no lightly counterpart for {method!r}; choose from {LIGHTLY_METHODS}")
    model = nn.Module()
    model.backbone = create_encoder(backbone, **(backbone_args or {}))
    width = model.backbone.num_features

    def pooled(fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean((2, 3))

    if method == "simsiam":
        model.projection_head = SimSiamProjectionHead(width, 2048, 2048)
        model.prediction_head = SimSiamPredictionHead(2048, 512, 2048)
        criterion = NegativeCosineSimilarity()

        def branch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            z = model.projection_head(pooled(model.backbone(x)))
            return z.detach(), model.prediction_head(z)

        def loss_fn(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
            z0, p0 = branch(x0)
            z1, p1 = branch(x1)
            return 0.5 * (criterion(z0, p1) + criterion(z1, p0))

        return model, loss_fn

    pairs = [("backbone", "backbone_momentum")]
    if method == "mocov2":
        model.projection_head = MoCoProjectionHead(width, 2048, 128)
        pairs.append(("projection_head", "projection_head_momentum"))
        # Losses are submodules, so that their memory banks move with ``model.to(device)``.
        model.criterion = criterion = NTXentLoss(temperature=0.2, memory_bank_size=(queue_size, 128))
    else:
        model.projection_head_global = DenseCLProjectionHead(width, 2048, 128)
        model.projection_head_local = DenseCLProjectionHead(width, 2048, 128)
        pairs += [
            ("projection_head_global", "projection_head_global_momentum"),
            ("projection_head_local", "projection_head_local_momentum"),
        ]
        model.criterion_global = criterion_global = NTXentLoss(temperature=0.2, memory_bank_size=(queue_size, 128))
        model.criterion_local = criterion_local = NTXentLoss(temperature=0.2, memory_bank_size=(queue_size, 128))
    for online, key in pairs:
        setattr(model, key, _frozen_copy(getattr(model, online)))

    def update() -> None:
        for online, key in pairs:
            utils.update_momentum(getattr(model, online), getattr(model, key), m=momentum)

    if method == "mocov2":

        def loss_fn(x_query: torch.Tensor, x_key: torch.Tensor) -> torch.Tensor:
            query = model.projection_head(pooled(model.backbone(x_query)))
            update()
            key = model.projection_head_momentum(pooled(model.backbone_momentum(x_key))).detach()
            return criterion(query, key)

        return model, loss_fn

    def dense(x: torch.Tensor, suffix: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = getattr(model, "backbone" + suffix)(x)
        glob = getattr(model, "projection_head_global" + suffix)(pooled(features))
        tokens = features.flatten(start_dim=2).permute(0, 2, 1)
        return tokens, glob, getattr(model, "projection_head_local" + suffix)(tokens)

    def loss_fn(x_query: torch.Tensor, x_key: torch.Tensor) -> torch.Tensor:
        update()
        query_features, query_global, query_local = dense(x_query, "")
        with torch.no_grad():
            key_features, key_global, key_local = dense(x_key, "_momentum")
        key_local = utils.select_most_similar(query_features, key_features, key_local)
        loss_global = criterion_global(query_global, key_global)
        loss_local = criterion_local(query_local.flatten(end_dim=1), key_local.flatten(end_dim=1))
        return 0.5 * (loss_global + loss_local)

    return model, loss_fn
