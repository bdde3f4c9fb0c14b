"""regioncl: RegionCL (region swapping contrastive learning) on timm backbones."""

from .backbones import Encoder, create_encoder
from .methods import METHODS, build_method
from .region import RegionCL

__version__ = "0.1.0"
__all__ = ["METHODS", "Encoder", "RegionCL", "build_method", "create_encoder", "__version__"]
