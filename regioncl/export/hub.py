"""Export pretrained encoders as plain timm models, render their model cards, push them to the Hub.

An export is a folder with ``model.safetensors`` (the online encoder's timm state dict,
nothing else: no projector, predictor, key encoder or queue) and ``config.json`` in the
layout of timm's ``save_for_hf``, so that anyone can run, without regioncl installed::

    timm.create_model("hf-hub:ORG/regioncl_m_r50", pretrained=True)   # or "local-dir:/path"

Extra metadata (method, recipe, epochs, dataset, metrics) sits in a top-level
``regioncl`` key that timm ignores; ``pretrained_cfg`` holds only keys timm knows.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..errors import UserError
from ..files import STATE_FILE, atomic_write, config_value, list_checkpoints, read_state, save_safetensors
from .checkpoints import encoder_facts, find_checkpoint_file, is_export_config, load_encoder


def timm_config(
    model: torch.nn.Module, *, image_size: int = 224, tag: str, metadata: Mapping[str, Any], license: str = "apache-2.0"
) -> dict[str, Any]:
    """``config.json`` as timm's ``save_for_hf`` writes it, from a clean ``pretrained_cfg``.

    Nothing is inherited from timm's supervised weights' metadata (their urls, hub ids,
    test sizes or paper ids).
    """
    name, architecture, model_args = model.regioncl_spec
    stride = model.feature_info[-1]["reduction"] if getattr(model, "feature_info", None) else 32
    pretrained_cfg = {
        "tag": tag,
        "custom_load": False,
        "input_size": [3, image_size, image_size],
        "fixed_input_size": False,
        "interpolation": "bilinear",
        "crop_pct": 0.875,
        "crop_mode": "center",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "num_classes": 0,
        "pool_size": [image_size // stride, image_size // stride],
        # Architecture facts (not weight metadata): where the stem and the head are.
        "first_conv": model.pretrained_cfg.get("first_conv", "conv1"),
        "classifier": model.pretrained_cfg.get("classifier", "fc"),
        "license": license,
    }
    config: dict[str, Any] = {
        "architecture": architecture,
        "num_classes": 0,
        "num_features": int(model.num_features),
        "global_pool": "avg",
    }
    if model_args:
        config["model_args"] = {k: list(v) if isinstance(v, tuple) else v for k, v in model_args.items()}
    config["pretrained_cfg"] = pretrained_cfg
    config["regioncl"] = {"backbone": name, **metadata}  # timm ignores unknown top-level keys
    return config


def dataset_name(source: str | None) -> tuple[str, str | None]:
    """``(what the card and the metadata say the data was, its Hub dataset id or None)``: a local
    folder's or file's path is never published."""
    if not source:
        return "unrecorded data", None
    if source == "sample":
        return "regioncl's built-in sample set (synthetic shapes)", None
    if source.startswith("hf:"):
        from ..data.sources import _parse_hf_spec

        path, _ = _parse_hf_spec(source[3:], "train")
        if os.path.isabs(path) or os.path.exists(path) or path.startswith("."):
            return "a local dataset", None
        return path, path
    return "a local image folder", None


def training_record(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The trainer's record (``trainer_state.json``) of the checkpoint behind ``checkpoint``: the
    checkpoint folder's own, or a run folder's newest; ``{}`` for weights without one."""
    p = Path(checkpoint)
    folder = p.parent if p.is_file() else p
    if (folder / STATE_FILE).is_file():
        return read_state(folder)
    found = list_checkpoints(folder)
    return read_state(found[-1]) if found else {}


def trained_facts(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """What a checkpoint's run trained, from its configuration and its trainer's record, without
    reading the weights: method, backbone, the data (a Hub id, or "a local image folder": never a
    local path), the steps and epochs actually trained, image size, batch, lr, weight decay,
    precision and the weights it started from (``None`` values left out)."""
    _, config = find_checkpoint_file(checkpoint)
    fields = {
        "method": "model.method",
        "image_size": "data.image_size",
        "batch_size": "optim.batch_size",
        "lr": "optim.lr",
        "weight_decay": "optim.weight_decay",
        "precision": "run.precision",
        "init": "model.init",
    }
    facts: dict[str, Any] = {k: config_value(config, dotted) for k, dotted in fields.items()}
    if is_export_config(config):  # an export exported again: its own record
        facts.update(config.get("regioncl") or {})
    else:
        facts["backbone"] = encoder_facts(config)[0]
        facts["dataset"], facts["dataset_id"] = dataset_name(config_value(config, "data.source"))
    record = training_record(checkpoint)
    if "step" in record:
        facts["steps"] = int(record["step"])
        per_epoch = record.get("steps_per_epoch")
        facts["epochs"] = round(record["step"] / per_epoch, 2) if per_epoch else record.get("epoch")
    if record.get("init_source"):
        facts["init"] = record["init_source"]
    return {k: v for k, v in facts.items() if v is not None}


def export(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    backbone: str | None = None,
    backbone_args: Mapping[str, Any] | None = None,
    image_size: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` for plain timm into ``out_dir``.

    The metadata (``config.json``'s ``regioncl`` key) says what was trained, from the run's own
    record: method, backbone, the data (a Hub id, or "a local image folder": never a local path),
    the steps and epochs actually trained, image size, batch, lr, precision and the weights the run
    started from.

    Args:
        checkpoint: a pretraining checkpoint (see :func:`find_checkpoint_file`).
        out_dir: the export folder (created; refused when it holds files, unless ``overwrite``).
        backbone, backbone_args: override the training config's.
        image_size: the pretraining input size written to ``pretrained_cfg`` (default: the
            training config's, else 224).
        metadata: extra top-level metadata (recipe, metrics...), over the run's.
        overwrite: write into a folder that holds files (those of the export are replaced).
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise UserError(
            f"{out} exists and is not an empty folder: export into a new folder, or pass --overwrite "
            "to replace its model.safetensors and config.json"
        )
    model, _ = load_encoder(checkpoint, backbone, backbone_args)
    meta = trained_facts(checkpoint)
    meta.pop("backbone", None)  # timm_config writes the backbone the export was built with
    meta.update(metadata or {})
    method = meta.get("method", "ssl")
    tag = meta.get("tag") or f"{method}_{meta.get('recipe', 'custom')}"
    size = int(image_size or meta.get("image_size") or 224)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_safetensors(tensors, out / "model.safetensors", metadata={"format": "pt"})
    cfg = timm_config(model, image_size=size, tag=tag, metadata=meta)
    atomic_write(out / "config.json", lambda tmp: tmp.write_text(json.dumps(cfg, indent=2) + "\n"))
    return out


# ---------------------------------------------------------------------------- cards and the zoo

# The repository keeps one copy of each, at the top (hub/zoo.yaml, MODEL_CARD.md), where users and
# the Hub expect them; the package holds links to them, which the build copies into the wheel.
ZOO_FILE = resources.files(__package__) / "zoo.yaml"
CARD_TEMPLATE = resources.files(__package__) / "MODEL_CARD.md"
METHOD_NAMES = {
    "mocov2": "MoCo v2",
    "regioncl_m": "RegionCL-M",
    "regioncl_m_noswap": "RegionCL-M without swapping",
    "densecl": "DenseCL",
    "regioncl_d": "RegionCL-D",
    "simsiam": "SimSiam",
    "regioncl_s": "RegionCL-S",
}


def load_zoo(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The registry of published models, name → entry: the shipped one, or the file ``path``."""
    data = yaml.safe_load((ZOO_FILE if path is None else Path(path)).read_text()) or {}
    return data.get("models", {})


def render_card(entry: Mapping[str, Any], template: str | os.PathLike | None = None) -> str:
    """The Hub ``README.md`` of a model: YAML front matter, then the template's body filled in.

    ``entry`` is a zoo entry (it names a ``recipe``), or what a run trained (:func:`trained_facts`)
    with ``repo_id``: the card then says what the run's own record says (its data, the epochs and
    steps trained, its settings, its input size, the weights it started from) and nothing it does
    not. Only measured metrics (``entry["metrics"]``) enter the model-index; the paper's numbers
    (``entry["paper"]``) are shown as such, never as this model's.
    """
    metrics = entry.get("metrics") or {}
    zoo = bool(entry.get("recipe"))
    dataset = str(entry.get("dataset") or "unrecorded data")
    hub_dataset = entry.get("dataset_id") or (dataset if zoo else None)
    front: dict[str, Any] = {
        "library_name": "timm",
        "license": entry.get("license", "apache-2.0"),
        "tags": ["image-feature-extraction", "timm", "self-supervised", "regioncl", entry["method"]],
        **({"datasets": [hub_dataset]} if hub_dataset else {}),
        "pipeline_tag": "image-feature-extraction",
    }
    if metrics:
        scored_on = entry.get("eval_dataset") or hub_dataset or "custom"
        front["model-index"] = [
            {
                "name": entry["repo_id"].split("/")[-1],
                "results": [
                    {
                        "task": {"type": "image-classification"},
                        "dataset": {"name": scored_on, "type": scored_on},
                        "metrics": [{"type": k, "value": v, "name": k} for k, v in metrics.items()],
                    }
                ],
            }
        ]
    epochs, steps = entry.get("epochs"), entry.get("steps")
    if epochs is None:
        trained = f"{steps:,} steps" if steps is not None else "for an unrecorded length"
    else:
        trained = f"{float(epochs):g} epochs" + (f" ({steps:,} steps)" if steps is not None and not zoo else "")
    if zoo:
        settings = f"recipe `{entry['recipe']}` (regioncl/recipes/{entry['recipe']}.yaml)"
    else:
        known = [
            (f"batch {entry.get('batch_size')}", "batch_size"),
            (f"lr {entry.get('lr')}", "lr"),
            (f"weight decay {entry.get('weight_decay')}", "weight_decay"),
            (f"{entry.get('image_size')} px", "image_size"),
            (f"{entry.get('precision')}", "precision"),
        ]
        settings = "the run's own settings (" + ", ".join(text for text, key in known if key in entry) + ")"
    init = entry.get("init")
    fields = {
        "repo_id": entry["repo_id"],
        "method": entry["method"],
        "method_name": METHOD_NAMES.get(entry["method"], entry["method"]),
        "backbone": entry["backbone"],
        "dataset": dataset,
        "trained": trained,
        "settings": settings,
        "image_size": str(entry.get("image_size", 224)),
        "init": f" It started from the weights of `{init}`, not from a random initialisation." if init else "",
        "metrics_table": _table(metrics, "No evaluation of this checkpoint has been recorded yet."),
        "paper_table": _table(entry.get("paper") or {}, "The paper reports no number for this configuration."),
    }
    body = (CARD_TEMPLATE if template is None else Path(template)).read_text()
    body = body.split("\n---\n", 1)[1] if body.startswith("---\n") else body  # the template's own header
    for key, value in fields.items():
        body = body.replace("{{" + key + "}}", value)
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n" + body


def card_metrics(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], str | None]:
    """The card's metrics, in percent, from what the evaluation commands printed (the JSON line of
    ``regioncl knn``, ``probe`` or ``finetune``), or from ``{"name": number}`` objects given as is;
    and the data the evaluations scored on (their ``val``), or None where none says.

    An evaluation's accuracies, fractions in [0, 1], become ``knn_top1``, ``linear_top1`` /
    ``linear_top5`` or ``finetune_top1`` / ``finetune_top5`` in percent; its other fields (paths,
    sizes) stay out of the card. A value that is not a finite number is refused: the model-index
    holds numbers only.

    Raises:
        UserError: a record that is neither, a metric given twice, or evaluations on different data.
    """
    metrics: dict[str, float] = {}
    scored_on: set[str] = set()
    for record in records:
        if not isinstance(record, Mapping):
            raise UserError(f"--metrics: expected JSON objects, got {record!r}")
        if {"knn_top1_after", "knn_top1_before"} & set(record) or {"step", "epoch"} <= set(record):
            raise UserError(
                "--metrics: this is regioncl pretrain's summary (its training monitor's kNN, a fraction, on data the "
                "card cannot name): score the exported encoder with regioncl knn, probe or finetune and give their "
                "output (> evals.jsonl)"
            )
        if "encoder" in record and "top1" in record and "protocol" not in record:
            raise UserError(
                "--metrics: a probe or fine-tune result without its protocol (printed before they named it): "
                'add "protocol": "linear" or "finetune" to it'
            )
        if "encoder" in record and ("knn_top1" in record or "protocol" in record):  # an evaluation's output
            prefix = "knn" if "knn_top1" in record else str(record["protocol"])
            found = {
                f"{prefix}_{k.removeprefix('knn_')}": round(100 * float(record[k]), 2)
                for k in ("knn_top1", "top1", "top5")
                if record.get(k) is not None
            }
            if record.get("val"):
                scored_on.add(str(record["val"]))
        else:
            found = dict(record)
        bad = [
            k
            for k, v in found.items()
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
        ]
        if bad:
            raise UserError(
                f"--metrics: {bad[0]} is {found[bad[0]]!r}, not a finite number; give measured numbers "
                "(e.g. '{\"knn_top1\": 81.3}') or the output of regioncl knn, probe or finetune"
            )
        twice = sorted(set(found) & set(metrics))
        if twice:
            raise UserError(f"--metrics: {twice[0]} given twice")
        metrics.update(found)
    if len(scored_on) > 1:
        raise UserError(
            f"--metrics: evaluations on different data ({', '.join(sorted(scored_on))}); a card's results name one "
            "data set: give those of one"
        )
    return metrics, next(iter(scored_on), None)


def _table(values: Mapping[str, Any], empty: str) -> str:
    if not values:
        return empty
    return "| metric | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in values.items())


# ---------------------------------------------------------------------------- pushing


def release_entry(checkpoint: str | os.PathLike, entry: Mapping[str, Any]) -> dict[str, Any]:
    """What the card of ``checkpoint`` says: the run's own record (:func:`trained_facts`) with
    ``entry`` (a zoo entry, or the repo id and metrics) over it.

    Raises:
        UserError: where the entry contradicts the record (another method or backbone, or a zoo
            entry's epochs that the run did not train): the card would be false.
    """
    facts = trained_facts(checkpoint)
    for key in ("method", "backbone"):
        if entry.get(key) and facts.get(key) and entry[key] != facts[key]:
            raise UserError(
                f"{checkpoint} was trained with {key} {facts[key]!r}, not {entry[key]!r}: its card would be false"
            )
    if entry.get("recipe") and entry.get("epochs") is not None and facts.get("epochs") is not None:
        if abs(float(facts["epochs"]) - float(entry["epochs"])) > 0.01 * float(entry["epochs"]):
            raise UserError(
                f"{checkpoint} trained {facts['epochs']} epochs ({facts.get('steps')} steps); the zoo entry "
                f"says {entry['epochs']}: publish the finished run, or push it without --zoo"
            )
    card = {**facts, **{k: v for k, v in entry.items() if v is not None}}
    missing = [k for k in ("method", "backbone", "repo_id") if not card.get(k)]
    if missing:
        raise UserError(
            f"{checkpoint} has no training record of its {', '.join(missing)}: give --"
            + " and --".join(k.replace("_", "-") for k in missing)
        )
    return card


def prepare_release(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, entry: Mapping[str, Any]) -> Path:
    """Export the encoder and write its card (``README.md``) into ``out_dir`` (new, or empty);
    the card and the export's metadata say what :func:`release_entry` says."""
    card = release_entry(checkpoint, entry)
    metadata = {k: card[k] for k in ("method", "recipe", "dataset", "dataset_id", "epochs", "metrics") if k in card}
    metadata["tag"] = card.get("tag") or (
        f"{card['method']}.{card.get('dataset_id') or 'custom'}_{card.get('epochs', 0):g}ep".replace("/", "_")
    )
    out = export(
        checkpoint, out_dir, backbone=entry.get("backbone"), backbone_args=entry.get("backbone_args"), metadata=metadata
    )
    atomic_write(out / "README.md", lambda tmp: tmp.write_text(render_card(card)))
    return out


def push(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload encoder (regioncl)",
    api: Any = None,
) -> str:
    """Create the repo (if needed) and upload ``folder``; returns the commit URL.

    The token is whatever huggingface_hub finds (``HF_TOKEN`` or a saved ``hf auth login``);
    it is never read, written or logged here.
    """
    from huggingface_hub import HfApi

    api = api or HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision, commit_message=commit_message
    )
    return str(getattr(info, "commit_url", info))
