"""The pretraining methods, created by name.

Example:
    >>> from regioncl.backbones import create_encoder
    >>> m = build_method("regioncl_m", create_encoder("resnet18"), queue_size=256)
    >>> type(m).__name__, m.region is not None
    ('MoCoV2', True)
"""

from __future__ import annotations

from typing import Any, Callable

from ..backbones import Encoder
from ..region import RegionCL
from .base import SSLMethod
from .mocov2 import MoCoV2

__all__ = ["METHODS", "MoCoV2", "SSLMethod", "build_method"]


def _mocov2(encoder: Encoder, region: RegionCL | None, kw: dict[str, Any]) -> SSLMethod:
    return MoCoV2(encoder, region, **kw)


# name → (builder, uses the RegionCL mechanism)
METHODS: dict[str, tuple[Callable[[Encoder, RegionCL | None, dict[str, Any]], SSLMethod], bool]] = {
    "mocov2": (_mocov2, False),
    "regioncl_m": (_mocov2, True),
}


def build_method(
    name: str,
    encoder: Encoder,
    *,
    region_cells: tuple[int, int] | list[int] | None = None,
    pairing: str = "derangement",
    region_weight: float = 1.0,
    **method_args: Any,
) -> SSLMethod:
    """Create a method by name.

    Args:
        name: one of :data:`METHODS`.
        encoder: the online backbone.
        region_cells, pairing, region_weight: the RegionCL mechanism's settings
            (ignored by the plain base methods).
        **method_args: the base method's own arguments (queue_size, temperature...).
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    builder, uses_region = METHODS[name]
    region = RegionCL(region_cells, pairing, region_weight) if uses_region else None
    return builder(encoder, region, method_args)
