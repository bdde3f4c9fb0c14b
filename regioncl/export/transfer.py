"""Downstream transfer: a pretrained timm ResNet encoder in detectron2 and mmdet/mmpose formats.

The encoder that pretraining writes (``encoder.safetensors``, or ``model.safetensors`` of an
export) is a plain timm ResNet state dict without classifier: ``conv1.weight``, ``bn1.*``,
``layer{1..4}.{b}.conv{k}.weight``, ``layer{1..4}.{b}.bn{k}.*``, ``layer{1..4}.0.downsample.{0,1}.*``.

* detectron2 (Mask R-CNN on COCO, paper Table 3): MoCo's converter mapping
  (facebookresearch/moco, ``detection/convert-pretrain-to-detectron2.py``), with every key checked
  against an explicit rule instead of string replacement, so nothing is dropped or renamed by
  accident. Written as a ``.pkl`` of numpy arrays with ``matching_heuristics`` so that
  detectron2's ``DetectionCheckpointer`` matches ``stem.conv1.weight`` to
  ``backbone.bottom_up.stem.conv1.weight`` itself.
* mmdet 3.x / mmpose 1.x (paper A.3): their ``ResNet`` backbone uses torchvision's names, which
  timm's ResNet shares, so the keys only gain a ``backbone.`` prefix (the layout of a full
  detector checkpoint). Load it with ``init_cfg=dict(type='Pretrained', prefix='backbone.',
  checkpoint=...)``: without ``prefix`` mmengine loads the file into the backbone module as is,
  with ``strict=False``, and every prefixed key would be ignored with only a log warning.

Example:
    >>> import timm
    >>> state = timm.create_model("resnet18", num_classes=0, global_pool="").state_dict()
    >>> d2 = timm_to_detectron2(state)
    >>> tuple(d2["stem.conv1.weight"].shape), tuple(d2["res5.0.shortcut.norm.bias"].shape)
    ((64, 3, 7, 7), (512,))
    >>> sorted(timm_to_mmdet(state))[0]
    'backbone.bn1.bias'
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .checkpoints import encoder_state, find_checkpoint_file, read_state_file

__all__ = [
    "timm_to_detectron2",
    "detectron2_checkpoint",
    "timm_to_mmdet",
    "load_encoder_state",
    "load_and_convert",
]

# At most this many offending keys are quoted in an error; the count of the rest follows.
_MAX_QUOTED = 12

_NORM_FIELD = r"(?P<field>weight|bias|running_mean|running_var)"
_BLOCK = r"layer(?P<stage>[1-4])\.(?P<block>\d+)"


def _res(m: re.Match[str]) -> str:
    # timm/torchvision layer1..layer4 are detectron2's res2..res5 (named by log2 of the stride).
    return f"res{int(m['stage']) + 1}.{int(m['block'])}"


# (pattern, detectron2 name, tensor rank). The rank is checked as well so that a tensor which
# only looks like a match (the avg-pool shortcut of resnet*d has a conv at ``downsample.1``,
# where plain ResNet has its BN) is refused instead of being loaded into the wrong layer.
_D2_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str], int], ...] = (
    (re.compile(r"conv1\.weight"), lambda m: "stem.conv1.weight", 4),
    (re.compile(rf"bn1\.{_NORM_FIELD}"), lambda m: f"stem.conv1.norm.{m['field']}", 1),
    (re.compile(rf"{_BLOCK}\.conv(?P<k>[1-3])\.weight"), lambda m: f"{_res(m)}.conv{m['k']}.weight", 4),
    (
        re.compile(rf"{_BLOCK}\.bn(?P<k>[1-3])\.{_NORM_FIELD}"),
        lambda m: f"{_res(m)}.conv{m['k']}.norm.{m['field']}",
        1,
    ),
    (re.compile(rf"{_BLOCK}\.downsample\.0\.weight"), lambda m: f"{_res(m)}.shortcut.weight", 4),
    (
        re.compile(rf"{_BLOCK}\.downsample\.1\.{_NORM_FIELD}"),
        lambda m: f"{_res(m)}.shortcut.norm.{m['field']}",
        1,
    ),
)

# BN step counters: detectron2's FrozenBatchNorm2d has no such buffer (and a fresh SyncBN
# starts its own count), so they are dropped for detectron2 and kept for mmcv's BN layers.
_NUM_BATCHES = re.compile(rf"(bn1|{_BLOCK}\.(bn[1-3]|downsample\.1))\.num_batches_tracked")

_D2_NAME = re.compile(r"(stem|res[2-5]\.\d+)\.")


def _quote(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_MAX_QUOTED])
    more = len(keys) - _MAX_QUOTED
    return shown + (f" (and {more} more)" if more > 0 else "")


def _classify(state: dict[str, torch.Tensor]) -> dict[str, str | None]:
    """Map every timm key to its detectron2 name, or ``None`` for a BN step counter.

    Raises:
        TypeError: if a value is not a tensor.
        ValueError: naming every classifier (``fc.*``) key and every key that matches no rule.
    """
    names: dict[str, str | None] = {}
    classifier: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"value of {key!r} is a {type(value).__name__}, not a tensor")
        if key.startswith("fc."):
            classifier.append(key)
            continue
        if _NUM_BATCHES.fullmatch(key):
            names[key] = None
            continue
        for pattern, rename, rank in _D2_RULES:
            m = pattern.fullmatch(key)
            if m is not None and value.ndim == rank:
                names[key] = rename(m)
                break
        else:
            unknown.append(key)
    problems = []
    if classifier:
        problems.append(
            f"classifier keys {_quote(classifier)}: the pretrained encoder has no classifier "
            "(timm.create_model(..., num_classes=0)); a detector or pose backbone has none either"
        )
    if unknown:
        problems.append(
            f"keys that match no timm ResNet rule (name and tensor rank) {_quote(unknown)}: "
            "expected a plain timm ResNet encoder (conv1, bn1, layer1..4 with conv/bn/"
            "downsample.0/downsample.1); deep-stem or avg-down variants (resnet*d), "
            "SE/attention blocks and whole method checkpoints (online/momentum encoders, "
            "heads) have no detectron2/mmdet counterpart here"
        )
    if problems:
        raise ValueError("cannot convert the encoder state dict: " + "; ".join(problems))
    targets = [n for n in names.values() if n is not None]
    if len(set(targets)) != len(targets):
        # Unreachable for a str-keyed dict under the rules above; guards future rule edits.
        raise ValueError("two timm keys map to the same detectron2 name")
    return names


def _plain(value: torch.Tensor) -> torch.Tensor:
    # numpy has no bfloat16; float32 is what detectron2's and mmdet's models hold anyway.
    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
        value = value.float()
    return value.contiguous()


def timm_to_detectron2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm ResNet encoder state dict to detectron2's ResNet names (MoCo's mapping).

    ``conv1`` → ``stem.conv1``, ``bn1`` → ``stem.conv1.norm``, ``layerN`` → ``res{N+1}``,
    ``bnK`` → ``convK.norm``, ``downsample.0`` → ``shortcut``, ``downsample.1`` →
    ``shortcut.norm``; ``num_batches_tracked`` is dropped. Shapes are unchanged, e.g. for R50
    ``stem.conv1.weight`` (64, 3, 7, 7) and ``res5.2.conv3.weight`` (2048, 512, 1, 1).

    Args:
        state: timm ResNet encoder state dict (``num_classes=0``), tensors on any device.

    Returns:
        New dict in the input's key order: detached, contiguous CPU tensors (bfloat16 upcast to
        float32) that ``.numpy()`` accepts. The tensors may share storage with ``state``.

    Raises:
        ValueError: naming every ``fc.*`` key (the encoder has no classifier) and every key that
            matches no rule; nothing is silently dropped.
        TypeError: if a value is not a tensor.
    """
    names = _classify(state)
    return {name: _plain(state[key]) for key, name in names.items() if name is not None}


def detectron2_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Wrap a detectron2-named state dict the way detectron2 expects a ``.pkl`` checkpoint.

    Args:
        state: output of :func:`timm_to_detectron2`.

    Returns:
        ``{"model": {name: np.ndarray}, "__author__": "regioncl", "matching_heuristics": True}``.
        ``matching_heuristics`` makes ``DetectionCheckpointer`` match names by suffix (the
        model's keys carry ``backbone.bottom_up.``); any ``__author__`` but ``"Caffe2"`` keeps
        it from applying the Caffe2 renaming.

    Raises:
        ValueError: if a key is not a detectron2 ResNet name (``stem.*`` / ``res2..res5.*``),
            e.g. a timm state dict passed without :func:`timm_to_detectron2`.
    """
    wrong = [k for k in state if not _D2_NAME.match(k)]
    if wrong:
        raise ValueError(
            f"keys {_quote(wrong)} are not detectron2 ResNet names; convert a timm state dict "
            "with timm_to_detectron2 first"
        )
    model = {k: np.ascontiguousarray(_plain(v).numpy()) for k, v in state.items()}
    return {"model": model, "__author__": "regioncl", "matching_heuristics": True}


def timm_to_mmdet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Prefix a timm ResNet encoder state dict with ``backbone.`` for mmdet 3.x / mmpose 1.x.

    mmcv-based ``ResNet`` (``mmdet.models.backbones.ResNet``, ``mmpose.models.backbones.ResNet``,
    ``style='pytorch'``) names its layers as torchvision does (``conv1``, ``bn1``,
    ``layerN.b.convK``/``bnK``, ``downsample.0/1``), like timm's ResNet, and puts the stride in
    the 3x3 conv as timm does. Its BatchNorm/SyncBN layers carry ``num_batches_tracked``, so the
    counters are kept (unlike for detectron2). The keys are validated with the same rules as
    :func:`timm_to_detectron2`, because mmengine loads pretrained weights with ``strict=False``
    and would skip a mismatched key with no more than a log line.

    Args:
        state: timm ResNet encoder state dict (``num_classes=0``).

    Returns:
        ``{"backbone." + key: tensor}`` for every key, in order (detached CPU tensors). Load it
        through ``init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=...)`` or as
        the whole model's ``load_from``.

    Raises:
        ValueError: naming ``fc.*`` keys and keys that match no timm ResNet rule.
        TypeError: if a value is not a tensor.
    """
    _classify(state)
    return {f"backbone.{k}": _plain(v) for k, v in state.items()}


def load_encoder_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The timm encoder state dict of anything :func:`regioncl.export.hub.export` accepts.

    Args:
        path: a weights file (``.safetensors``, or ``.pth``/``.pt``/``.bin`` read with
            ``torch.load(weights_only=True)``), an export or checkpoint folder, or a run's
            output folder. Method checkpoints give their online encoder (``encoder.model.``
            keys, DDP/compile wrappers stripped).

    Raises:
        FileNotFoundError: nothing readable at ``path``.
        ValueError: another suffix, content that is not a str → tensor mapping, or a torch file
            holding pickled objects (never unpickled).
    """
    return encoder_state(read_state_file(find_checkpoint_file(path)[0]))


def load_and_convert(
    parser: argparse.ArgumentParser, path: str | os.PathLike, convert: Callable[[dict], dict]
) -> tuple[dict, dict]:
    """The encoder state dict at ``path`` and ``convert`` of it; a wrong path or a state dict
    the conversion refuses ends in a parser error (a message, not a trace)."""
    try:
        state = load_encoder_state(path)
        return state, convert(state)
    except (OSError, ValueError, TypeError) as e:
        parser.error(str(e))
