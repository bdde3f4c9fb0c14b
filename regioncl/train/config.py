"""Pretraining configuration: six sections, the paper's defaults, recipes that inherit and override.

The defaults of every field are the paper's (RegionCL-M, ResNet-50, SPEC §3 and §8). A recipe
is a YAML file of sections that states only what differs from its ``base`` (another recipe, or
the defaults)::

    # regioncl/recipes/mocov2_r50.yaml
    base: regioncl_m_r50
    model: {method: mocov2}
    run: {output_dir: runs/mocov2_r50}

The shipped recipes live in ``regioncl/recipes/`` and are found by name as well as by path;
``sample`` is the CPU run on the built-in data that ``scripts/pretrain.py`` uses when no recipe
is given. On the command line every field is an option named by its section
(``--optim.lr 0.1``, ``--model.backbone resnet18``, ``--run.compile true``), parsed and
type-checked by jsonargparse; ``--print_recipe`` prints the resolved configuration (a recipe
in itself), ``--help`` every field with its help text and the recipe's value.

Fields that may change when a run is resumed (logging, checkpoint cadence, workers, the kNN
monitor...) say so in their metadata (:data:`MAY_CHANGE`); every other field must match the
checkpoint's.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError, UserFileNotFoundError
from ..files import legacy_name

RECIPES_DIR = Path(str(resources.files("regioncl") / "recipes"))  # in the wheel too (package data)
#: the recipe a run uses when none is given: the CPU sample run.
DEFAULT_RECIPE = "sample"
#: run.precision's values, and what Accelerate calls them
PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
#: field metadata: this field may differ between a run and its resumption.
MAY_CHANGE = {"may_change_on_resume": True}


def _resumable(default: Any = None, **kwargs: Any) -> Any:
    """A field that may change when the run is resumed (run management, not the computation)."""
    if "default_factory" in kwargs:
        return field(metadata=MAY_CHANGE, **kwargs)
    return field(default=default, metadata=MAY_CHANGE, **kwargs)


@dataclass
class ModelConfig:
    """What to train."""

    method: str = "regioncl_m"
    """mocov2, regioncl_m, regioncl_m_noswap, densecl, regioncl_d, simsiam or regioncl_s"""
    backbone: str = "resnet50"
    """any timm CNN, or resnet50w2 / resnet50w4 (the paper's widths)"""
    backbone_args: dict[str, Any] = field(default_factory=lambda: {"zero_init_last": False})
    """extra timm.create_model arguments, e.g. {"output_stride": 8}; MoCo trains torchvision-style
    ResNets (no zero-initialised residual branch), SimSiam zero-initialises them"""
    init: str | None = None
    """start from these encoder weights instead of a random init: "timm" (timm's pretrained weights
    for the backbone; "timm:TAG" for another tag; an offline Hub cache is honoured), a run,
    checkpoint or export folder, a weights file, local-dir:PATH or hf-hub:ID; loaded into the
    online (and key) encoder at step 0, never again on resume"""


@dataclass
class MethodConfig:
    """The method's settings (SPEC §3–7)."""

    queue_size: int = 65536
    """keys in the queue (MoCo v2, DenseCL); a small data set wants a queue that refreshes fast"""
    temperature: float = 0.2
    """InfoNCE temperature"""
    key_momentum: float = 0.999
    """momentum of the key encoder"""
    proj_hidden_dim: int | None = None
    """projector hidden width; null: the method's (2048)"""
    proj_dim: int | None = None
    """projector output width; null: the method's (128 for MoCo v2 / DenseCL, 2048 for SimSiam)"""
    pred_dim: int | None = None
    """SimSiam's predictor bottleneck; null: 512"""
    dense_weight: float = 0.5
    """DenseCL's λ: L = (1 − λ) L_ins + λ L_dense"""
    bn_groups: int | None = None
    """sub-batches of the shuffled keys with their own BN statistics; null: 2 in one process, 1 across processes"""
    sync_bn: bool = True
    """SimSiam: synchronise batch norm across processes where the backend can"""
    region_cells: list[int] | None = None
    """[lo, hi] box sides in feature cells; null: the authors' 3–5 of a 7×7 grid, scaled"""
    pairing: str = "derangement"
    """which image's region composite i receives: derangement, or reverse (the authors')"""
    region_weight: float | None = None
    """weight of L_reg; null: the method's (1; 1 − λ for RegionCL-D, our choice)"""
    region_warmup: bool = False
    """ramp the weight of L_reg up from 0 over the learning rate's warm-up (optim.warmup_epochs), as
    the lr is; false: the full weight from the first step, as the paper"""
    region_min_content: float = 0.0
    """leave out of L_reg the paste and canvas rows whose pixels hold content (differ from their
    image's border) in less than this share: boxes on empty background, for objects on a plain
    ground; 0: every row, as the paper"""


@dataclass
class DataConfig:
    """The training images and the loaders that read them."""

    source: str = "sample"
    """"sample" (the built-in set), a folder, or "hf:ID_OR_PATH[:SPLIT]" (Hugging Face datasets)"""
    image_size: int = 224
    """pixels; a multiple of the backbone's output stride"""
    streaming: bool = False
    """stream an hf: source instead of loading it whole (needs optim.max_steps)"""
    image_column: str | None = None
    """hf: image column; null: detected"""
    label_column: str | None = None
    """hf: label column; null: detected"""
    shuffle_buffer: int = 10_000
    """examples, for streamed sources"""
    gpu_augment: bool = False
    """workers only decode and crop; colour, grayscale, blur and flip run batched on the device"""
    num_workers: int | None = _resumable(None)
    """DataLoader workers per process; null: cores − 1, at most 8"""
    prefetch_factor: int = _resumable(2)
    """batches each worker prepares ahead"""
    pin_memory: bool | None = _resumable(None)
    """page-locked host batches; null: on CUDA only"""
    persistent_workers: bool = _resumable(True)
    """keep workers between epochs (folders; a stream restarts them each epoch)"""
    max_bad_fraction: float = _resumable(0.01)
    """stop (after a checkpoint) when more than this fraction of the images read is unreadable..."""
    max_bad_images: int = _resumable(50)
    """...and more than this many per pass over the data: a few bad files in a small folder are
    skipped, logged and counted, never a reason to stop"""
    read_retries: int = _resumable(5)
    """a stream whose read fails (a network error) is read again from the same example this many
    times, waiting 1, 2, 4... s, before the run stops with an error naming the shard"""

    @property
    def workers(self) -> int:
        """DataLoader workers per process: ``num_workers``, or one core short of all, at most 8."""
        from ..distributed import default_workers

        return default_workers(self.num_workers)


@dataclass
class OptimConfig:
    """SGD with a per-step schedule: linear warm-up, then half a cosine (SPEC §8)."""

    batch_size: int = 1024
    """global: per-process batch × processes"""
    lr: float = 0.15
    """for the global batch"""
    epochs: int = 200
    max_steps: int | None = None
    """cap on the total steps (shortens the cosine schedule too); a stream needs it"""
    warmup_epochs: float = 0.0
    """the paper uses none; a short run needs some while the queue fills"""
    momentum: float = 0.9
    """SGD momentum"""
    weight_decay: float = 1e-4
    fix_pred_lr: bool = True
    """SimSiam: the predictor's lr stays at optim.lr, off the schedule"""


@dataclass
class KnnConfig:
    """The kNN monitor: top-1 on a held-out split before and after training, and every few epochs (SPEC §10)."""

    enabled: bool = _resumable(True)
    """run it (it is skipped when no labelled evaluation data is known)"""
    every: int = _resumable(0)
    """epochs between evaluations during training; 0: before and after only"""
    k: int = _resumable(200)
    temperature: float = _resumable(0.07)
    train_data: str | None = _resumable(None)
    """the bank; null: the training data's train split for "sample", else none"""
    val_data: str | None = _resumable(None)
    """the queries; null: the sample set's val split for "sample", else none"""


@dataclass
class RunConfig:
    """Where the run goes and how it is managed."""

    output_dir: str = _resumable("runs/default")
    seed: int = 0
    log_every: int = _resumable(10)
    """steps between metric records"""
    checkpoint_every: int = _resumable(200)
    """steps between checkpoints"""
    keep_checkpoints: int = _resumable(2)
    """checkpoints kept (oldest deleted first)"""
    resume: str | None = _resumable(None)
    """"latest" (the newest checkpoint of run.output_dir; an error when there is none), "auto" (that
    one, or step 0 when there is none: for jobs that are requeued), or a checkpoint or output folder"""
    stop_at_step: int | None = _resumable(None)
    """stop early without changing the schedule (a run split into jobs)"""
    channels_last: bool = True
    """channels_last tensors (fastest for ResNets on GPUs and on most CPUs)"""
    precision: str | None = None
    """fp32, bf16 or fp16 (autocast; fp16 with loss scaling, GPUs only); null: what `accelerate
    launch --mixed_precision` says, else fp32. The run records the precision it trained in"""
    compile: bool = _resumable(False)
    """torch.compile the encoders in place (Module.compile)"""
    keep_host_memory: bool | None = _resumable(None)
    """glibc keeps freed memory for the next step (no page faults); null: when training on the CPU"""
    log_with: list[str] | None = _resumable(None)
    """Accelerate trackers, e.g. [tensorboard]"""
    stop_signals: list[str] = _resumable(default_factory=lambda: ["SIGTERM", "SIGINT", "SIGUSR1"])
    """signals that save a checkpoint at the next step and stop (exit status 75); [] leaves them alone"""
    requeue_on_signal: bool = _resumable(False)
    """after such a stop, requeue the SLURM job (scontrol requeue $SLURM_JOB_ID)"""
    on_nonfinite: str = _resumable("stop")
    """at a NaN/Inf loss: stop (exit status 65), or rollback to the last good checkpoint and go on
    past the offending steps; never a checkpoint from those weights"""
    max_rollbacks: int = _resumable(3)
    """rollbacks allowed in one run before it stops anyway"""
    region_warning: float | None = _resumable(0.15)
    """RegionCL runs: warn once (log and metrics.jsonl) when the instance or the region loss has climbed
    back this fraction of the way from its lowest to chance, for three records in a row: the region task
    working against the instance task, or not being learnt, where the base method may give the better
    encoder; null: never"""
    diagnose_every: int = _resumable(0)
    """RegionCL-M and -D runs: every this many steps, a record of metrics.jsonl with the two losses'
    gradient norms and cosine at the encoder, the share of region rows without content and their
    loss (regioncl/train/region_diagnostics.py); about one more step's compute each; 0: never"""
    on_save_error: str = _resumable("stop")
    """when a periodic checkpoint cannot be written (a full disk): stop (exit status 74), or continue
    training and try again at the next one"""


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "method": MethodConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "knn": KnnConfig,
    "run": RunConfig,
}


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs, in sections; see the module docstring."""

    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        """Refuse values that can only fail later, with a message naming the field."""
        positive = {
            "data.image_size": self.data.image_size,
            "optim.batch_size": self.optim.batch_size,
            "optim.epochs": self.optim.epochs,
            "method.queue_size": self.method.queue_size,
            "run.log_every": self.run.log_every,
            "run.checkpoint_every": self.run.checkpoint_every,
            "method.proj_dim": self.method.proj_dim,
            "method.proj_hidden_dim": self.method.proj_hidden_dim,
            "method.pred_dim": self.method.pred_dim,
            "optim.lr": self.optim.lr,
            "method.temperature": self.method.temperature,
        }
        for name, value in positive.items():
            if value is not None and value <= 0:
                raise UserError(f"{name} must be positive, got {value}")
        if not 0.0 <= self.method.key_momentum < 1.0:
            raise UserError(f"method.key_momentum must be in [0, 1), got {self.method.key_momentum}")
        if not 0.0 <= self.data.max_bad_fraction <= 1.0:
            raise UserError(f"data.max_bad_fraction must be in [0, 1], got {self.data.max_bad_fraction}")
        for name, value in {
            "data.max_bad_images": self.data.max_bad_images,
            "run.diagnose_every": self.run.diagnose_every,
            "optim.max_steps": self.optim.max_steps,
            "optim.warmup_epochs": self.optim.warmup_epochs,
        }.items():
            if value is not None and value < 0:
                raise UserError(f"{name} must be >= 0, got {value}")
        if self.run.precision not in (None, *PRECISIONS):
            raise UserError(f"run.precision must be one of {list(PRECISIONS)} (or null), got {self.run.precision!r}")
        if self.method.region_cells is not None and len(self.method.region_cells) != 2:
            raise UserError(f"method.region_cells must be [lo, hi], got {self.method.region_cells}")
        region_options = [
            f"method.{f.name}"
            for f in dataclasses.fields(MethodConfig)
            if (f.name.startswith("region_") or f.name == "pairing") and getattr(self.method, f.name) != f.default
        ]
        if region_options:
            # imported only here: the methods bring torch, which a plain config does not need
            from ..methods import BASE_OF

            if self.model.method not in BASE_OF:
                region_of = {base: name for name, base in reversed(BASE_OF.items())}
                raise UserError(
                    f"{', '.join(region_options)} set for {self.model.method}, which has no region task: "
                    f"leave {'it' if len(region_options) == 1 else 'them'} out, or train "
                    f"--model.method {region_of.get(self.model.method, 'regioncl_m')}"
                )
        if self.method.dense_weight != MethodConfig.dense_weight:
            from ..methods import METHODS, DenseCL

            if self.model.method in METHODS and not issubclass(METHODS[self.model.method][0], DenseCL):
                raise UserError(
                    f"method.dense_weight set for {self.model.method}, which has no dense loss: leave it out, "
                    "or train --model.method densecl or regioncl_d"
                )
        bank, queries = self.knn_data()
        if self.knn.enabled and (bank is None) != (queries is None):
            given, missing = ("knn.train_data", "knn.val_data") if bank else ("knn.val_data", "knn.train_data")
            raise UserError(
                f"{given} without {missing}: the kNN monitor needs a labelled bank and other labelled "
                "images to score, or neither (--knn.enabled false)"
            )
        if self.data.streaming and self.optim.max_steps is None:
            raise UserError("a streamed dataset has no length: give optim.max_steps to fix the schedule")
        if self.data.num_workers is not None and self.data.num_workers < 0:
            raise UserError("data.num_workers must be >= 0")
        choices = {
            "run.on_nonfinite": (self.run.on_nonfinite, ("stop", "rollback")),
            "run.on_save_error": (self.run.on_save_error, ("stop", "continue")),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise UserError(f"{name} must be one of {list(allowed)}, got {value!r}")
        import signal

        unknown = [s for s in self.run.stop_signals if not isinstance(getattr(signal, str(s), None), signal.Signals)]
        if unknown:
            raise UserError(f"run.stop_signals: unknown signal(s) {unknown}; e.g. SIGTERM, SIGUSR1, SIGINT")
        if self.data.read_retries < 0:
            raise UserError("data.read_retries must be >= 0")

    def knn_data(self) -> tuple[str | None, str | None]:
        """The kNN monitor's bank and queries: those given, or the sample set's train and val splits
        when training on it; None where there is none."""
        bank = self.knn.train_data or ("sample" if self.data.source == "sample" else None)
        return bank, self.knn.val_data or ("sample" if bank == "sample" else None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def leaves(self) -> dict[str, Any]:
        """``{"optim.lr": 0.15, ...}``: every field by its dotted name."""
        return dotted(self.to_dict())


def dotted(sections: dict[str, Any]) -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` → ``{"optim.lr": 0.1}`` (entries that are not sections are left out)."""
    return {f"{s}.{k}": v for s, fields in sections.items() if isinstance(fields, dict) for k, v in fields.items()}


def may_change_on_resume() -> frozenset[str]:
    """Dotted names of the fields whose metadata says they may change when a run is resumed."""
    return frozenset(
        f"{s}.{f.name}"
        for s, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if f.metadata.get("may_change_on_resume")
    )


# ---------------------------------------------------------------------------- recipes
def find_recipe(name_or_path: str | os.PathLike) -> Path:
    """A recipe path from a file path or a shipped recipe name (``regioncl_m_r50``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{str(name_or_path).removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    raise UserFileNotFoundError(
        f"no recipe file {str(name_or_path)!r} and no shipped recipe of that name; shipped: {names}"
    )


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``over``, section by section (a new dict; a dict *value* such as
    ``model.backbone_args`` is replaced whole, not merged, so a recipe can clear it)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key in SECTIONS and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **copy.deepcopy(value)}
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_recipe(name_or_path: str | os.PathLike, _seen: Sequence[Path] = ()) -> dict[str, Any]:
    """A recipe's sections with its ``base`` chain merged in (the base first), without ``base``."""
    path = find_recipe(name_or_path).resolve()
    if path in _seen:
        raise UserError(f"recipe {path} inherits from itself (through {[str(p) for p in _seen]})")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise UserError(f"recipe {path} must be a mapping of sections")
    base = values.pop("base", None)
    try:
        values = nest(values)
    except ValueError as e:
        raise UserError(f"recipe {path}: {e}") from None
    if base is None:
        return values
    bases = base if isinstance(base, list) else [base]
    merged: dict[str, Any] = {}
    for b in bases:
        # A base by path is found beside the recipe that names it.
        b_path = path.parent / b if (path.parent / str(b)).is_file() else b
        merged = deep_merge(merged, load_recipe(b_path, (*_seen, path)))
    return deep_merge(merged, values)


#: the flat field names of configurations written before the sections (recipes, run folders,
#: checkpoints, scripts): ``lr`` → ``optim.lr``, ``data`` → ``data.source``, ``knn_every`` → ``knn.every``.
LEGACY_NAMES = {
    legacy_name(f"{s}.{f.name}"): f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)
}


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """Sections from ``{"optim.lr": 0.1, "model": {...}}``; dotted keys, sections and the flat
    names of :data:`LEGACY_NAMES` may be mixed (a section's name with a non-mapping value, such
    as ``method: mocov2`` or ``data: /images``, is the flat field of that name)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, dict):
            out[key] = {**out.get(key, {}), **value}
            continue
        dotted = key if "." in key else LEGACY_NAMES.get(key)
        if dotted is None:
            raise UserError(f"{key!r} is not a section, a SECTION.FIELD name or a field; sections: {sorted(SECTIONS)}")
        section, name = dotted.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out


# ---------------------------------------------------------------------------- parsing
def jsonargparse_parser(prog: str | None = None, description: str | None = None, usage: str | None = None) -> Any:
    """A jsonargparse parser as every regioncl command with configuration fields builds it: help
    from the fields' docstrings, the description printed as written (its examples keep their
    lines), errors raised (not printed) so that the command reports them in one line."""
    from jsonargparse import ArgumentParser, DefaultHelpFormatter, set_parsing_settings

    class Formatter(DefaultHelpFormatter):
        def _fill_text(self, text: str, width: int, indent: str) -> str:
            return "".join(indent + line for line in text.splitlines(keepends=True))

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    return ArgumentParser(
        prog=prog,
        description=description,
        usage=usage,
        exit_on_error=False,
        env_prefix="REGIONCL",
        default_env=False,
        formatter_class=Formatter,
    )


def config_parser(prog: str | None = None, description: str | None = None) -> Any:
    """The jsonargparse parser of :class:`PretrainConfig`: ``--SECTION.FIELD`` for every field,
    help from the fields' docstrings, plus ``--config RECIPE``."""
    parser = jsonargparse_parser(
        prog,
        description,
        usage=f"{prog or 'regioncl pretrain'} [--config RECIPE] [--SECTION.FIELD VALUE ...] [--print_recipe]",
    )
    parser.add_argument(
        "--config",
        default=DEFAULT_RECIPE,
        help=f"recipe: a YAML file or a shipped name ({', '.join(shipped_recipes())})",
    )
    for name, cls in SECTIONS.items():
        parser.add_class_arguments(cls, name, fail_untyped=False)
        for action in parser._actions:  # the section as a whole: `--model '{backbone: resnet18}'`
            if action.dest == name and action.option_strings == [f"--{name}"]:
                action.help = f"the {name} section as a whole: a YAML mapping or a file of it"
    return parser


def shipped_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def _from_namespace(ns: Any) -> PretrainConfig:
    sections = {
        name: cls(**{f.name: ns[f"{name}.{f.name}"] for f in dataclasses.fields(cls)}) for name, cls in SECTIONS.items()
    }
    cfg = PretrainConfig(**sections)
    cfg.validate()
    return cfg


def make_config(
    recipe: str | os.PathLike | dict[str, Any] | None = None, overrides: dict[str, Any] | None = None
) -> PretrainConfig:
    """Defaults ← recipe (a name, a file, or its sections as a dict; ``sample`` when none) ←
    overrides (sections, ``SECTION.FIELD`` keys or flat names), every value type-checked as on
    the command line."""
    base = nest(recipe) if isinstance(recipe, dict) else load_recipe(recipe or DEFAULT_RECIPE)
    values = deep_merge(base, nest(overrides or {}))
    try:
        ns = config_parser().parse_object(values, defaults=True)
    except Exception as e:  # jsonargparse reports bad keys and types as its ArgumentError
        where = "the given sections" if isinstance(recipe, dict) else repr(str(recipe or DEFAULT_RECIPE))
        raise UserError(f"configuration {where} with {overrides or {}}: {e}") from e
    return _from_namespace(ns)


def parse_config(
    argv: Sequence[str] | None = None, prog: str | None = None, description: str | None = None
) -> PretrainConfig:
    """The configuration of a command line: ``--config RECIPE`` (default ``sample``), then the
    ``--SECTION.FIELD`` options over it. ``--help`` shows the recipe's values as the defaults;
    ``--print_recipe`` prints the resolved configuration as a recipe and exits."""
    import sys

    from ..spelling import did_you_mean, underscored

    argv = underscored(sys.argv[1:] if argv is None else argv)
    recipe = DEFAULT_RECIPE
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            recipe = argv[i + 1]
        elif arg.startswith("--config="):
            recipe = arg.split("=", 1)[1]
    parser = config_parser(prog, description)
    parser.add_argument("--print_recipe", action="store_true", help="print the resolved configuration (YAML) and exit")
    from jsonargparse import ArgumentError

    try:
        parser.set_defaults(dotted(load_recipe(recipe)))
        ns = parser.parse_args(argv)
    except UserError:
        raise
    except (ArgumentError, ValueError, KeyError) as e:  # an unknown option, a value of the wrong type
        options = [o for action in parser._actions for o in action.option_strings]
        raise UserError(f"{did_you_mean(str(e), options)} (see {parser.prog} --help)") from None
    cfg = _from_namespace(ns)
    if ns["print_recipe"]:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        sys.exit(0)
    return cfg


def config_json(cfg: PretrainConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
