"""regioncl: RegionCL (region swapping contrastive learning) on timm backbones.

The names below are imported on first use, so that ``import regioncl`` (and the ``regioncl``
command's ``--help``) does not pay for torch and timm.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
#: public name → the module that defines it
_LAZY = {
    "Encoder": ".backbones",
    "create_encoder": ".backbones",
    "METHODS": ".methods",
    "build_method": ".methods",
    "RegionCL": ".region",
}
__all__ = ["METHODS", "Encoder", "RegionCL", "build_method", "create_encoder", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
