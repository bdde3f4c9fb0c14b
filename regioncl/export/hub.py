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
from pathlib import Path
from typing import Any, Mapping

import timm
import torch
import yaml
from safetensors.torch import load_file, save_file

from ..backbones import resolve_backbone
from ..train.checkpoint import atomic_write
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD

#: model arguments that only change the initialisation: not needed (nor wanted) to rebuild the weights.
INIT_ONLY_ARGS = frozenset({"zero_init_last", "pretrained", "drop_rate", "drop_path_rate", "drop_block_rate"})
#: wrapper segments added by DDP (``module.``) and torch.compile (``_orig_mod.``).
WRAPPER_SEGMENTS = ("module", "_orig_mod")
ENCODER_PREFIXES = ("encoder.model.", "encoder.")
NOT_ENCODER = ("key_encoder.", "projector.", "key_projector.", "predictor.", "queue.", "dense_queue.",
               "dense_projector.", "key_dense_projector.")


# ---------------------------------------------------------------------------- reading checkpoints


def read_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file, or a ``.bin``/``.pth``/``.pt`` file read with
    ``torch.load(weights_only=True)`` (unwrapped from a top-level ``state_dict``/``model``).

    Raises:
        ValueError: another suffix, or content that is not a str → tensor mapping.
        pickle.UnpicklingError: a torch file holding objects other than tensors and plain
            containers (``weights_only=True`` refuses to run their code).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    if suffix not in (".bin", ".pth", ".pt"):
        raise ValueError(f"{path}: unsupported checkpoint file (use .safetensors, .bin, .pth or .pt)")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: entries {_few(bad)} are not str → tensor; not a state dict")
    return dict(obj)


def find_checkpoint_file(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The weights file behind ``path`` and the training config found beside it (or ``{}``).

    ``path`` may be a weights file, an Accelerate state folder (``model.safetensors`` +
    ``trainer_state.json``), an export folder, or a run's output folder (its newest
    checkpoint, else its ``encoder.safetensors``).
    """
    from ..train.checkpoint import STATE_FILE, list_checkpoints

    p = Path(path)
    if p.is_file():
        return p, {}
    if not p.is_dir():
        raise FileNotFoundError(f"no checkpoint at {p}")
    config: dict[str, Any] = {}
    if (p / STATE_FILE).is_file():
        config = json.loads((p / STATE_FILE).read_text()).get("config", {})
    elif (p / "config.json").is_file():
        config = json.loads((p / "config.json").read_text())
    for name in ("model.safetensors", "pytorch_model.bin", "encoder.safetensors"):
        if (p / name).is_file():
            return p / name, config
    found = list_checkpoints(p)
    if found:
        return find_checkpoint_file(found[-1])
    raise FileNotFoundError(f"{p} holds no model.safetensors, encoder.safetensors or complete checkpoint")


def strip_wrappers(key: str) -> str:
    """``module._orig_mod.encoder.model.x`` → ``encoder.model.x`` (DDP and torch.compile wrappers)."""
    parts = key.split(".")
    while parts and parts[0] == "module":
        parts.pop(0)
    return ".".join(p for p in parts if p != "_orig_mod")


def encoder_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The online encoder's timm state dict out of a method's (possibly wrapped) state dict.

    A state dict that is already a plain timm state dict is returned with wrappers stripped.
    """
    clean = {strip_wrappers(k): v for k, v in state.items()}
    for prefix in ENCODER_PREFIXES:
        picked = {k[len(prefix):]: v for k, v in clean.items() if k.startswith(prefix)}
        if picked:
            return picked
    if any(k.startswith(NOT_ENCODER) for k in clean):
        raise ValueError("the checkpoint has method weights (projector, queue...) but no 'encoder.' weights")
    return clean


def load_encoder(
    checkpoint: str | os.PathLike, backbone: str | None = None, backbone_args: Mapping[str, Any] | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the plain timm encoder (``num_classes=0``) and load the checkpoint's online encoder into it.

    Args:
        checkpoint: see :func:`find_checkpoint_file`.
        backbone, backbone_args: default to those of the training config found beside the weights.

    Returns:
        ``(model, training_config)``.

    Raises:
        ValueError: naming missing and unexpected keys when the weights do not fit the backbone.
    """
    path, config = find_checkpoint_file(checkpoint)
    backbone = backbone or config.get("backbone")
    if backbone is None:
        raise ValueError(f"{path}: no training config beside the weights; pass the backbone name")
    args = dict(config.get("backbone_args", {}) if backbone_args is None else backbone_args)
    spec = resolve_backbone(backbone, **args)
    model_args = {k: v for k, v in spec.model_args.items() if k not in INIT_ONLY_ARGS}
    model = timm.create_model(spec.architecture, pretrained=False, num_classes=0, **model_args)
    state = encoder_state(read_state_file(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit {backbone} ({spec.architecture}, {model_args}): "
            f"missing keys {_few(missing)}; unexpected keys {_few(unexpected)}"
        )
    model.eval()
    model.regioncl_spec = (spec.name, spec.architecture, model_args)
    return model, config


def _few(keys: list[str], n: int = 8) -> str:
    return "none" if not keys else ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


# ---------------------------------------------------------------------------- writing exports


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
    meta = {k: config[k] for k in ("method", "epochs", "data", "image_size", "batch_size", "lr") if k in config}
    meta.update(metadata or {})
    method = meta.get("method", "ssl")
    tag = meta.get("tag") or f"{method}_{meta.get('recipe', 'custom')}"
    size = int(image_size or config.get("image_size") or 224)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / "model.safetensors", lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    cfg = timm_config(model, image_size=size, tag=tag, metadata=meta)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return out


# ---------------------------------------------------------------------------- cards and the zoo

ROOT = Path(__file__).resolve().parents[2]
ZOO_FILE = ROOT / "hub" / "zoo.yaml"
CARD_TEMPLATE = ROOT / "MODEL_CARD.md"
METHOD_NAMES = {
    "mocov2": "MoCo v2", "regioncl_m": "RegionCL-M", "regioncl_m_noswap": "RegionCL-M without swapping",
    "densecl": "DenseCL", "regioncl_d": "RegionCL-D", "simsiam": "SimSiam", "regioncl_s": "RegionCL-S",
}


def load_zoo(path: str | os.PathLike = ZOO_FILE) -> dict[str, dict[str, Any]]:
    """The registry of published models, name → entry."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return data.get("models", {})


def render_card(entry: Mapping[str, Any], template: str | os.PathLike = CARD_TEMPLATE) -> str:
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
    body = Path(template).read_text()
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
