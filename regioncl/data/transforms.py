"""Normalisation constants, the blur kernel size and the evaluation transform (torchvision.transforms.v2).

The MoCo v2 training augmentation is in :mod:`regioncl.data.mocov2`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import v2

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "blur_kernel_size", "eval_transform"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def blur_kernel_size(image_size: int) -> int:
    """Odd Gaussian-blur kernel of about 10% of the image side, at least 3 (23 for 224)."""
    k = max(3, int(0.1 * image_size))
    return k if k % 2 == 1 else k + 1


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]


def eval_transform(
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_pct: float = 0.875,
) -> Callable[[Image.Image], torch.Tensor]:
    """Deterministic evaluation transform: resize shorter side, centre crop, normalize.

    Args:
        image_size: output side in pixels.
        mean: per-channel normalisation mean, in [0, 1] units.
        std: per-channel normalisation std, in [0, 1] units.
        crop_pct: fraction of the resized shorter side kept by the centre crop;
            the shorter side is first resized to ``round(image_size / crop_pct)``.

    Returns:
        Callable mapping an RGB PIL image to a float32 tensor of shape
        (3, image_size, image_size).
    """
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return v2.Compose(
        [
            v2.Resize(round(image_size / crop_pct), antialias=True),
            v2.CenterCrop(image_size),
            *_to_normalized_tensor(mean, std),
        ]
    )
