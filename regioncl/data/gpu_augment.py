"""MoCo v2's colour and blur augmentation on the device, batched (for hosts that cannot feed the GPU).

With ``gpu_augment`` the DataLoader workers only decode and random-resize-crop
(:func:`mocov2_crop_transform`, uint8); :class:`BatchedMoCoV2` then applies, per image and
with the distributions of :func:`~regioncl.data.augment.mocov2_transform`:

* colour jitter with probability 0.8: brightness, contrast and saturation factors
  ~ U[0.6, 1.4], hue shift ~ U[-0.1, 0.1], the four in a random order per image;
* grayscale with probability 0.2;
* Gaussian blur with probability 0.5, σ ~ U[0.1, 2], kernel ≈ 10 % of the side (odd), reflect padding;
* horizontal flip with probability 0.5;

then normalises. The parameters come from one ``torch.Generator`` per call, so a run seeds
them per (seed, step, process, view) and a resumed run draws the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from .augment import IMAGENET_MEAN, IMAGENET_STD, blur_kernel_size

__all__ = ["BatchedMoCoV2", "mocov2_crop_transform", "sample_params"]

JITTER_P, GRAY_P, BLUR_P, FLIP_P = 0.8, 0.2, 0.5, 0.5
STRENGTH, HUE, SIGMA = 0.4, 0.1, (0.1, 2.0)
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def mocov2_crop_transform(image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    """The CPU half: RandomResizedCrop(scale 0.2–1) to a uint8 (3, S, S) tensor."""
    return v2.Compose([v2.RandomResizedCrop(image_size, scale=(0.2, 1.0), antialias=True), v2.PILToTensor()])


def sample_params(n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Per-image parameters of ``n`` images, drawn from ``generator`` (on ``device``)."""

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.empty(n, device=device).uniform_(lo, hi, generator=generator)

    def coin(p: float) -> torch.Tensor:
        return torch.rand(n, device=device, generator=generator) < p

    return {
        "jitter": coin(JITTER_P),
        "order": torch.rand(n, 4, device=device, generator=generator).argsort(dim=1),  # a uniform permutation
        "brightness": uniform(1 - STRENGTH, 1 + STRENGTH),
        "contrast": uniform(1 - STRENGTH, 1 + STRENGTH),
        "saturation": uniform(1 - STRENGTH, 1 + STRENGTH),
        "hue": uniform(-HUE, HUE),
        "gray": coin(GRAY_P),
        "blur": coin(BLUR_P),
        "sigma": uniform(*SIGMA),
        "flip": coin(FLIP_P),
    }


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    table = torch.stack(
        [torch.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], 1
    )  # (B, 6, 3, H, W)
    index = i[:, None, None].expand(-1, 1, 3, -1, -1)
    return table.gather(1, index).squeeze(1)


def _adjust(x: torch.Tensor, op: int, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_brightness / contrast / saturation / hue (ops 0–3) on floats in [0, 1]."""
    if op == 0:
        return _blend(x, torch.zeros_like(x), factor)
    if op == 1:
        return _blend(x, _gray(x).mean((1, 2, 3), keepdim=True).expand_as(x), factor)
    if op == 2:
        return _blend(x, _gray(x).expand_as(x), factor)
    hsv = _rgb_to_hsv(x)
    hsv[:, 0] = torch.remainder(hsv[:, 0] + factor.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(hsv)


def _blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur, one σ per image, reflect padding (as torchvision's gaussian_blur)."""
    b, c, h, w = x.shape
    half = (kernel_size - 1) * 0.5
    pos = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (pos[None] / sigma[:, None].to(x.dtype)) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B·C, k)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, b * c, h, w), [pad, pad, pad, pad], mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kernel[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


class BatchedMoCoV2:
    """Colour jitter, grayscale, blur, flip and normalisation of a batch on its device.

    Args:
        image_size: the crop side (sets the blur kernel as the CPU path does).
        mean, std: normalisation, in [0, 1] units.
    """

    def __init__(self, image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.kernel_size = blur_kernel_size(image_size)
        self.mean, self.std = tuple(mean), tuple(std)

    def apply(self, images: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """``images`` uint8 or float in [0, 1], (B, 3, S, S), with the given parameters."""
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        factors = [params["brightness"], params["contrast"], params["saturation"], params["hue"]]
        for slot in range(4):  # each image applies its own permutation of the four
            for op in range(4):
                rows = (params["jitter"] & (params["order"][:, slot] == op)).nonzero().squeeze(1)
                if rows.numel():
                    x[rows] = _adjust(x[rows], op, factors[op][rows])
        rows = params["gray"].nonzero().squeeze(1)
        if rows.numel():
            x[rows] = _gray(x[rows]).expand(-1, 3, -1, -1)
        rows = params["blur"].nonzero().squeeze(1)
        if rows.numel():
            x[rows] = _blur(x[rows], params["sigma"][rows], self.kernel_size)
        x = torch.where(params["flip"].view(-1, 1, 1, 1), x.flip(-1), x)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, sample_params(images.shape[0], generator, images.device))
