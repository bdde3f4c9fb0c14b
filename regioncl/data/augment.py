"""MoCo v2 augmentation and the evaluation transform (torchvision.transforms.v2).

All randomness comes from torch's global CPU generator, which is what lets
``TwoViewDataset`` make every view a pure function of (seed, epoch, index) by
seeding that generator inside ``torch.random.fork_rng``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import v2

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "blur_kernel_size", "eval_transform", "mocov2_transform"]

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


def mocov2_transform(
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Callable[[Image.Image], torch.Tensor]:
    """MoCo v2 augmentation for one view.

    RandomResizedCrop(scale 0.2-1) -> ColorJitter(0.4, 0.4, 0.4, 0.1) with p=0.8
    -> RandomGrayscale(p=0.2) -> GaussianBlur(sigma 0.1-2, p=0.5) -> horizontal
    flip -> float tensor -> normalize. Each call draws new random parameters.

    Args:
        image_size: output side in pixels.
        mean: per-channel normalisation mean, in [0, 1] units.
        std: per-channel normalisation std, in [0, 1] units.

    Returns:
        Callable mapping an RGB PIL image (any size) to a float32 tensor of shape
        (3, image_size, image_size).
    """
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=(0.2, 1.0), antialias=True),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(kernel_size=blur_kernel_size(image_size), sigma=(0.1, 2.0))], p=0.5),
            v2.RandomHorizontalFlip(),
            *_to_normalized_tensor(mean, std),
        ]
    )


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
