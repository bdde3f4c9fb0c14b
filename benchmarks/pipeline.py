"""Two-view data pipeline throughput: ours against the official MoCo v2 code's, per worker.

Both pipelines read the same JPEG files and produce the two augmented views of each, in one
process with one torch thread (what a DataLoader worker runs). The reference is the official
MoCo v2 recipe (``main_moco.py --aug-plus``): torchvision's ``ImageFolder`` loader (PIL open +
``convert("RGB")``) and ``TwoCropsTransform`` of ``RandomResizedCrop(scale=(0.2, 1))``,
``RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)``, ``RandomGrayscale(p=0.2)``,
``RandomApply([GaussianBlur([0.1, 2])], p=0.5)`` (MoCo's PIL ``ImageFilter.GaussianBlur``),
``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize``. Ours is :class:`TwoViewDataset`
over an :class:`ImageFolderSource` with :class:`MoCoV2Views`, timed as the workers emit its
views (uint8; the trainer normalises them on the device) and with the normalisation added on
the CPU (what a CPU-only run pays in all).

The two are interleaved A/B/A/B over whole passes through the images; the median pass is reported.
"""

from __future__ import annotations

import io
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from regioncl.data.folder import ImageFolderSource
from regioncl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from regioncl.data.twoview import TwoViewDataset
from regioncl.data.views import MoCoV2Views, normalize

__all__ = [
    "PipelineRow",
    "format_pipeline_table",
    "official_mocov2_views",
    "pipeline_benchmark",
    "synthetic_photo",
    "write_jpegs",
]


def synthetic_photo(rng: np.random.Generator, width: int = 500, height: int = 375) -> Image.Image:
    """A photo-like RGB image: colour noise with a 1/f amplitude spectrum (the statistics of
    natural images, so JPEG sizes and decode times are realistic) plus a few flat shapes (edges)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0

    def spectrum() -> np.ndarray:
        return rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)

    shared = spectrum()  # channels correlate, as in photos
    channels = []
    for _ in range(3):
        x = np.fft.irfft2((0.8 * shared + 0.4 * spectrum()) / f, s=(height, width))
        channels.append((x - x.mean()) / (x.std() + 1e-8))
    pixels = np.stack(channels, -1) * 40 + rng.uniform(60, 190, 3)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 12))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x0, y0, x0 + int(rng.integers(10, 200)), y0 + int(rng.integers(10, 200))]
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


def write_jpegs(
    folder: str | os.PathLike, n: int, width: int = 500, height: int = 375, quality: int = 90, seed: int = 0
) -> list[Path]:
    """Writes ``n`` synthetic photos as JPEGs (every other one portrait) to ``folder``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = (width, height) if i % 2 == 0 else (height, width)
        path = folder / f"{i:05d}.jpg"
        buf = io.BytesIO()
        synthetic_photo(rng, w, h).save(buf, "JPEG", quality=quality)
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


class _MoCoGaussianBlur:
    """The official MoCo v2 blur: PIL's GaussianBlur with radius σ ~ U[0.1, 2]."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def official_mocov2_views(image_size: int = 224):
    """The official MoCo v2 two-view callable (path → two normalised float views), as in its code."""
    import torchvision.transforms as T

    augmentation = T.Compose(
        [
            T.RandomResizedCrop(image_size, scale=(0.2, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([_MoCoGaussianBlur()], p=0.5),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
        ]
    )

    def views(path: str) -> tuple[torch.Tensor, torch.Tensor]:
        with open(path, "rb") as fh:  # torchvision's pil_loader
            image = Image.open(fh).convert("RGB")
        return augmentation(image), augmentation(image)

    return views


@dataclass
class PipelineRow:
    name: str
    ms_per_image: float
    images_per_s: float
    mean: float  # of all output values, normalised units: the two pipelines should agree
    std: float


def pipeline_benchmark(
    folder: str | os.PathLike, image_size: int = 224, rounds: int = 5, draft: bool = True, seed: int = 0
) -> list[PipelineRow]:
    """Times both pipelines on every JPEG under ``folder`` (one torch thread), interleaved.

    Returns one row per pipeline (official first, then ours without and with the CPU
    normalisation), with the median pass time per image and the mean and standard deviation of
    the normalised output values over one untimed pass.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        source = ImageFolderSource(folder)
        paths = [source.path(i) for i in range(len(source))]
        official = official_mocov2_views(image_size)
        ours = TwoViewDataset(source, MoCoV2Views(image_size, draft=draft), seed=seed)

        def run_official() -> list[torch.Tensor]:
            return [torch.stack(official(p)) for p in paths]

        def run_ours() -> list[torch.Tensor]:
            return [torch.stack([item["view_q"], item["view_k"]]) for item in map(ours.__getitem__, keys)]

        def run_ours_normalized() -> list[torch.Tensor]:
            return [normalize(views) for views in run_ours()]

        keys = [(0, i) for i in range(len(paths))]
        random.seed(seed)
        torch.manual_seed(seed)
        runs = {
            "official MoCo v2 (PIL), float views": (run_official, []),
            "regioncl MoCoV2Views, uint8 views": (run_ours, []),
            "regioncl MoCoV2Views + normalisation on the CPU": (run_ours_normalized, []),
        }
        stats = {}
        for name, (fn, _) in runs.items():  # warm-up pass, also gives the output statistics
            values = torch.cat([normalize(v).flatten() if v.dtype == torch.uint8 else v.flatten() for v in fn()])
            stats[name] = (float(values.mean()), float(values.std()))
        for _ in range(rounds):
            for fn, times in runs.values():
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) / len(paths))
        rows = []
        for name, (_, times) in runs.items():
            median = statistics.median(times)
            rows.append(PipelineRow(name, 1000 * median, 1 / median, *stats[name]))
        return rows
    finally:
        torch.set_num_threads(threads)


def format_pipeline_table(rows: list[PipelineRow]) -> str:
    """Markdown table; "speed-up" is each pipeline's images/s over the first row's."""
    lines = [
        "| pipeline | ms / image (2 views) | images / s per worker | speed-up | output mean | output std |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.ms_per_image:.2f} | {r.images_per_s:.1f} | "
            f"{rows[0].ms_per_image / r.ms_per_image:.2f}× | {r.mean:.3f} | {r.std:.3f} |"
        )
    return "\n".join(lines)
