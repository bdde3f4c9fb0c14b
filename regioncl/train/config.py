"""Pretraining configuration: defaults, recipe files and command-line overrides.

A recipe is a YAML file whose keys are fields of :class:`PretrainConfig`. The
shipped recipes live in ``regioncl/recipes/`` and are found by name
(``--config regioncl_m_r50``) as well as by path. Defaults are the built-in
sample run: RegionCL-M, a small ResNet, 32 px, a few minutes on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs. Field comments give units and meaning."""

    # What to train.
    method: str = "regioncl_m"  # mocov2 regioncl_m regioncl_m_noswap densecl regioncl_d simsiam regioncl_s
    backbone: str = "resnet10t"  # any timm CNN, or resnet50w2 / resnet50w4
    backbone_args: dict[str, Any] = field(default_factory=lambda: {"output_stride": 8})  # extra timm.create_model kwargs
    # Data.
    data: str = "sample"  # "sample", a folder path, or "hf:ID_OR_PATH[:SPLIT]"
    streaming: bool = False  # stream an hf: source instead of downloading/loading it whole
    image_column: str | None = None
    label_column: str | None = None
    image_size: int = 32  # pixels; a multiple of the backbone's output stride
    num_workers: int | None = None  # DataLoader workers per process; None: cores - 1, at most 8
    prefetch_factor: int = 2  # batches each worker prepares ahead
    pin_memory: bool | None = None  # page-locked host batches; None: on CUDA only
    persistent_workers: bool = True  # keep workers between epochs (folders; a stream restarts them each epoch)
    shuffle_buffer: int = 10_000  # examples, for streaming sources
    gpu_augment: bool = False  # workers only decode and crop; colour, grayscale, blur and flip run batched on the device
    max_bad_fraction: float = 0.01  # stop when more than this fraction of images read is unreadable
    # Optimisation (SPEC §8): SGD, cosine, per-step.
    batch_size: int = 128  # global: per-process batch × processes
    epochs: int = 6
    max_steps: int | None = None  # cap on the total steps (shortens the cosine schedule too)
    stop_at_step: int | None = None  # stop early *without* changing the schedule (split a run into jobs)
    lr: float = 0.03  # for the global batch
    warmup_epochs: float = 1.0  # the paper uses none; a short run needs it while the queue fills
    sgd_momentum: float = 0.9
    weight_decay: float = 1e-4
    # Method (SPEC §3, §6).
    queue_size: int = 1024  # 65,536 in the paper's recipes; small data wants a queue that refreshes fast
    temperature: float = 0.2
    key_momentum: float = 0.99  # 0.999 in the paper's recipes
    proj_hidden_dim: int | None = None  # None: the method's (2048)
    proj_dim: int | None = None  # None: the method's (128 for MoCo v2 / DenseCL, 2048 for SimSiam)
    pred_dim: int | None = None  # SimSiam's predictor bottleneck; None: 512
    dense_weight: float = 0.5  # DenseCL's λ
    fix_pred_lr: bool = True  # SimSiam: the predictor's lr stays at `lr`, off the schedule
    sync_bn: bool = True  # SimSiam: synchronise BN across processes where the backend can
    bn_groups: int | None = None  # None: 2 in one process, 1 across processes (shuffle-BN)
    region_cells: list[int] | None = None  # [lo, hi] box sides in feature cells; None scales 3–5 of 7
    pairing: str = "derangement"  # or "reverse" (the authors')
    region_weight: float | None = None  # None: the method's (1; 1 − λ for RegionCL-D, our choice)
    # Evaluation: kNN top-1 on a held-out split before and after training (SPEC §10).
    knn: bool = True
    knn_every: int = 0  # epochs between kNN evaluations during training; 0: before and after only
    knn_k: int = 200
    knn_temperature: float = 0.07
    knn_train_data: str | None = None  # defaults to `data` (train split) for "sample"
    knn_val_data: str | None = None  # defaults to the sample set's val split
    # Run management.
    output_dir: str = "runs/default"
    seed: int = 0
    log_every: int = 10  # steps
    checkpoint_every: int = 200  # steps
    keep_checkpoints: int = 2
    resume: str | None = None  # "latest" or a checkpoint / output folder
    channels_last: bool = True
    keep_host_memory: bool | None = None  # glibc keeps freed memory for the next step (no page faults); None: when training on the CPU
    compile: bool = False  # torch.compile the encoders in place (Module.compile): ~4 % faster per step on a 2-core CPU after a 1-2 min compile
    log_with: list[str] | None = None  # Accelerate trackers, e.g. ["tensorboard"]

    def validate(self) -> None:
        """Refuse values that can only fail later, with a message naming the field."""
        positive = ["image_size", "batch_size", "epochs", "queue_size", "log_every", "checkpoint_every",
                    "proj_dim", "proj_hidden_dim", "pred_dim"]
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.temperature <= 0:
            raise ValueError("lr and temperature must be positive")
        if not 0.0 <= self.key_momentum < 1.0:
            raise ValueError(f"key_momentum must be in [0, 1), got {self.key_momentum}")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        if self.region_cells is not None and len(self.region_cells) != 2:
            raise ValueError(f"region_cells must be [lo, hi], got {self.region_cells}")
        if self.streaming and self.max_steps is None:
            raise ValueError("a streamed dataset has no length: give max_steps (--max-steps) to fix the schedule")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError("num_workers must be >= 0")

    @property
    def workers(self) -> int:
        """DataLoader workers per process: ``num_workers``, or one core short of all, at most 8."""
        if self.num_workers is not None:
            return self.num_workers
        return max(0, min(8, (os.cpu_count() or 1) - 1))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def find_recipe(name_or_path: str) -> Path:
    """A recipe path from a file path or a shipped recipe name (``regioncl_m_r50``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"no recipe file {name_or_path!r} and no shipped recipe of that name; shipped: {names}")


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """Read a recipe and check that every key is a config field."""
    path = find_recipe(name_or_path)
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"recipe {path} must be a mapping of config fields")
    check_keys(values, f"recipe {path}")
    return values


def check_keys(values: dict[str, Any], where: str) -> None:
    known = {f.name for f in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known fields: {sorted(known)}")


def make_config(recipe: str | None = None, overrides: dict[str, Any] | None = None) -> PretrainConfig:
    """Defaults ← recipe ← overrides (``None`` values in overrides are ignored)."""
    values: dict[str, Any] = load_recipe(recipe) if recipe else {}
    extra = {k: v for k, v in (overrides or {}).items() if v is not None}
    check_keys(extra, "overrides")
    values.update(extra)
    cfg = PretrainConfig(**values)
    cfg.validate()
    return cfg


def config_json(cfg: PretrainConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)


def _field_help() -> dict[str, str]:
    """The trailing comment of each field in this file's PretrainConfig, as --help text."""
    import inspect
    import re

    pattern = re.compile(r"^\s+(\w+):[^#]*#\s*(.+)$")
    return {m.group(1): m.group(2) for m in map(pattern.match, inspect.getsource(PretrainConfig).splitlines()) if m}


def add_config_arguments(parser: "argparse.ArgumentParser") -> None:
    """One ``--flag`` per config field (``--batch-size`` for ``batch_size``), default ``None``
    so that only what is given overrides the recipe. Booleans get ``--x/--no-x``."""
    import argparse
    import types
    import typing

    helps = _field_help()
    hints = typing.get_type_hints(PretrainConfig)
    for f in dataclasses.fields(PretrainConfig):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None → X
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        base = hint
        kw: dict[str, Any] = {"default": None, "help": helps.get(f.name)}
        if f.name == "resume":
            kw.update(nargs="?", const="latest", help="resume from PATH, or from the newest checkpoint of --output-dir")
        elif base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is dict:
            kw.update(type=json.loads, metavar="JSON")
        elif typing.get_origin(base) is list:
            item = typing.get_args(base)[0]
            kw.update(type=item, nargs=2 if item is int else "+")
        else:
            kw["type"] = base
        parser.add_argument(flag, **kw)
