"""What the region task does to the shared encoder, measured beside training.

With ``run.diagnose_every: N`` a RegionCL-M or -D run (or its no-swapping ablation) writes, for
every N-th step, a record of ``metrics.jsonl`` measured on that step's batch with the weights
before its update:

* ``diag_grad_ins``, ``diag_grad_reg``: the norms of the gradients of L_ins and of the weighted
  region loss (``diag_region_weight`` × L_reg, the weight of that step) at the online encoder's
  parameters, and
  ``diag_grad_cos``, the cosine between the two (below 0: the region task pulls the encoder
  against the instance task);
* ``diag_empty_paste``, ``diag_empty_canvas``: the share of paste and of canvas rows whose pixels
  hold almost no content (under ``EMPTY_BELOW`` of them differ from the image's background);
* ``diag_loss_reg_empty``, ``diag_loss_reg_content``: the mean region loss of those rows and of
  the others (null when there are none), against ``diag_chance``, the InfoNCE of a row that tells
  its positive from none of the negatives;
* ``diag_bn_gap``: how far the composites' batch-norm statistics lie from the views' (the
  composites are their own batch-norm batch): at every batch-norm layer of the online encoder, the
  channels' mean distance between the two batches' means in units of the views' standard
  deviation, averaged over the layers (0: the same statistics);
* ``diag_loss_ins``, ``diag_loss_reg``: the two losses on that batch (L_ins: DenseCL's global
  term); ``diag_kept``: the share of region rows in the loss (``method.region_min_content``).

A pixel holds content when it differs from its image's background, read as the median of the
image's border pixels, by more than a tenth of the image's range (and by more than a small floor,
so that a flat image has none: :func:`regioncl.region.content_mask`): right for objects on a plain
background, as in the framed Fashion-MNIST study; a crop that lies inside the object reads its
texture as content.

The measurement repeats the step's forward pass on a copy of the model, so its losses are the
step's own, and the run's weights, batch-norm statistics, queue and random streams are untouched:
a run with diagnostics takes the same steps as one without (a test checks both). It costs about
one more training step each time.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..losses import info_nce
from ..methods.base import SSLMethod
from ..methods.mocov2 import MoCoV2
from ..region import RegionCL, row_content

#: a row is empty when less than this share of its pixels hold content
EMPTY_BELOW = 0.05


def check_diagnosable(model: SSLMethod, method: str) -> None:
    """Refuse, before training, diagnostics for a method they do not apply to."""
    if model.region is None or not isinstance(model, MoCoV2):
        raise UserError(
            f"run.diagnose_every measures the region loss of RegionCL-M and -D (and regioncl_m_noswap); "
            f"{method} has no such loss: leave run.diagnose_every at 0"
        )


def _flat(grads: tuple[torch.Tensor | None, ...], like: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten().float() for g, p in zip(grads, like)])


class BatchStats:
    """Records, while installed, the per-channel mean and variance of every batch-norm layer's input
    in each call of ``module``, in call order."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        layers = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        self.first = layers[0] if layers else None
        self.handles = [m.register_forward_pre_hook(self._see) for m in layers]

    def _see(self, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if module is self.first:
            self.calls.append([])
        x = inputs[0].detach().float()
        dims = [d for d in range(x.dim()) if d != 1]
        self.calls[-1].append((x.mean(dims), x.var(dims, unbiased=False)))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def gap(self, eps: float = 1e-5) -> float | None:
        """The distance of each call after the first from the first (the mean over layers of the
        channels' mean |mean - mean_0| / std_0), averaged over those calls; None with fewer than two."""
        if len(self.calls) < 2:
            return None
        ref = self.calls[0]
        gaps = [
            sum(float(((m - m0).abs() / (v0 + eps).sqrt()).mean()) for (m, _), (m0, v0) in zip(call, ref)) / len(ref)
            for call in self.calls[1:]
        ]
        return sum(gaps) / len(gaps)


def region_diagnostics(model: SSLMethod, view_q: torch.Tensor, view_k: torch.Tensor, step: int) -> dict[str, float]:
    """The record of one step (see the module's docstring), from the views the step trains on.

    Every process of a multi-process run calls it (the key branch's shuffle is collective); each
    measures its own share of the batch.
    """
    model = copy.deepcopy(model)
    model.train()
    batch = view_q.shape[0]
    stats = BatchStats(model.encoder)  # the views' call, then the composites' (two without swapping)
    _, pooled, region = model.online_features(view_q, step)
    stats.remove()
    q, canvas, paste = model.split_rows(F.normalize(model.projector(pooled), dim=1), batch)
    model.momentum_update()  # as the step does, so that the losses are the step's own
    k = model.keys(view_k, step)["k"]
    queue = model.queue.keys.clone()
    loss_ins = info_nce(q, k, queue, model.temperature)
    rows, positives, partners = RegionCL.rows(canvas, paste, k, region.perm)
    per_row = info_nce(rows, positives, queue, model.temperature, partners, reduction="none")
    kept = torch.ones_like(per_row, dtype=torch.bool) if region.keep is None else region.keep.to(per_row.device)
    loss_reg = per_row[kept].mean() if bool(kept.any()) else per_row.sum() * 0.0
    params = [p for p in model.encoder.parameters() if p.requires_grad]
    g_ins = _flat(torch.autograd.grad(loss_ins, params, retain_graph=True, allow_unused=True), params)
    weight = model.region_weight_at(step)
    g_reg = _flat(torch.autograd.grad(weight * loss_reg, params, allow_unused=True), params)

    content = row_content(view_q, region.box.pixel_slices(model.encoder.stride), region.perm)
    empty = (content < EMPTY_BELOW).to(per_row.device)
    losses = per_row.detach().float()

    def mean_or_none(values: torch.Tensor) -> float | None:
        return float(values.mean()) if values.numel() else None

    return {
        "diag_loss_ins": float(loss_ins.detach()),
        "diag_loss_reg": float(loss_reg.detach()),
        "diag_chance": model.region_chance(),
        "diag_grad_ins": float(g_ins.norm()),
        "diag_grad_reg": float(g_reg.norm()),
        "diag_grad_cos": float(F.cosine_similarity(g_ins, g_reg, dim=0)),
        "diag_region_weight": weight,
        "diag_kept": float(kept.float().mean()),
        "diag_bn_gap": stats.gap(),
        "diag_empty_canvas": float(empty[:batch].float().mean()),
        "diag_empty_paste": float(empty[batch:].float().mean()),
        "diag_loss_reg_empty": mean_or_none(losses[empty]),
        "diag_loss_reg_content": mean_or_none(losses[~empty]),
    }
