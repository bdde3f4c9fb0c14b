"""The pretraining methods, created by name.

Example:
    >>> from regioncl.backbones import create_encoder
    >>> m = build_method("regioncl_m", create_encoder("resnet18"), queue_size=256)
    >>> type(m).__name__, m.region is not None
    ('MoCoV2', True)
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ..backbones import Encoder
from ..errors import UserError
from ..region import RegionCL
from .base import SSLMethod
from .densecl import DenseCL
from .mocov2 import MoCoV2
from .simsiam import SimSiam

__all__ = ["BASE_OF", "METHODS", "DenseCL", "MoCoV2", "SSLMethod", "SimSiam", "build_method", "method_arguments"]

# name → (base method class, RegionCL mechanism: None, or whether it swaps)
METHODS: dict[str, tuple[type[SSLMethod], bool | None]] = {
    "mocov2": (MoCoV2, None),
    "regioncl_m": (MoCoV2, True),
    "regioncl_m_noswap": (MoCoV2, False),
    "densecl": (DenseCL, None),
    "regioncl_d": (DenseCL, True),
    "simsiam": (SimSiam, None),
    "regioncl_s": (SimSiam, True),
}
#: each RegionCL variant's plain base method, for comparisons.
BASE_OF = {"regioncl_m": "mocov2", "regioncl_m_noswap": "mocov2", "regioncl_d": "densecl", "regioncl_s": "simsiam"}


def _init_names(cls: type) -> set[str]:
    return {n for c in cls.__mro__ if c not in (object, nn.Module) for n in inspect.signature(c.__init__).parameters}


def method_arguments(name: str) -> set[str]:
    """The arguments method ``name``'s constructor takes."""
    return _init_names(METHODS[name][0])


def _accepted(cls: type, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments ``cls`` takes; a name no method takes is a typo and is refused."""
    known = set().union(*(_init_names(c) for c, _ in METHODS.values()))
    unknown = sorted(set(args) - known)
    if unknown:
        raise TypeError(
            f"no method takes the argument(s) {unknown}; known: {sorted(known - {'self', 'encoder', 'region', 'kwargs'})}"
        )
    names = _init_names(cls)
    return {k: v for k, v in args.items() if k in names and v is not None}


def build_method(
    name: str,
    encoder: Encoder,
    *,
    region_cells: tuple[int, int] | list[int] | None = None,
    pairing: str = "derangement",
    region_weight: float | None = None,
    region_min_content: float = 0.0,
    **method_args: Any,
) -> SSLMethod:
    """Create a method by name.

    Args:
        name: one of :data:`METHODS`.
        encoder: the online backbone.
        region_cells, pairing, region_min_content: the RegionCL mechanism's settings (ignored by the
            plain base methods; :class:`RegionCL`).
        region_weight: the weight of L_reg; ``None`` takes the method's default (1; 1 − λ for
            RegionCL-D).
        **method_args: arguments of the base methods (queue_size, temperature, pred_dim...);
            each method takes those it has, and ``None`` means "the method's default", so
            one configuration serves every method.
    """
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    cls, swap = METHODS[name]
    region = None if swap is None else RegionCL(region_cells, pairing, swap=swap, min_content=region_min_content)
    return cls(encoder, region, **_accepted(cls, {**method_args, "region_weight": region_weight}))
