"""Training-step throughput of the methods, side by side (median of interleaved timed steps);
with --pipeline, the two-view data pipeline per worker against the official MoCo v2 one.

    regioncl benchmark --backbone resnet18 --image-size 64 --batch-size 32
    regioncl benchmark --backbone resnet50 --image-size 224 --batch-size 64 --device cuda --precision bf16
    regioncl benchmark --compare lightly --methods mocov2 densecl simsiam --backbone resnet50 --backbone-args '{}' --image-size 128 --batch-size 16
    regioncl benchmark --pipeline --image-size 224 --num-images 200   # synthetic 500x375 JPEGs
    regioncl benchmark --pipeline --images /data/imagenet/train/n01440764
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from benchmarks.against_lightly import LIGHTLY_METHODS
from benchmarks.pipeline import format_pipeline_table, pipeline_benchmark, write_jpegs
from benchmarks.steps import (
    SIDE_LABELS,
    SIDES,
    Setup,
    benchmark,
    compare_layouts,
    compare_lightly,
    compare_sides,
    format_compare,
    format_table,
    matmul_flops_per_s,
)
from regioncl.cli.common import parser
from regioncl.methods import METHODS
from regioncl.train.hostmem import keep_host_memory_for


def run_pipeline(a: argparse.Namespace) -> None:
    size = a.image_size or 224
    with tempfile.TemporaryDirectory() as tmp:
        folder = a.images
        if folder is None:
            folder = tmp
            write_jpegs(folder, a.num_images, *a.jpeg_size, quality=a.jpeg_quality)
            what = f"{a.num_images} synthetic {a.jpeg_size[0]}x{a.jpeg_size[1]} JPEGs (quality {a.jpeg_quality})"
        else:
            what = f"the images under {folder}"
        rows = pipeline_benchmark(folder, size, rounds=a.rounds, draft=a.draft)
    print(
        f"# two views of {size} px from {what}; 1 torch thread (one DataLoader worker), median of "
        f"{a.rounds} interleaved passes; draft={a.draft}; {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, cpu_count={os.cpu_count()}"
    )
    print(format_pipeline_table(rows))


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = parser(__doc__, prog)
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=sorted(METHODS) + ["all"],
        help="methods to time, or 'all' (default: mocov2 regioncl_m; with --compare: mocov2 densecl simsiam)",
    )
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--backbone-args", type=json.loads, default={}, help="JSON kwargs for timm.create_model")
    p.add_argument("--image-size", type=int, default=None, help="default 64 (steps), 224 (--pipeline)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=10, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--queue-size", type=int, default=4096)
    p.add_argument("--compile", action="store_true", help="torch.compile our encoders (compiled in the warm-up)")
    p.add_argument(
        "--compare",
        choices=["lightly", "layouts"],
        default=None,
        help="time each method against lightly's implementation (needs regioncl[bench]), or "
        "in channels_last against contiguous tensors",
    )
    p.add_argument(
        "--sides",
        nargs="+",
        choices=sorted(SIDES),
        default=None,
        help="with --compare lightly: the runs besides ours (default: lightly lightly_ours; "
        "lightly_ours is lightly given our settings, ours_glibc ours with glibc's allocator "
        "defaults, with --processes only)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=0,
        metavar="R",
        help="with --compare lightly: run each (method, side) alone in a process of its own, R rounds, "
        "each with its side's allocator setting (ours keeps freed host memory, lightly has glibc's defaults)",
    )
    p.add_argument(
        "--no-keep-host-memory",
        dest="keep_host_memory",
        action="store_false",
        help="leave glibc's allocator settings as they are (by default the script, like the trainer, keeps "
        "freed host memory on the CPU); not with --processes, where each side has its own setting",
    )
    pipe = p.add_argument_group("data pipeline (--pipeline)")
    pipe.add_argument("--pipeline", action="store_true", help="time the two-view pipelines instead of training steps")
    pipe.add_argument("--images", default=None, help="a folder of images (default: synthetic JPEGs)")
    pipe.add_argument("--num-images", type=int, default=200)
    pipe.add_argument(
        "--jpeg-size",
        type=lambda v: tuple(int(x) for x in v.split("x")),
        default=(500, 375),
        help="WIDTHxHEIGHT of the synthetic JPEGs (every other one portrait)",
    )
    pipe.add_argument("--jpeg-quality", type=int, default=90)
    pipe.add_argument("--rounds", type=int, default=5, help="timed passes per pipeline")
    pipe.add_argument("--no-draft", dest="draft", action="store_false", help="decode every JPEG at full size")
    start = p.add_argument_group("start-up (--startup)")
    start.add_argument("--startup", action="store_true", help="time `regioncl ... --help` in fresh processes instead")
    start.add_argument(
        "--roots",
        nargs="+",
        default=None,
        help="copies of the package to compare (folders holding regioncl/; default: this clone)",
    )
    a = p.parse_args(argv)
    if a.startup:
        from benchmarks.startup import format_startup_table, startup_times

        roots = a.roots or [str(Path(__file__).resolve().parents[1])]
        times = startup_times(roots, rounds=a.rounds)
        print(
            f"# python -m regioncl COMMAND in a fresh process, median of {a.rounds} rounds, the roots in turns; "
            f"{platform.processor() or platform.machine()}, cpu_count={os.cpu_count()}, Python "
            f"{platform.python_version()}"
        )
        print(format_startup_table(times))
        return
    if (a.sides or a.processes) and a.compare != "lightly":
        p.error("--sides and --processes go with --compare lightly")
    if a.processes and not a.keep_host_memory:
        p.error("--no-keep-host-memory: with --processes each side has its own allocator setting (--sides ours_glibc)")
    try:
        compare_sides(a.sides, a.processes)
    except ValueError as exc:
        p.error(str(exc))
    if a.pipeline:
        return run_pipeline(a)
    if a.methods is None:
        a.methods = list(LIGHTLY_METHODS) if a.compare == "lightly" else ["mocov2", "regioncl_m"]
    methods = list(METHODS) if "all" in a.methods else a.methods
    if a.threads:
        torch.set_num_threads(a.threads)
    # The trainer's rule (on the CPU unless turned off), before the first step allocates.
    kept = keep_host_memory_for(None if a.keep_host_memory else False, torch.device(a.device).type)
    where = (
        torch.cuda.get_device_name()
        if a.device.startswith("cuda")
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    if not a.processes:
        where += f", freed host memory {'kept' if kept else 'not kept'}"
    setup = Setup(
        a.backbone,
        a.backbone_args,
        a.image_size or 64,
        a.batch_size,
        a.device,
        a.steps,
        a.warmup,
        a.precision,
        a.queue_size,
        a.compile,
    )
    if a.compare == "layouts":
        print(
            f"# {a.backbone} {a.backbone_args or ''} {a.image_size or 64}px batch {a.batch_size} {a.precision} on "
            f"{a.device} ({where}), torch {torch.__version__}, median of {a.steps} steps in turns after {a.warmup} warm-up"
        )
        print(
            "| method | channels_last ms / step | contiguous ms / step | channels_last / contiguous |\n|---|---|---|---|"
        )
        for name, cl, plain in compare_layouts(methods, setup):
            print(f"| {name} | {cl:.1f} | {plain:.1f} | {cl / plain:.2f} |")
        return
    if a.compare:
        rows = compare_lightly(methods, setup, sides=a.sides, processes=a.processes)
        import lightly

        how = (
            f"each side in its own processes, {a.processes} rounds of {a.steps} steps per method; freed host "
            f"memory kept by {', '.join(SIDE_LABELS[s] for s in rows[0].timings if SIDES[s].keep_host_memory)}, "
            f"returned with glibc's defaults by {', '.join(SIDE_LABELS[s] for s in rows[0].timings if not SIDES[s].keep_host_memory)}"
            if a.processes
            else f"{a.steps} steps per method, the sides interleaved in one process"
        )
        print(
            f"# regioncl (channels_last{', compiled' if a.compile else ''}) against lightly {lightly.__version__}: {a.backbone} {a.backbone_args or ''} "
            f"{a.image_size or 64}px batch {a.batch_size} {a.precision} on {a.device} ({where}), torch "
            f"{torch.__version__}, queue {a.queue_size}, median over {how}, after {a.warmup} warm-up steps"
        )
        print(format_compare(rows))
        return
    peak = matmul_flops_per_s(a.device, torch.bfloat16 if a.precision == "bf16" else torch.float32)
    rows = benchmark(methods, setup, a.channels_last, matmul_peak=peak)
    print(
        f"# {a.backbone} {a.backbone_args or ''} {a.image_size or 64}px batch {a.batch_size} {a.precision} "
        f"channels_last={a.channels_last} compile={a.compile} on {a.device} ({where}), torch {torch.__version__}, "
        f"median of {a.steps} timed steps after {a.warmup} warm-up, cpu_count={os.cpu_count()}; "
        f"measured {a.precision} matmul peak ({'8192², 20 in one window' if a.device.startswith('cuda') else '2048², median of 5'}): "
        f"{peak / 1e9:.0f} GFLOP/s" + (f"; {torch.cuda.get_device_name()}" if a.device.startswith("cuda") else "")
    )
    print(format_table(rows))
