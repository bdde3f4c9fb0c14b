#!/usr/bin/env python
"""Training-step throughput of the methods, side by side (median of interleaved timed steps).

    python scripts/benchmark.py --backbone resnet18 --image-size 64 --batch-size 32
    python scripts/benchmark.py --backbone resnet50 --image-size 224 --batch-size 64 --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from regioncl.benchmark import benchmark, format_table  # noqa: E402
from regioncl.methods import METHODS  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["mocov2", "regioncl_m"], choices=sorted(METHODS) + ["all"],
                   help="methods to time, or 'all'")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--backbone-args", type=json.loads, default={}, help="JSON kwargs for timm.create_model")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=10, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--queue-size", type=int, default=4096)
    a = p.parse_args(argv)
    methods = list(METHODS) if "all" in a.methods else a.methods
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = benchmark(
        methods, a.backbone, a.backbone_args, a.image_size, a.batch_size, a.device, a.steps, a.warmup,
        a.channels_last, a.precision, a.queue_size,
    )
    where = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"# {a.backbone} {a.backbone_args or ''} {a.image_size}px batch {a.batch_size} {a.precision} "
          f"channels_last={a.channels_last} on {a.device} ({where}), torch {torch.__version__}, "
          f"{a.steps} timed steps after {a.warmup} warm-up, cpu_count={os.cpu_count()}")
    print(format_table(rows))


if __name__ == "__main__":
    main()
