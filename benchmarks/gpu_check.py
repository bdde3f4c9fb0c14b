"""The prepared check for a lent GPU: does every method run there, how fast, and does the CPU keep up.

    scripts/gpu_check.sh OUT_DIR              # installs what is missing from the wheel bundle, then runs
    python -m benchmarks.gpu_check OUT_DIR     # in an environment that has regioncl's dependencies
    python -m benchmarks.gpu_check OUT_DIR --dry-run --device cpu    # every stage, tiny, on a CPU

Stages, each in a process of its own with its own time budget; after each, its record (status
ok / failed / timeout / missing, seconds, result or error) is written to OUT_DIR/gpu_check.json,
so a run cut short still returns what it did, and a stage that fails, times out or lacks a
package does not stop the next. The first record, ``environment``, names the interpreter, the
packages and where each was loaded from, the GPU and its driver, and the wheel bundle with the
seconds its install took:

* ``methods``: every method for 20 steps on ResNet-50 at 224 px, bf16 autocast, channels_last,
  with and without the device augmentation, at the largest power-of-two batch that fits (a
  doubling search): finite losses, peak memory, host reads per step (syncs), images/s;
* ``throughput``: the step-time table of ``regioncl benchmark`` (RegionCL-X / X against the FLOP
  ratio, fraction of the matmul peak, MFU against the datasheet), the same compiled, and regioncl
  against lightly for MoCo v2, DenseCL and SimSiam when lightly is installed;
* ``pipeline``: the two-view pipeline per worker on generated ImageNet-sized JPEGs (with the colour
  ops in the workers, and decode + crop only for ``--gpu-augment``), times the machine's cores,
  against the GPU's step rate of the ``methods`` stage: does the CPU feed the GPU;
* ``fmnist``: if time is left, RegionCL-M against MoCo v2 on Fashion-MNIST at 64 px for a few
  epochs each (needs ``data/fashion-mnist``: scripts/prepare_fashion_mnist.py, which
  scripts/gpu_check.sh runs from the IDX files of a bundle made with ``--fashion-mnist``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from regioncl.files import atomic_write

STAGES = ("methods", "throughput", "pipeline", "fmnist")
# Together (510 s) with the install from the bundle and Fashion-MNIST's folders, inside one call of
# the device tool (600 s at most), so that the first lent machine gives every figure in one run.
BUDGET_S = {"methods": 150, "throughput": 180, "pipeline": 60, "fmnist": 120}
# The modules each stage imports beyond torch: a stage whose modules are absent is recorded as
# "missing" with their names, without spending its budget, and the next stage runs.
NEEDS = {
    "methods": ("timm", "safetensors"),
    "throughput": ("timm", "safetensors"),
    "pipeline": ("timm", "PIL"),
    "fmnist": (
        "timm",
        "accelerate",
        "safetensors",
        "jsonargparse",
        "docstring_parser",
        "datasets",
        "yaml",
        "tqdm",
        "PIL",
    ),
}
# The packages whose versions the environment record names.
PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "accelerate",
    "safetensors",
    "huggingface-hub",
    "datasets",
    "jsonargparse",
    "docstring-parser",
    "numpy",
    "pillow",
    "pyarrow",
    "lightly",
)


class HostReads(TorchDispatchMode):
    """Counts the operations that make the host wait for an accelerator: reading a float value
    (``.item()``, ``float()``) and ``nonzero`` (its output size depends on the data). Integer reads
    of host-side draws (the box, π, a batch's bad-image count) are not counted: they never touch
    the device. ``with HostReads() as reads: ...``, then ``reads.count``."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    @property
    def count(self) -> int:
        return len(self.reads)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if "nonzero" in name or (name.endswith("_local_scalar_dense") and args and args[0].is_floating_point()):
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


def _step_fn(
    method: str, backbone: str, backbone_args: dict, size: int, batch: int, device: torch.device, gpu_augment: bool
) -> Callable[[int], float]:
    """One training step of ``method`` on random uint8 views (the trainer's path: to the device,
    augmented there or normalised, bf16 autocast on a GPU, backward, SGD)."""
    from regioncl.backbones import create_encoder
    from regioncl.data.views import BatchedMoCoV2, normalize
    from regioncl.methods import build_method

    model = (
        build_method(method, create_encoder(backbone, **backbone_args), queue_size=max(4096, 4 * batch), pred_dim=512)
        .to(device)
        .to(memory_format=torch.channels_last)
    )
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    views = torch.randint(0, 256, (2, batch, 3, size, size), dtype=torch.uint8)
    augment = BatchedMoCoV2(size) if gpu_augment else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(i: int) -> torch.Tensor:
        x = []
        for v in views:
            v = v.to(device, non_blocking=True)
            g = torch.Generator(device=device).manual_seed(i)
            x.append((augment(v, g) if augment else normalize(v)).contiguous(memory_format=torch.channels_last))
        with autocast:
            loss = model(x[0], x[1], step=i)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def stage_methods(dry: bool, device: torch.device) -> dict[str, Any]:
    from regioncl.methods import METHODS

    backbone, args, size = ("resnet10t", {"output_stride": 8}, 32) if dry else ("resnet50", {}, 224)
    steps, batches = (2, [4, 8]) if dry else (20, [2**k for k in range(5, 11)])
    results = {}
    for method in METHODS:
        for gpu_augment in (False, True):
            fits = None
            for batch in batches:  # doubling: the largest that runs two steps
                try:
                    step = _step_fn(method, backbone, args, size, batch, device, gpu_augment)
                    step(0), step(1)
                    fits = batch
                except torch.OutOfMemoryError:
                    break
                finally:
                    step = None
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            if fits is None:
                results[f"{method}, augment on device={gpu_augment}"] = {"error": "no batch fits"}
                continue
            step = _step_fn(method, backbone, args, size, fits, device, gpu_augment)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            step(0)
            counter = HostReads()
            losses, start = [], time.perf_counter()
            with counter:
                for i in range(1, steps + 1):
                    losses.append(step(i))
            losses = torch.stack(losses).float().tolist()
            seconds = time.perf_counter() - start
            results[f"{method}, augment on device={gpu_augment}"] = {
                "batch": fits,
                "finite": all(math.isfinite(v) for v in losses),
                "losses": losses,
                "host_reads_per_step": counter.count / steps,
                "images_per_s": fits * steps / seconds,
                "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            }
    return results


def stage_throughput(dry: bool, device: torch.device) -> dict[str, Any]:
    from benchmarks.steps import Setup, benchmark, compare_lightly, format_compare, format_table
    from regioncl.methods import METHODS

    setup = (
        Setup(
            backbone="resnet10t",
            backbone_args={"output_stride": 8},
            image_size=32,
            batch_size=8,
            steps=2,
            warmup=1,
            device=str(device),
            precision="fp32",
        )
        if dry
        else Setup(
            backbone="resnet50",
            backbone_args={},
            image_size=224,
            batch_size=128,
            steps=10,
            warmup=3,
            device=str(device),
            precision="bf16",
        )
    )
    out: dict[str, Any] = {"eager": format_table(benchmark(sorted(METHODS), setup))}
    if not dry:
        setup.compile = True
        out["compiled"] = format_table(benchmark(sorted(METHODS), setup))
        setup.compile = False
    import importlib.util

    if importlib.util.find_spec("lightly") is None:
        out["lightly"] = "lightly is not installed: pip install -e '.[bench]'"
    else:
        out["lightly"] = format_compare(compare_lightly(["mocov2", "densecl", "simsiam"], setup))
    return out


def stage_pipeline(dry: bool, device: torch.device, methods: dict[str, Any] | None = None) -> dict[str, Any]:
    from benchmarks.pipeline import pipeline_benchmark, write_jpegs

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as folder:
        write_jpegs(folder, 8 if dry else 200, 500, 375)
        rows = pipeline_benchmark(folder, 32 if dry else 224, rounds=1 if dry else 3)
    per_worker = {r.name: r.images_per_s for r in rows}
    ours = per_worker.get("regioncl MoCoV2Views, uint8 views")
    out = {
        "per_worker_images_per_s": per_worker,
        "cores": cores,
        "cpu_images_per_s_all_cores": None if ours is None else ours * max(1, cores - 1),
    }
    if methods:
        fastest = max((v.get("images_per_s", 0) for v in methods.values() if isinstance(v, dict)), default=0)
        out["gpu_images_per_s_fastest_method"] = fastest
        out["cpu_keeps_up"] = None if ours is None else ours * max(1, cores - 1) >= fastest
    return out


def stage_fmnist(dry: bool, device: torch.device, data: Path = Path("data/fashion-mnist")) -> dict[str, Any]:
    if not (data / "train").is_dir():
        raise FileNotFoundError(f"{data / 'train'} is missing: python scripts/prepare_fashion_mnist.py {data}")
    out: dict[str, Any] = {}
    for method in ("regioncl_m", "mocov2"):
        with tempfile.TemporaryDirectory() as run:
            command = [
                sys.executable,
                "-m",
                "regioncl",
                "pretrain",
                "--config",
                f"fmnist_{method}",
                "--data.image_size",
                "64",
                "--optim.epochs",
                "1" if dry else "3",
                "--run.output_dir",
                run,
                "--data.source",
                str(data / "train"),
                "--knn.train_data",
                str(data / "train"),
                "--knn.val_data",
                str(data / "test"),
            ]
            if dry:
                command += [
                    "--optim.max_steps",
                    "2",
                    "--knn.enabled",
                    "false",
                    "--optim.batch_size",
                    "8",
                    "--method.queue_size",
                    "64",
                    "--data.image_size",
                    "32",
                ]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(done.stderr[-2000:])
            out[method] = json.loads(done.stdout[done.stdout.index("{") :])
    return out


def absent_modules(names: tuple[str, ...]) -> list[str]:
    import importlib.util

    return [n for n in names if importlib.util.find_spec(n) is None]


def environment(device: str) -> dict[str, Any]:
    """What ran the check: interpreter, packages (and where from), the device, the bundle used."""
    import importlib.metadata
    import platform

    versions = {}
    for name in PACKAGES:
        try:
            dist = importlib.metadata.distribution(name)
            versions[name] = {"version": dist.version, "at": str(dist.locate_file(""))}
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": versions,
        "device": device,
        "torch_cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out["gpu"] = {
            "name": props.name,
            "memory_gib": props.total_memory / 2**30,
            "multiprocessors": props.multi_processor_count,
            "capability": f"{props.major}.{props.minor}",
        }
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            out["gpu"]["driver"] = smi.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            out["gpu"]["driver"] = None
    bundle = Path(os.environ.get("REGIONCL_BUNDLE", ".bundle")) / "bundle.json"
    if bundle.is_file():
        manifest = json.loads(bundle.read_text())
        out["bundle"] = {
            "wheels": {k: v["version"] for k, v in manifest["wheels"].items()},
            "missing": manifest["missing"],
            "python": manifest["python"],
            "install_seconds": (
                float(os.environ["REGIONCL_BUNDLE_INSTALL_S"]) if os.environ.get("REGIONCL_BUNDLE_INSTALL_S") else None
            ),
        }
    return out


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(records, indent=1, default=str) + "\n"))


def run_all(
    out: Path,
    dry: bool,
    device: str,
    stages: list[str],
    budgets: dict[str, float],
    fmnist_data: Path = Path("data/fashion-mnist"),
) -> list[dict[str, Any]]:
    """Every stage in a child process under its budget; the records, each written as soon as known."""
    out.mkdir(parents=True, exist_ok=True)
    path, records = out / "gpu_check.json", []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    records.append({"stage": "environment", "status": "ok", "result": environment(device)})
    _write(path, records)
    for name in stages:
        absent = absent_modules(NEEDS[name])
        if absent:
            records.append(
                {
                    "stage": name,
                    "status": "missing",
                    "seconds": 0.0,
                    "error": f"needs {', '.join(absent)}, not installed here (carry them: "
                    "python scripts/wheel_bundle.py, then scripts/gpu_check.sh installs them)",
                }
            )
            _write(path, records)
            print(f"{name}: missing {', '.join(absent)}", flush=True)
            continue
        result = out / f"{name}.json"
        command = [
            sys.executable,
            "-m",
            "benchmarks.gpu_check",
            str(out),
            "--stage",
            name,
            "--device",
            device,
            "--fmnist-data",
            str(fmnist_data),
        ]
        if dry:
            command.append("--dry-run")
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=budgets[name], env=env)
            record = {
                "stage": name,
                "status": "ok" if done.returncode == 0 else "failed",
                "seconds": time.perf_counter() - start,
            }
            if done.returncode == 0:
                record["result"] = json.loads(result.read_text())
            else:
                record["error"] = done.stderr[-3000:]
        except subprocess.TimeoutExpired:
            record = {
                "stage": name,
                "status": "timeout",
                "seconds": time.perf_counter() - start,
                "error": f"over its budget of {budgets[name]} s",
            }
        records.append(record)
        _write(path, records)
        print(f"{name}: {record['status']} in {record['seconds']:.0f} s", flush=True)
    return records


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="folder for gpu_check.json (and one file per stage)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dry-run", action="store_true", help="tiny model and batch: every stage in a minute or two")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--budget", nargs="+", default=[], metavar="STAGE=SECONDS", help="another time budget for a stage")
    p.add_argument("--fmnist-data", type=Path, default=Path("data/fashion-mnist"), help="the fmnist stage's data")
    p.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # the child process of one stage
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if a.stage is None:
        budgets = {**BUDGET_S, **{k: float(v) for k, v in (b.split("=", 1) for b in a.budget)}}
        run_all(a.out, a.dry_run, a.device, a.stages, budgets, a.fmnist_data.resolve())
        return
    if a.stage == "pipeline":
        methods = a.out / "methods.json"
        result = stage_pipeline(a.dry_run, device, json.loads(methods.read_text()) if methods.is_file() else None)
    else:
        result = (
            stage_fmnist(a.dry_run, device, a.fmnist_data)
            if a.stage == "fmnist"
            else {"methods": stage_methods, "throughput": stage_throughput}[a.stage](a.dry_run, device)
        )
    result_path = a.out / f"{a.stage}.json"
    result_path.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
