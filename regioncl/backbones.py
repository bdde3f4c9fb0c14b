"""Backbones from timm that return the final feature map.

Every encoder used by regioncl is a plain timm model built with ``num_classes=0``
and ``global_pool=""``, so that ``model(x)`` returns the last feature map
``(B, C, G, G)`` and the weights can later be loaded by plain timm with no
regioncl installed.

Besides any timm CNN name, three names follow the paper (SPEC §9):

* ``resnet50``   — timm's resnet50 (2,048 features);
* ``resnet50w2`` — timm's resnet50 with ``channels=(128, 256, 512, 1024)`` (4,096 features);
* ``resnet50w4`` — timm's resnet50 with ``channels=(256, 512, 1024, 2048)`` (8,192 features).

Example:
    >>> enc = create_encoder("resnet18")
    >>> enc.stride, enc.num_features
    (32, 512)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import timm
import torch
from torch import nn

from .errors import UserError

# The paper's wide ResNets, expressed as timm resnet50 arguments so that plain
# timm can rebuild them from a config.json (timm keeps the 64-channel stem).
WIDE_RESNETS: dict[str, dict[str, Any]] = {
    "resnet50w2": {"architecture": "resnet50", "channels": (128, 256, 512, 1024)},
    "resnet50w4": {"architecture": "resnet50", "channels": (256, 512, 1024, 2048)},
}


@dataclass(frozen=True)
class BackboneSpec:
    """What is needed to rebuild an encoder with plain timm.

    Attributes:
        name: the name the user gave (``resnet50w2``, ``resnet18``...).
        architecture: the timm architecture name (``resnet50`` for the wide ResNets).
        model_args: keyword arguments for ``timm.create_model`` (e.g. ``channels``).
    """

    name: str
    architecture: str
    model_args: dict[str, Any] = field(default_factory=dict)


def resolve_backbone(name: str, **model_args: Any) -> BackboneSpec:
    """Map a user-facing backbone name to a timm architecture and its arguments.

    Raises:
        ValueError: if ``name`` is neither a wide ResNet alias nor a timm model.
    """
    if name in WIDE_RESNETS:
        entry = dict(WIDE_RESNETS[name])
        arch = entry.pop("architecture")
        return BackboneSpec(name, arch, {**entry, **model_args})
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        hint = f" Similar timm names: {', '.join(close)}." if close else ""
        raise UserError(f"Unknown backbone {name!r}: not a timm model and not one of {sorted(WIDE_RESNETS)}.{hint}")
    return BackboneSpec(name, name, dict(model_args))


class Encoder(nn.Module):
    """A timm CNN returning its last feature map.

    Args:
        spec: which timm model to build (see :func:`resolve_backbone`).

    Attributes:
        model: the timm model (``num_classes=0, global_pool=""``); its
            ``state_dict`` is what gets published.
        num_features: channels C of the feature map.
        stride: output stride s in pixels per feature cell, read from the model.
    """

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        self.spec = spec
        if "pretrained" in spec.model_args:
            raise UserError(
                "backbone arguments may not set 'pretrained': start from pretrained weights with "
                "--model.init timm (or a run, an export, a weights file)"
            )
        try:
            self.model = timm.create_model(
                spec.architecture, pretrained=False, num_classes=0, global_pool="", **spec.model_args
            )
        except TypeError as e:  # an argument the architecture does not take
            raise UserError(f"backbone {spec.name!r} does not take the arguments {spec.model_args}: {e}") from None
        self.num_features = int(self.model.num_features)
        self.stride = _output_stride(self.model)

    def check_image_size(self, image_size: int) -> int:
        """Return the feature grid side G = image_size / stride, once one image of that size has
        gone through the backbone (in eval mode, no gradient) and come out as a ``(1, C, G, G)``
        map: a backbone that cannot take the size, or that is not a CNN, is refused before training.

        Raises:
            ValueError: if ``image_size`` is not a positive multiple of the stride, or the backbone
                does not return a ``(B, C, G, G)`` feature map at that size.
        """
        if image_size <= 0 or image_size % self.stride != 0:
            lo = max(self.stride, image_size // self.stride * self.stride)
            raise UserError(
                f"image size {image_size} px is not a multiple of the output stride "
                f"{self.stride} of backbone {self.spec.name!r}: region boxes must align "
                f"with feature cells. Use e.g. {lo} or {lo + self.stride}."
            )
        grid = image_size // self.stride
        weight = next(self.model.parameters())
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model(torch.zeros(1, 3, image_size, image_size, device=weight.device, dtype=weight.dtype))
        except Exception as e:  # timm's own checks: an AssertionError, a RuntimeError of a shape
            raise UserError(
                f"backbone {self.spec.name!r} cannot take {image_size} px images "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no message'}); RegionCL "
                "needs a CNN backbone that returns a feature map"
            ) from None
        finally:
            self.model.train(was_training)
        if out.ndim != 4 or tuple(out.shape[2:]) != (grid, grid):
            raise UserError(
                f"backbone {self.spec.name!r} returned a tensor of shape {tuple(out.shape)} at "
                f"{image_size} px, not a (1, C, {grid}, {grid}) feature map; RegionCL needs a CNN backbone"
            )
        return grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, S, S)`` → feature map ``(B, C, S/s, S/s)``."""
        out = self.model(x)
        if out.ndim != 4:
            raise UserError(
                f"backbone {self.spec.name!r} returned a tensor of shape {tuple(out.shape)}, "
                "not a (B, C, G, G) feature map; RegionCL needs a CNN backbone."
            )
        return out


def _output_stride(model: nn.Module) -> int:
    """The stride of the last feature map, from timm's feature_info."""
    info = getattr(model, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
        if "reduction" in last:
            return int(last["reduction"])
    raise UserError(
        f"{type(model).__name__} does not report its output stride (timm feature_info); "
        "only CNN backbones that return a spatial feature map are supported."
    )


def compile_encoders(model: nn.Module) -> int:
    """``torch.compile`` every :class:`Encoder` in ``model`` in place (``Module.compile``: the
    state dict keeps its keys, so checkpoints and exports are unchanged); returns how many."""
    encoders = [m for m in model.modules() if isinstance(m, Encoder)]
    for encoder in encoders:
        encoder.compile()
    return len(encoders)


def create_encoder(name: str, **model_args: Any) -> Encoder:
    """Build an :class:`Encoder` from a backbone name and extra timm arguments.

    Args:
        name: a timm CNN name or ``resnet50w2``/``resnet50w4``.
        **model_args: forwarded to ``timm.create_model`` (e.g. ``output_stride=8``).
    """
    return Encoder(resolve_backbone(name, **model_args))
