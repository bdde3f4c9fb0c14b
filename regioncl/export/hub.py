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
import os
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from safetensors.torch import save_file

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..files import atomic_write, config_value
from .checkpoints import load_encoder

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
    config: dict[str, Any] = {"architecture": architecture, "num_classes": 0, "num_features": int(model.num_features),
                              "global_pool": "avg"}
    if model_args:
        config["model_args"] = {k: list(v) if isinstance(v, tuple) else v for k, v in model_args.items()}
    config["pretrained_cfg"] = pretrained_cfg
    config["regioncl"] = {"backbone": name, **metadata}  # timm ignores unknown top-level keys
    return config


def export(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    backbone: str | None = None,
    backbone_args: Mapping[str, Any] | None = None,
    image_size: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` for plain timm into ``out_dir``.

    Args:
        checkpoint: a pretraining checkpoint (see :func:`find_checkpoint_file`).
        out_dir: the export folder (created).
        backbone, backbone_args: override the training config's.
        image_size: the pretraining input size written to ``pretrained_cfg`` (default: the
            training config's, else 224).
        metadata: extra top-level metadata (method, recipe, epochs, dataset, metrics...).
    """
    model, config = load_encoder(checkpoint, backbone, backbone_args)
    fields = {"method": "model.method", "epochs": "optim.epochs", "data": "data.source", "image_size": "data.image_size",
              "batch_size": "optim.batch_size", "lr": "optim.lr"}
    meta = {k: config_value(config, dotted) for k, dotted in fields.items() if config_value(config, dotted) is not None}
    meta.update(metadata or {})
    method = meta.get("method", "ssl")
    tag = meta.get("tag") or f"{method}_{meta.get('recipe', 'custom')}"
    size = int(image_size or meta.get("image_size") or 224)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / "model.safetensors", lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    cfg = timm_config(model, image_size=size, tag=tag, metadata=meta)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return out


# ---------------------------------------------------------------------------- cards and the zoo

# The repository keeps one copy of each, at the top (hub/zoo.yaml, MODEL_CARD.md), where users and
# the Hub expect them; the package holds links to them, which the build copies into the wheel.
ZOO_FILE = resources.files(__package__) / "zoo.yaml"
CARD_TEMPLATE = resources.files(__package__) / "MODEL_CARD.md"
METHOD_NAMES = {
    "mocov2": "MoCo v2", "regioncl_m": "RegionCL-M", "regioncl_m_noswap": "RegionCL-M without swapping",
    "densecl": "DenseCL", "regioncl_d": "RegionCL-D", "simsiam": "SimSiam", "regioncl_s": "RegionCL-S",
}


def load_zoo(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The registry of published models, name → entry: the shipped one, or the file ``path``."""
    data = yaml.safe_load((ZOO_FILE if path is None else Path(path)).read_text()) or {}
    return data.get("models", {})


def render_card(entry: Mapping[str, Any], template: str | os.PathLike | None = None) -> str:
    """The Hub ``README.md`` of a model: YAML front matter, then the template's body filled in.

    Only measured metrics (``entry["metrics"]``) enter the model-index; the paper's numbers
    (``entry["paper"]``) are shown as such, never as this model's.
    """
    metrics = entry.get("metrics") or {}
    front: dict[str, Any] = {
        "library_name": "timm",
        "license": entry.get("license", "apache-2.0"),
        "tags": ["image-feature-extraction", "timm", "self-supervised", "regioncl", entry["method"]],
        "datasets": [entry.get("dataset", "imagenet-1k")],
        "pipeline_tag": "image-feature-extraction",
    }
    if metrics:
        front["model-index"] = [{
            "name": entry["repo_id"].split("/")[-1],
            "results": [{
                "task": {"type": "image-classification"},
                "dataset": {"name": entry.get("dataset", "imagenet-1k"), "type": entry.get("dataset", "imagenet-1k")},
                "metrics": [{"type": k, "value": v, "name": k} for k, v in metrics.items()],
            }],
        }]
    fields = {
        "repo_id": entry["repo_id"],
        "method": entry["method"],
        "method_name": METHOD_NAMES.get(entry["method"], entry["method"]),
        "backbone": entry["backbone"],
        "recipe": entry.get("recipe", "custom"),
        "dataset": entry.get("dataset", "imagenet-1k"),
        "epochs": str(entry.get("epochs", "?")),
        "metrics_table": _table(metrics, "No evaluation of this checkpoint has been recorded yet."),
        "paper_table": _table(entry.get("paper") or {}, "The paper reports no number for this configuration."),
    }
    body = (CARD_TEMPLATE if template is None else Path(template)).read_text()
    body = body.split("\n---\n", 1)[1] if body.startswith("---\n") else body  # the template's own header
    for key, value in fields.items():
        body = body.replace("{{" + key + "}}", value)
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n" + body


def _table(values: Mapping[str, Any], empty: str) -> str:
    if not values:
        return empty
    return "| metric | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in values.items())


# ---------------------------------------------------------------------------- pushing


def prepare_release(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, entry: Mapping[str, Any]) -> Path:
    """Export the encoder and write its card (``README.md``) into ``out_dir``."""
    metadata = {k: entry[k] for k in ("method", "recipe", "dataset", "epochs", "metrics") if k in entry}
    metadata["tag"] = entry.get("tag") or f"{entry['method']}.{entry.get('dataset', 'custom')}_{entry.get('epochs', 0)}ep"
    out = export(checkpoint, out_dir, backbone=entry.get("backbone"), backbone_args=entry.get("backbone_args"),
                 metadata=metadata)
    (out / "README.md").write_text(render_card(entry))
    return out


def push(folder: str | os.PathLike, repo_id: str, *, private: bool = False, revision: str | None = None,
         commit_message: str = "Upload encoder (regioncl)", api: Any = None) -> str:
    """Create the repo (if needed) and upload ``folder``; returns the commit URL.

    The token is whatever huggingface_hub finds (``HF_TOKEN`` or a saved ``hf auth login``);
    it is never read, written or logged here.
    """
    from huggingface_hub import HfApi

    api = api or HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
                             commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
