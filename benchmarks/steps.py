"""Training-step throughput of the methods, measured side by side.

Each timed step is a full training step (forward with the momentum update and the
queue update, backward, SGD step). Methods are interleaved A/B/A/B so that machine
noise hits them alike; the median over timed steps is reported. ``compare_lightly``
times each method against lightly's implementation of it the same way.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from regioncl.backbones import compile_encoders, create_encoder
from regioncl.methods import BASE_OF, build_method
from regioncl.train.hostmem import keep_freed_host_memory, minor_page_faults

# Backbone work per step in units of one forward pass (a backward counts 2), heads left out.
# MoCo v2 / DenseCL: query fwd+bwd (3) + key fwd (1) = 4; SimSiam: two views fwd+bwd = 6.
# RegionCL adds the composite pass with its backward (3); the no-swap ablation adds two (6).
FLOP_UNITS = {
    "mocov2": 4.0,
    "regioncl_m": 7.0,
    "regioncl_m_noswap": 10.0,
    "densecl": 4.0,
    "regioncl_d": 7.0,
    "simsiam": 6.0,
    "regioncl_s": 9.0,
}


@dataclass
class Row:
    method: str
    ms_per_step: float
    images_per_s: float
    gflop_per_step: float | None = None  # counted (FlopCounterMode): forward + backward, heads included
    peak_fraction: float | None = None  # achieved FLOP/s over the measured matmul FLOP/s
    mfu: float | None = None  # achieved FLOP/s over the device's datasheet peak (GPUs it knows)


#: datasheet dense peaks in TFLOP/s (no sparsity) as (bf16/fp16 tensor cores, tf32, fp32), matched
#: against torch.cuda.get_device_name() in this order (the first name found in it wins).
DATASHEET_TFLOPS: dict[str, tuple[float, float, float]] = {
    "H200": (989.5, 494.7, 66.9),
    "H100 PCIe": (756.0, 378.0, 51.2),
    "H100": (989.5, 494.7, 66.9),
    "A100": (312.0, 156.0, 19.5),
    "L40S": (362.1, 183.0, 91.6),
    "L4": (121.0, 60.0, 30.3),
    "A10": (125.0, 62.5, 31.2),
    "V100": (125.0, 15.7, 15.7),
}


def datasheet_flops_per_s(device: str, dtype: torch.dtype) -> float | None:
    """The datasheet's dense peak of this CUDA device for ``dtype`` (fp32 counts as TF32 when the
    convolutions may use it, as torch's default allows), in FLOP/s; None for another device."""
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    for key, (half, tf32, fp32) in DATASHEET_TFLOPS.items():
        if key in name:
            full = tf32 if torch.backends.cudnn.allow_tf32 else fp32
            return 1e12 * (half if dtype in (torch.bfloat16, torch.float16) else full)
    return None


def matmul_flops_per_s(
    device: str = "cpu", dtype: torch.dtype = torch.float32, n: int | None = None, reps: int | None = None
) -> float:
    """The machine's measured dense matmul throughput, FLOP/s.

    On a CPU: the median of ``reps`` (5) single n×n products (n = 2048). On a GPU a single
    2048² product mostly measures its launch: ``reps`` (20) products of n = 8192 run back to back
    in one event window, with TF32 allowed for matmuls exactly when it is for convolutions (so the
    reference is what the network's layers may use).
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        n, reps = n or 2048, reps or 5
        a, b = (torch.randn(n, n, device=dev, dtype=dtype) for _ in range(2))
        times = [_seconds(dev, lambda: a @ b) for _ in range(reps + 1)][1:]  # the first one warms up
        return 2 * n**3 / statistics.median(times)
    n, reps = n or 8192, reps or 20
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        a, b = (torch.randn(n, n, device=dev, dtype=dtype) for _ in range(2))
        for _ in range(3):
            a @ b
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            a @ b
        end.record()
        end.synchronize()
        return 2 * n**3 * reps / (start.elapsed_time(end) / 1000)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed


def counted_flops(step: Callable[[int], None], i: int = 0) -> float:
    """FLOPs of one call of ``step`` (matmuls and convolutions, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(i)
    return float(counter.get_total_flops())


def _seconds(device: torch.device, fn: Callable[[], Any]) -> float:
    """Wall time of ``fn()``, the device synchronised before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


StepFn = Callable[[int], None]


@dataclass
class Timing:
    """Timed steps of one run: wall seconds and the process's minor page faults during each."""

    seconds: list[float] = field(default_factory=list)
    faults: list[int] = field(default_factory=list)

    def add(self, seconds: float, faults: int) -> None:
        self.seconds.append(seconds)
        self.faults.append(faults)

    def first(self, n: int) -> Timing:
        return Timing(self.seconds[:n], self.faults[:n])

    def extend(self, other: Timing) -> None:
        self.seconds += other.seconds
        self.faults += other.faults

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_faults(self) -> float:
        return statistics.median(self.faults)


def _training_step(model: torch.nn.Module, loss_fn: Callable[[int], torch.Tensor]) -> StepFn:
    """One full step: ``loss_fn(step)`` (forward, momentum and queue updates), backward, SGD.

    torch's default SGD, as the trainer's. (Its faster ``fused=True`` CPU kernel, in torch
    2.14.1, updates a channels_last parameter wrongly when its gradient is contiguous, silently;
    gradients can come with other strides.)
    """
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step(i: int) -> None:
        loss_fn(i).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


@dataclass
class Setup:
    """What every timed run shares: the backbone, the batch, the device and the timing."""

    backbone: str = "resnet18"
    backbone_args: dict | None = None
    image_size: int = 64
    batch_size: int = 32
    device: str = "cpu"
    steps: int = 10  # timed steps per run
    warmup: int = 3
    precision: str = "fp32"  # or "bf16" (autocast)
    queue_size: int = 4096
    compile: bool = False  # torch.compile our encoders (compiled during warm-up: give warmup >= 2)

    def views(self, fmt: torch.memory_format) -> list[torch.Tensor]:
        """The two random views every run trains on, in layout ``fmt``."""
        g = torch.Generator().manual_seed(0)
        size = (self.batch_size, 3, self.image_size, self.image_size)
        return [torch.randn(*size, generator=g).to(self.device, memory_format=fmt) for _ in range(2)]

    def ours(self, name: str, fmt: torch.memory_format, views: list[torch.Tensor]) -> StepFn:
        """A training step of our method ``name``."""
        torch.manual_seed(0)
        encoder = create_encoder(self.backbone, **(self.backbone_args or {}))
        model = build_method(name, encoder, queue_size=self.queue_size, bn_groups=1)
        model.check(self.image_size, self.batch_size, 1)
        model.to(self.device, memory_format=fmt).train()
        if self.compile:
            compile_encoders(model)
        return _training_step(model, lambda i: model(*views, step=i)["loss"])

    def lightly(self, name: str, fmt: torch.memory_format, views: list[torch.Tensor]) -> StepFn:
        """A training step of lightly's implementation of ``name`` (:mod:`benchmarks.against_lightly`)."""
        from benchmarks.against_lightly import lightly_step

        torch.manual_seed(0)
        model, loss_fn = lightly_step(name, self.backbone, self.backbone_args, self.queue_size)
        model.to(self.device, memory_format=fmt).train()
        return _training_step(model, lambda i: loss_fn(*views))

    def time(self, runs: dict[str, StepFn], per_turn: int = 2) -> dict[str, float]:
        """Median seconds per step of each run, the runs taking turns (:meth:`timings`)."""
        return {name: t.median for name, t in self.timings(runs, per_turn).items()}

    def timings(self, runs: dict[str, StepFn], per_turn: int = 2) -> dict[str, Timing]:
        """``steps`` timed steps of each run, the runs taking turns (A/B/A/B).

        Each turn is one untimed step, then ``per_turn`` timed ones: a step right after another
        model's pays for memory the other released (with glibc's default allocator settings, as
        much as a tenth of a resnet50 step, depending on which model ran before), a cost a
        training run never has. The order of the runs rotates every turn. ``warmup``
        untimed steps per run come first.
        """
        dev = torch.device(self.device)
        bf16 = self.precision == "bf16"

        def timed(step: StepFn, i: int) -> tuple[float, int]:
            def run() -> None:
                with torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext():
                    step(i)

            faults = minor_page_faults()
            return _seconds(dev, run), minor_page_faults() - faults

        times: dict[str, Timing] = {name: Timing() for name in runs}
        names = list(runs)
        for name in names:
            for i in range(self.warmup):
                timed(runs[name], i)
        turn = 0
        while min(len(t.seconds) for t in times.values()) < self.steps:
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                i = self.warmup + turn * (per_turn + 1)
                timed(runs[name], i)  # after another model's step: not timed
                for j in range(per_turn):
                    times[name].add(*timed(runs[name], i + 1 + j))
            turn += 1
        return {name: t.first(self.steps) for name, t in times.items()}


def benchmark(
    methods: list[str],
    setup: Setup | None = None,
    channels_last: bool = True,
    count_flops: bool = True,
    matmul_peak: float | None = None,
) -> list[Row]:
    """Median step time of each method on identical random views.

    Args:
        methods: names from :data:`regioncl.methods.METHODS`.
        setup: backbone, batch, device and timing (defaults: :class:`Setup`).
        count_flops: also count each step's FLOPs (one more step per method) and its
            fraction of the measured matmul throughput (:func:`matmul_flops_per_s`).
        matmul_peak: that throughput in FLOP/s if already measured.
    """
    setup = setup or Setup()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    views = setup.views(fmt)
    runs = {name: setup.ours(name, fmt, views) for name in methods}
    rows = [Row(name, 1000 * m, setup.batch_size / m) for name, m in setup.time(runs).items()]
    if count_flops:
        dtype = torch.bfloat16 if setup.precision == "bf16" else torch.float32
        peak = matmul_peak or matmul_flops_per_s(setup.device, dtype)
        datasheet = datasheet_flops_per_s(setup.device, dtype)
        for row in rows:
            flops = counted_flops(runs[row.method])
            row.gflop_per_step = flops / 1e9
            row.peak_fraction = flops / (row.ms_per_step / 1000) / peak
            row.mfu = None if datasheet is None else flops / (row.ms_per_step / 1000) / datasheet
    return rows


class Side(NamedTuple):
    library: str  # "ours" or "lightly"
    channels_last: bool  # else contiguous tensors
    keep_host_memory: bool  # freed host memory kept (the trainer's setting on the CPU), else glibc's defaults


# "ours" runs as the trainer does, "lightly" as lightly's examples run, "lightly_ours" is
# lightly given our settings, "ours_glibc" ours with glibc's allocator defaults (what keeping
# the memory gains; in processes only).
SIDES = {
    "ours": Side("ours", True, True),
    "lightly": Side("lightly", False, False),
    "lightly_ours": Side("lightly", True, True),
    "ours_glibc": Side("ours", True, False),
}
SIDE_LABELS = {
    "ours": "regioncl",
    "lightly": "lightly",
    "lightly_ours": "lightly, our settings",
    "ours_glibc": "regioncl, glibc defaults",
}


@dataclass
class CompareRow:
    method: str
    timings: dict[str, Timing]  # by side (SIDES); a side not run is absent

    def ms(self, side: str) -> float | None:
        return 1000 * self.timings[side].median if side in self.timings else None


def compare_lightly(
    methods: list[str], setup: Setup | None = None, *, sides: list[str] | None = None, processes: int = 0
) -> list[CompareRow]:
    """Our step against lightly's for each method (:data:`SIDES`).

    With ``processes=0`` every side runs in this process, interleaved per step: the host
    memory setting is this process's for all of them (``keep_freed_host_memory`` is
    process-wide and for good), so only the layout tells "lightly" from "lightly_ours".
    With ``processes=R`` each side runs in processes of its own with its own allocator
    setting, one method per process as in training, ``R`` rounds of one process per method
    and side (order of the sides rotated each round), ``setup.steps`` timed steps in each:
    the sides as each library actually runs.
    ``sides`` defaults to "ours", "lightly" and "lightly_ours"; "ours" is always run.
    """
    setup = setup or Setup()
    sides = compare_sides(sides, processes)
    if processes:
        rows = {name: CompareRow(name, {side: Timing() for side in sides}) for name in methods}
        for r in range(processes):
            for name in methods:
                for side in sides[r % len(sides) :] + sides[: r % len(sides)]:
                    rows[name].timings[side].extend(_side_in_process(setup, side, name))
        return list(rows.values())
    rows = []
    views = {fmt: setup.views(fmt) for fmt in dict.fromkeys(map(_layout, sides))}
    for name in methods:
        runs = {side: _side_step(setup, side, name, views) for side in sides}
        rows.append(CompareRow(name, setup.timings(runs)))
    return rows


def compare_sides(sides: list[str] | None, processes: int) -> list[str]:
    """The sides :func:`compare_lightly` runs: "ours" first, then ``sides`` (default "lightly"
    and "lightly_ours"), each once. Raises ValueError for settings that cannot run."""
    if processes < 0:
        raise ValueError(f"processes must be >= 0, got {processes}")
    sides = list(dict.fromkeys(["ours", *(sides or ("lightly", "lightly_ours"))]))
    if not processes and "ours_glibc" in sides:
        raise ValueError(
            "ours_glibc needs a process of its own (the allocator setting is per process): give processes >= 1"
        )
    return sides


def _layout(side: str) -> torch.memory_format:
    return torch.channels_last if SIDES[side].channels_last else torch.contiguous_format


def _side_step(setup: Setup, side: str, name: str, views: dict[torch.memory_format, list[torch.Tensor]]) -> StepFn:
    fmt = _layout(side)
    return (setup.ours if SIDES[side].library == "ours" else setup.lightly)(name, fmt, views[fmt])


def run_side(setup: Setup, side: str, method: str) -> Timing:
    """One side's steps of one method, alone in a fresh process (``python -m benchmarks.steps``)
    as in a training run: the side's allocator setting first, before the model and views are built.
    (Several models in one process change what the allocator does: with glibc's defaults
    a lone resnet50 MoCo v2 step faulted about 100,000 pages, none with three models in turns.)"""
    if SIDES[side].keep_host_memory:
        keep_freed_host_memory()
    fmt = _layout(side)
    return setup.timings({method: _side_step(setup, side, method, {fmt: setup.views(fmt)})})[method]


_RESULT = "regioncl-benchmark-result: "  # marks the child's result line among whatever else it prints


def _side_in_process(setup: Setup, side: str, method: str) -> Timing:
    """:func:`run_side` in a child process with this process's torch threads. The child runs
    in the repository's root, which ``-m`` puts first on its path: these benchmarks and this
    copy of regioncl, installed or not."""
    spec = {"setup": asdict(setup), "side": side, "method": method, "threads": torch.get_num_threads()}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.steps", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    results = [line[len(_RESULT) :] for line in done.stdout.splitlines() if line.startswith(_RESULT)]
    if done.returncode or not results:
        raise RuntimeError(
            f"benchmark process for {side} {method} failed (exit {done.returncode}):\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    return Timing(**json.loads(results[-1]))


def compare_layouts(methods: list[str], setup: Setup | None = None) -> list[tuple[str, float, float]]:
    """``(method, channels_last ms, contiguous ms)`` per method, the two layouts in turns."""
    setup = setup or Setup()
    rows = []
    for name in methods:
        layouts = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
        medians = setup.time({label: setup.ours(name, fmt, setup.views(fmt)) for label, fmt in layouts.items()})
        rows.append((name, 1000 * medians["channels_last"], 1000 * medians["contiguous"]))
    return rows


def format_compare(rows: list[CompareRow]) -> str:
    """A markdown table: ms per step of each side with its time over ours (> 1: ours faster),
    and each side's median minor page faults per step."""
    sides = [s for s in SIDES if s in rows[0].timings]
    lines = [
        "| method | "
        + " | ".join(f"{SIDE_LABELS[s]} ms / step" for s in sides)
        + " | page faults / step, same order |",
        "|---|" + "---|" * (len(sides) + 1),
    ]
    for r in rows:
        ours = r.ms("ours")
        cells = [f"{ours:.1f}"] + [f"{r.ms(s):.1f} ({r.ms(s) / ours:.2f}×)" for s in sides[1:]]
        faults = ", ".join(f"{r.timings[s].median_faults:.0f}" for s in sides)
        lines.append(f"| {r.method} | " + " | ".join(cells) + f" | {faults} |")
    return "\n".join(lines)


def format_table(rows: list[Row]) -> str:
    """A markdown table with each RegionCL variant's cost relative to its base, measured and by FLOPs
    (backbone passes, :data:`FLOP_UNITS`, and counted FLOPs where measured), and the fraction of
    the matmul throughput achieved."""
    by_name = {r.method: r for r in rows}
    lines = [
        "| method | ms / step | images / s | time vs base | FLOP ratio | measured / FLOP | GFLOP / step "
        "| counted FLOP ratio | measured / counted | of matmul peak | MFU (datasheet) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = by_name.get(BASE_OF.get(r.method, ""))
        counted = "" if r.gflop_per_step is None else f"{r.gflop_per_step:.1f}"
        peak = "" if r.peak_fraction is None else f"{100 * r.peak_fraction:.0f} %"
        mfu = "" if r.mfu is None else f"{100 * r.mfu:.0f} %"
        if base is None:
            lines.append(
                f"| {r.method} | {r.ms_per_step:.1f} | {r.images_per_s:.1f} | 1.00 | 1.00 | | {counted} | 1.00 | "
                f"| {peak} | {mfu} |"
            )
            continue
        ratio = r.ms_per_step / base.ms_per_step
        flops = FLOP_UNITS[r.method] / FLOP_UNITS[base.method]
        by_count = (
            ("", "")
            if r.gflop_per_step is None or base.gflop_per_step is None
            else (
                f"{r.gflop_per_step / base.gflop_per_step:.2f}",
                f"{ratio / (r.gflop_per_step / base.gflop_per_step):.2f}",
            )
        )
        lines.append(
            f"| {r.method} | {r.ms_per_step:.1f} | {r.images_per_s:.1f} | {ratio:.2f} | {flops:.2f} | "
            f"{ratio / flops:.2f} | {counted} | {by_count[0]} | {by_count[1]} | {peak} | {mfu} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # a side of compare_lightly(processes=R): JSON spec in, JSON timings out
    _spec = json.loads(sys.argv[1])
    torch.set_num_threads(_spec["threads"])
    print(_RESULT + json.dumps(asdict(run_side(Setup(**_spec["setup"]), _spec["side"], _spec["method"]))), flush=True)
