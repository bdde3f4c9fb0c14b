"""Reading an encoder out of whatever holds one: a run folder, a checkpoint, an export, a weights file.

Keys are cleaned of wrapper prefixes (DDP's ``module.``, torch.compile's ``_orig_mod.``) and of
the method's own parts (projector, key encoder, queue...), leaving the timm encoder's state dict.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file

from ..backbones import resolve_backbone
from ..errors import UserError, UserFileNotFoundError
from ..files import STATE_FILE, config_value, list_checkpoints, read_state

#: model arguments that only change the initialisation: not needed (nor wanted) to rebuild the weights.
INIT_ONLY_ARGS = frozenset({"zero_init_last", "pretrained", "drop_rate", "drop_path_rate", "drop_block_rate"})
ENCODER_PREFIXES = ("encoder.model.", "encoder.")
NOT_ENCODER = (
    "key_encoder.",
    "projector.",
    "key_projector.",
    "predictor.",
    "queue.",
    "dense_queue.",
    "dense_projector.",
    "key_dense_projector.",
)


def read_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file, or a ``.bin``/``.pth``/``.pt`` file read with
    ``torch.load(weights_only=True)`` (unwrapped from a top-level ``state_dict``/``model``).

    Raises:
        ValueError: another suffix, content that is not a str → tensor mapping, or a torch file
            holding objects other than tensors and plain containers (``weights_only=True``
            refuses to unpickle them, so their code never runs).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    if suffix not in (".bin", ".pth", ".pt"):
        raise UserError(f"{path}: unsupported checkpoint file (use .safetensors, .bin, .pth or .pt)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = next((line.strip() for line in str(e).splitlines() if "Unsupported global" in line), "")
        found = found.split(" was not an allowed global")[0].replace(
            "WeightsUnpickler error: Unsupported global:", "it holds"
        )
        raise UserError(
            f"{path} holds pickled objects other than tensors and plain containers ({found or 'see torch.load'}); it is "
            "not loaded, because unpickling them could run any code they carry. Convert it to safetensors where "
            "it was made (safetensors.torch.save_file(state_dict, ...))"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a state dict, found {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{path}: entries {_few(bad)} are not str → tensor; not a state dict")
    return dict(obj)


def find_checkpoint_file(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The weights file behind ``path`` and the training config found beside it (or ``{}``).

    ``path`` may be a weights file, an Accelerate state folder (``model.safetensors`` +
    ``trainer_state.json``), an export folder, or a run's output folder (its newest
    checkpoint, else its ``encoder.safetensors``).
    """
    p = Path(path)
    if p.is_file():
        return p, {}
    if not p.is_dir():
        raise UserFileNotFoundError(f"no checkpoint at {p}")
    config: dict[str, Any] = {}
    if (p / STATE_FILE).is_file():
        config = read_state(p).get("config", {})
    elif (p / "config.json").is_file():
        config = json.loads((p / "config.json").read_text())
    for name in ("model.safetensors", "pytorch_model.bin", "encoder.safetensors"):
        if (p / name).is_file():
            return p / name, config
    found = list_checkpoints(p)
    if found:
        return find_checkpoint_file(found[-1])
    raise UserFileNotFoundError(f"{p} holds no model.safetensors, encoder.safetensors or complete checkpoint")


def is_export_config(config: dict[str, Any]) -> bool:
    """Whether ``config`` is an export's ``config.json`` (timm's layout), not a training configuration."""
    return "architecture" in config and isinstance(config.get("pretrained_cfg"), dict)


def encoder_facts(config: dict[str, Any]) -> tuple[str | None, dict[str, Any], int | None]:
    """``(backbone, backbone_args, image_size)`` of the encoder a configuration describes: a run's
    (``model.backbone``, ``data.image_size``) or an export's (``architecture``, ``model_args``,
    ``pretrained_cfg.input_size``); ``None`` where it does not say."""
    if is_export_config(config):
        size = (config["pretrained_cfg"].get("input_size") or [None])[-1]
        name = (config.get("regioncl") or {}).get("backbone") or config["architecture"]
        return name, dict(config.get("model_args") or {}), int(size) if size else None
    size = config_value(config, "data.image_size")
    return config_value(config, "model.backbone"), dict(config_value(config, "model.backbone_args", {}) or {}), size


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
        picked = {k[len(prefix) :]: v for k, v in clean.items() if k.startswith(prefix)}
        if picked:
            return picked
    if any(k.startswith(NOT_ENCODER) for k in clean):
        raise UserError("the checkpoint has method weights (projector, queue...) but no 'encoder.' weights")
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
    trained_backbone, trained_args, image_size = encoder_facts(config)
    backbone = backbone or trained_backbone
    if backbone is None:
        raise UserError(f"{path}: no training config beside the weights; pass the backbone name")
    args = dict(trained_args if backbone_args is None else backbone_args)
    spec = resolve_backbone(backbone, **args)
    model_args = {k: v for k, v in spec.model_args.items() if k not in INIT_ONLY_ARGS}
    model = timm.create_model(spec.architecture, pretrained=False, num_classes=0, **model_args)
    load_fitting(
        model,
        encoder_state(read_state_file(path)),
        f"{path} does not fit {backbone} ({spec.architecture}, {model_args})",
    )
    model.eval()
    model.regioncl_spec = (spec.name, spec.architecture, model_args)
    model.regioncl_image_size = image_size  # the size it was trained at, where the config says
    return model, config


def first_difference(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> str | None:
    """The first tensor (in ``expected``'s order) in which ``given`` differs from ``expected`` by
    name or shape, said for a person; None when every name and shape match."""
    for name, tensor in expected.items():
        if name not in given:
            return f"{name} is missing ({len(expected)} tensors expected, {len(given)} given)"
        if tuple(given[name].shape) != tuple(tensor.shape):
            return f"{name} has shape {tuple(given[name].shape)}, not {tuple(tensor.shape)}"
    extra = [name for name in given if name not in expected]
    return f"{extra[0]} is not a tensor of the model ({len(extra)} such)" if extra else None


def load_fitting(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``model``, or raise a :class:`UserError` ``"{what}: NAME ..."`` naming the
    first tensor that does not fit (a missing, unexpected or differently shaped one)."""
    difference = first_difference(model.state_dict(), state)
    if difference:
        raise UserError(f"{what}: {difference}")
    model.load_state_dict(state)


def _few(keys: list[str], n: int = 8) -> str:
    return "none" if not keys else ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
