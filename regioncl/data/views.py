"""MoCo v2's augmentation, fast: one decode, two crops on uint8, the colour and blur ops as tensor ops.

The distributions are those of the official MoCo v2 recipe (torchvision's
``RandomResizedCrop(scale=(0.2, 1))``, ``RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)``,
``RandomGrayscale(p=0.2)``, ``RandomApply([GaussianBlur(σ ∈ [0.1, 2])], p=0.5)``,
``RandomHorizontalFlip()``), per view:

* crop: torchvision's own ``RandomResizedCrop.get_params`` (area 0.2–1, log-uniform aspect 3/4–4/3);
* colour jitter with probability 0.8: brightness, contrast and saturation factors ~ U[0.6, 1.4],
  hue shift ~ U[-0.1, 0.1], the four in a random order per view;
* grayscale with probability 0.2;
* Gaussian blur with probability 0.5, σ ~ U[0.1, 2], kernel ≈ 10 % of the side (odd), reflect padding;
* horizontal flip with probability 0.5.

Two places run the same operations:

* :class:`MoCoV2Views`, in the DataLoader workers: decodes each image once (JPEGs at a reduced
  size when both crops still cover at least the output size: libjpeg's DCT scaling, "draft
  mode"), crops and resizes on uint8 (torchvision's antialiased uint8 kernel), applies the ops
  to each view and returns two **uint8** views; the trainer normalises on the device
  (:func:`normalize`), so a batch crosses process and host-device boundaries at a quarter of
  the float size.
* :class:`BatchedMoCoV2` (``data.gpu_augment``), on the device for a whole batch, when the CPU
  cannot feed the accelerator: the workers only decode and crop (``MoCoV2Views(..., ops=False)``).

The parameters come from a ``torch.Generator``; the datasets seed it per (seed, epoch, image)
and the device path per (seed, step, process, view), so runs are reproducible and resumable.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF
from PIL import Image

from .transforms import IMAGENET_MEAN, IMAGENET_STD, blur_kernel_size

__all__ = ["BatchedMoCoV2", "MoCoV2Views", "apply_ops", "crop_boxes", "normalize", "sample_params"]

JITTER_P, GRAY_P, BLUR_P, FLIP_P = 0.8, 0.2, 0.5, 0.5
STRENGTH, HUE, SIGMA = 0.4, 0.1, (0.1, 2.0)
SCALE, RATIO = (0.2, 1.0), (3.0 / 4.0, 4.0 / 3.0)
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


# --------------------------------------------------------------------------- #
# Parameters
# --------------------------------------------------------------------------- #


def crop_boxes(width: int, height: int, n: int, generator: torch.Generator) -> list[tuple[int, int, int, int]]:
    """``n`` RandomResizedCrop boxes ``(top, left, height, width)`` of a ``width`` × ``height`` image.

    torchvision's own ``RandomResizedCrop.get_params`` (scale 0.2–1, ratio 3/4–4/3), run on
    ``generator`` (it draws from torch's default generator, which is swapped in for the call).
    """
    shape_only = torch.empty(1, 1, 1).expand(3, height, width)  # get_params reads the size only
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.set_state(generator.get_state())
        boxes = [tuple(T.RandomResizedCrop.get_params(shape_only, list(SCALE), list(RATIO))) for _ in range(n)]
        generator.set_state(torch.default_generator.get_state())
    return boxes


def sample_params(n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Per-view colour, blur and flip parameters of ``n`` views, drawn from ``generator`` (on ``device``)."""

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


# --------------------------------------------------------------------------- #
# Operations on float images in [0, 1], (B, 3, H, W), one factor per image
# --------------------------------------------------------------------------- #


@functools.lru_cache(maxsize=64)
def _constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small tensor of constants, made once per device: building it from a list every call is a
    blocking host-to-device copy on an accelerator."""
    return torch.tensor(values, device=device, dtype=dtype)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _per_image(factor: torch.Tensor | float) -> torch.Tensor | float:
    """One factor per image, broadcastable over (B, 3, H, W); a float serves a single image."""
    return factor.view(-1, 1, 1, 1) if isinstance(factor, torch.Tensor) else factor


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """``factor · x + (1 − factor) · other``, clamped to [0, 1] (torchvision's _blend), in ``x``."""
    f = _per_image(factor)
    return x.mul_(f).add_(other * (1 - f)).clamp_(0, 1)


_HUE_OFFSETS = (5.0, 3.0, 1.0)


def _hue(x: torch.Tensor, shift: torch.Tensor | float) -> torch.Tensor:
    """torchvision's adjust_hue (HSV hue + shift, wrapped), without building HSV.

    A hue rotation keeps each pixel's max ``V`` and chroma ``C = V − min``; channel k becomes
    ``V − C · clamp(min(t, 4 − t), 0, 1)`` with ``t = (n_k + 6 h') mod 6``, n = (5, 3, 1)
    (the closed form of the HSV→RGB table). Arithmetic only, mostly in place: no gathers, no
    comparisons (both slow on CPU); 4× faster than torchvision's tensor version.
    """
    r, g, b = x.unbind(1)
    vmax = torch.maximum(torch.maximum(r, g), b)
    chroma = vmax - torch.minimum(torch.minimum(r, g), b)
    # Which channel is the max (red first, then green, as torchvision): for d = vmax − channel
    # in [0, 1], ceil(d) is 0 exactly when d = 0.
    is_r = torch.ceil(vmax - r).neg_().add_(1)
    is_g = torch.ceil(vmax - g).neg_().add_(1).mul_(1 - is_r)
    # h6 · C: (g − b) if red is the max, (b − r + 2C) if green, (r − g + 4C) if blue.
    h = (r - g).add_(chroma, alpha=4)
    h.addcmul_(is_r, (g - b).sub_(h)).addcmul_(is_g, (b - r).add_(chroma, alpha=2).sub_(h))
    shift = shift.view(-1, 1, 1).to(x.dtype) if isinstance(shift, torch.Tensor) else shift
    h.div_(chroma.clamp(min=1e-12)).add_(6 * shift + 6)  # h6 + 6·shift, made positive (C = 0: any hue)
    t = h.unsqueeze(1) + _constant(_HUE_OFFSETS, x.device, x.dtype).view(1, 3, 1, 1)
    t.sub_(t.div(6).floor_().mul_(6))  # mod 6
    # V − C · clamp(min(t, 4 − t), 0, 1), with min(t, 4 − t) = 2 − |t − 2|
    return t.sub_(2).abs_().neg_().add_(2).clamp_(0, 1).mul_(chroma.unsqueeze(1)).neg_().add_(vmax.unsqueeze(1))


def _adjust(x: torch.Tensor, op: int, factor: torch.Tensor | float) -> torch.Tensor:
    """torchvision's adjust_brightness / contrast / saturation / hue (ops 0–3), one factor per image;
    may work in ``x``."""
    if op == 0:
        return x.mul_(_per_image(factor)).clamp_(0, 1)
    if op == 1:
        return _blend(x, _gray(x).mean((1, 2, 3), keepdim=True), factor)
    if op == 2:
        return _blend(x, _gray(x), factor)
    return _hue(x, factor)


_BLUR_REACH = math.sqrt(2 * math.log(1e7))  # taps beyond this many σ weigh under 1e-7 of the centre


def _blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int, max_sigma: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur, one σ per image, reflect padding (torchvision's gaussian_blur).

    The kernel is torchvision's (``kernel_size`` taps, normalised), shortened to the taps that
    weigh at least 1e-7 of its centre for the largest σ (about 11σ + 1 taps instead of 23 at
    224 px): the dropped weight changes outputs by under 1e-5. The largest σ is ``max_sigma``
    when given (a bound known in advance: reading the batch's largest σ from an accelerator would
    wait for it), else read from ``sigma``. Batches: channels-last depthwise convolutions (faster
    than contiguous ones on CPU).
    """
    b, c, h, w = x.shape
    full_half = (kernel_size - 1) // 2
    largest = float(sigma.max()) if max_sigma is None else max_sigma
    half = max(1, min(full_half, math.ceil(_BLUR_REACH * largest)))
    pos = torch.linspace(-full_half, full_half, kernel_size, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (pos[None] / sigma[:, None].to(x.dtype)) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)
    kernel = kernel[:, full_half - half : full_half + half + 1]
    # Small σ leaves tails of 1e-40 and less: denormal floats, which slow CPU convolutions
    # ten-fold. Zeroing weights below 1e-12 changes no output at float32 precision.
    kernel = kernel.masked_fill(kernel < 1e-12, 0.0)
    if b == 1 and x.device.type == "cpu":  # one image (the workers): shifted in-place sums, ~30 % faster
        taps = kernel[0].tolist()
        y = F.pad(x, [half, half, half, half], mode="reflect")
        for dim, n in ((-1, w), (-2, h)):  # rows, then columns
            acc = y.narrow(dim, 0, n) * taps[0]
            for i in range(1, len(taps)):
                acc.add_(y.narrow(dim, i, n), alpha=taps[i])
            y = acc
        return y
    kernel = kernel.repeat_interleave(c, 0)  # (B·C, taps)
    y = F.pad(x.reshape(1, b * c, h, w), [half, half, half, half], mode="reflect")
    y = y.contiguous(memory_format=torch.channels_last)
    y = F.conv2d(y, kernel[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kernel[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


_FACTORS = ("brightness", "contrast", "saturation", "hue")  # jitter ops 0–3, as in ``order``


def _where(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` for the images of ``mask`` (B,), ``old`` for the others."""
    return torch.where(mask.view(-1, 1, 1, 1), new, old)


def apply_ops(x: torch.Tensor, params: dict[str, torch.Tensor], kernel_size: int) -> torch.Tensor:
    """Colour jitter (each image in its own op order), grayscale, blur and flip of a batch.

    Every op runs on the whole batch and a mask keeps it for the images that draw it: selecting
    rows (``nonzero``) would make the host wait for the device at every op. The blur's taps are
    bounded by the largest σ of the distribution for the same reason.

    Args:
        x: float images in [0, 1], (B, 3, H, W); may be modified in place.
        params: from :func:`sample_params` with B rows.
        kernel_size: blur kernel side.
    """
    factors = [params[name] for name in _FACTORS]
    for slot in range(4):
        for op in range(4):
            selected = params["jitter"] & (params["order"][:, slot] == op)
            x = _where(selected, _adjust(x.clone(), op, factors[op]), x)
    x = _where(params["gray"], _gray(x).expand(-1, 3, -1, -1), x)
    x = _where(params["blur"], _blur(x, params["sigma"], kernel_size, max_sigma=SIGMA[1]), x)
    return _where(params["flip"], x.flip(-1), x)


def _one_view_ops(x: torch.Tensor, p: dict[str, Any], kernel_size: int) -> torch.Tensor:
    """:func:`apply_ops` for one image (1, 3, H, W) with plain-Python parameters, flip excluded
    (the workers flip the uint8 crop; every other op commutes with it): no per-op selection of
    rows (the workers' path)."""
    if p["jitter"]:
        for op in p["order"]:
            x = _adjust(x, op, p[_FACTORS[op]])
    if p["gray"]:
        x = _gray(x).repeat(1, 3, 1, 1)  # not a view: later ops work in place
    if p["blur"]:
        x = _blur(x, torch.tensor([p["sigma"]]), kernel_size)
    return x


def normalize(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 images (0–255) or float images in [0, 1], (B, 3, H, W) → float32, normalised per channel."""
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    inv = _constant(tuple(1.0 / (v * scale) for v in std), images.device, torch.float32).view(1, 3, 1, 1)
    shift = _constant(tuple(-m / s for m, s in zip(mean, std)), images.device, torch.float32).view(1, 3, 1, 1)
    # In place on a fresh copy: broadcasting out-of-place ops cost several times more on CPU.
    return images.to(torch.float32, copy=True).mul_(inv).add_(shift)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Rounds [0, 1] floats to 0–255 (half up; values are non-negative). Modifies ``x``."""
    return x.mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------- #
# Two views per image in the DataLoader workers
# --------------------------------------------------------------------------- #


class MoCoV2Views:
    """Two MoCo v2 views of one image, as uint8 (3, S, S) tensors.

    Called as ``views(load, generator)``, where ``load(draft)`` decodes the image and returns
    an RGB PIL image; ``draft``, when the loader supports it, is called with the encoded
    image's size before decoding and answers the smallest size at which the decoder may
    decode (see ``load_rgb``): both crop boxes are drawn on the full size first, and a JPEG is
    then decoded at 1/2, 1/4 or 1/8 scale only if each box still spans at least ``S`` pixels
    in both directions (the resize stays a downscale).

    Args:
        image_size: output side S.
        ops: False for crops only (flip, colour and blur then run on the device,
            :class:`BatchedMoCoV2`).
        draft: False decodes every image at full size.
    """

    two_view = True  # called with a loader, not an image (see twoview._two_views)

    def __init__(self, image_size: int, ops: bool = True, draft: bool = True):
        self.image_size = int(image_size)
        self.ops = bool(ops)
        self.draft = bool(draft)
        self.kernel_size = blur_kernel_size(self.image_size)

    def __call__(self, load: Callable[[Any], Image.Image], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.image_size
        planned: dict[str, Any] = {}

        def plan(full: tuple[int, int]) -> tuple[int, int] | None:
            boxes = crop_boxes(full[0], full[1], 2, generator)
            planned.update(full=full, boxes=boxes)
            if not self.draft:
                return None
            min_h, min_w = min(b[2] for b in boxes), min(b[3] for b in boxes)
            return -(-full[0] * size // min_w), -(-full[1] * size // min_h)  # ceil

        image = load(plan)
        if "boxes" not in planned:  # the loader did not ask: boxes on the decoded size
            plan(image.size)
        (full_w, full_h), boxes = planned["full"], planned["boxes"]
        sx, sy = image.width / full_w, image.height / full_h
        with warnings.catch_warnings():  # PIL's array is read-only; it is only read
            warnings.simplefilter("ignore", UserWarning)
            pixels = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)  # (3, H, W) channels-last view
        params = {k: t.tolist() for k, t in sample_params(2, generator).items()} if self.ops else None
        views = []
        for v, (top, left, h, w) in enumerate(boxes):
            if sx != 1.0 or sy != 1.0:  # the box on the reduced image
                top, left = min(round(top * sy), image.height - 1), min(round(left * sx), image.width - 1)
                h, w = max(1, min(round(h * sy), image.height - top)), max(1, min(round(w * sx), image.width - left))
            crop = TF.resized_crop(pixels[None], top, left, h, w, [size, size], antialias=True)
            if params is not None:
                one = {k: values[v] for k, values in params.items()}
                if one["flip"]:
                    crop = crop.flip(-1)  # on uint8 (a quarter of the bytes); the other ops commute with it
                if one["jitter"] or one["gray"] or one["blur"]:
                    crop = _to_uint8(_one_view_ops(crop.float().div_(255), one, self.kernel_size))
            views.append(crop[0].contiguous())
        return views[0], views[1]


# --------------------------------------------------------------------------- #
# The same operations on the device, batched
# --------------------------------------------------------------------------- #


class BatchedMoCoV2:
    """Flip, colour jitter, grayscale and blur of a batch of uint8 crops on its device, then normalisation.

    Args:
        image_size: the crop side (sets the blur kernel as the CPU path does).
        mean, std: normalisation, in [0, 1] units.
    """

    def __init__(self, image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.kernel_size = blur_kernel_size(image_size)
        self.mean, self.std = tuple(mean), tuple(std)

    def apply(self, images: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """``images`` uint8 or float in [0, 1], (B, 3, S, S), with the given parameters; in float32
        whatever autocast is on around it (the ops write into float32 batches)."""
        with torch.autocast(images.device.type, enabled=False):
            x = images.float() / 255 if images.dtype == torch.uint8 else images.float().clone()
            return normalize(apply_ops(x, params, self.kernel_size), self.mean, self.std)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, sample_params(images.shape[0], generator, images.device))
