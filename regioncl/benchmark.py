"""Training-step throughput of the methods, measured side by side.

Each timed step is a full training step (forward with the momentum update and the
queue update, backward, SGD step). Methods are interleaved A/B/A/B so that machine
noise hits them alike; the median over timed steps is reported.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .backbones import create_encoder
from .methods import BASE_OF, build_method

# Backbone work per step in units of one forward pass (a backward counts 2), heads left out.
# MoCo v2 / DenseCL: query fwd+bwd (3) + key fwd (1) = 4; SimSiam: two views fwd+bwd = 6.
# RegionCL adds the composite pass with its backward (3); the no-swap ablation adds two (6).
FLOP_UNITS = {
    "mocov2": 4.0, "regioncl_m": 7.0, "regioncl_m_noswap": 10.0,
    "densecl": 4.0, "regioncl_d": 7.0,
    "simsiam": 6.0, "regioncl_s": 9.0,
}


@dataclass
class Row:
    method: str
    ms_per_step: float
    images_per_s: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(
    methods: list[str],
    backbone: str = "resnet18",
    backbone_args: dict | None = None,
    image_size: int = 64,
    batch_size: int = 32,
    device: str = "cpu",
    steps: int = 10,
    warmup: int = 3,
    channels_last: bool = True,
    precision: str = "fp32",
    queue_size: int = 4096,
) -> list[Row]:
    """Median step time of each method on identical random views.

    Args:
        methods: names from :data:`regioncl.methods.METHODS`.
        precision: ``fp32`` or ``bf16`` (autocast).
    """
    dev = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(batch_size, 3, image_size, image_size, generator=g).to(dev, memory_format=fmt) for _ in range(2)]
    runs = []
    for name in methods:
        torch.manual_seed(0)
        model = build_method(name, create_encoder(backbone, **(backbone_args or {})), queue_size=queue_size, bn_groups=1)
        model.check(image_size, batch_size, 1)
        model.to(dev, memory_format=fmt).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        runs.append((name, model, opt, []))
    autocast = (
        (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
    )
    for i in range(warmup + steps):
        for name, model, opt, times in runs:
            _sync(dev)
            start = time.perf_counter()
            with autocast():
                loss = model(*views, step=i)["loss"]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(dev)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    rows = []
    for name, _, _, times in runs:
        median = statistics.median(times)
        rows.append(Row(name, 1000 * median, batch_size / median))
    return rows


def format_table(rows: list[Row]) -> str:
    """A markdown table with each RegionCL variant's cost relative to its base, measured and by FLOPs."""
    by_name = {r.method: r for r in rows}
    lines = ["| method | ms / step | images / s | time vs base | FLOP ratio | measured / FLOP |", "|---|---|---|---|---|---|"]
    for r in rows:
        base = by_name.get(BASE_OF.get(r.method, ""))
        if base is None:
            lines.append(f"| {r.method} | {r.ms_per_step:.1f} | {r.images_per_s:.1f} | 1.00 | 1.00 | |")
            continue
        ratio = r.ms_per_step / base.ms_per_step
        flops = FLOP_UNITS[r.method] / FLOP_UNITS[base.method]
        lines.append(f"| {r.method} | {r.ms_per_step:.1f} | {r.images_per_s:.1f} | {ratio:.2f} | {flops:.2f} | {ratio / flops:.2f} |")
    return "\n".join(lines)
