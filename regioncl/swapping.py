"""Region swapping (SPEC §1): paste one cell-aligned box of image π(i) into image i.

All sizes are in *feature cells* unless a name says pixels; one cell is
``stride`` pixels (32 for a ResNet). The box is drawn once per batch (the
paper's "batch-wise implementation") and is exactly aligned with the feature
grid, so the feature mask of the box is exact.

Example:
    >>> x = torch.randn(4, 3, 64, 64)
    >>> out = region_swap(x, stride=16, generator=torch.Generator().manual_seed(0))
    >>> out.composite.shape, out.box.grid
    (torch.Size([4, 3, 64, 64]), 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .errors import UserError

Pairing = Literal["derangement", "reverse"]
PAIRINGS: tuple[str, ...] = ("derangement", "reverse")


@dataclass(frozen=True)
class Box:
    """A box on a G × G feature grid, in cells.

    Attributes:
        top, left: the top-left cell (row, column).
        height, width: the box sides in cells.
        grid: G, the side of the feature grid.
    """

    top: int
    left: int
    height: int
    width: int
    grid: int

    def pixel_slices(self, stride: int) -> tuple[slice, slice]:
        """Row and column slices of the box in pixels, for a cell side of ``stride`` px."""
        return (
            slice(self.top * stride, (self.top + self.height) * stride),
            slice(self.left * stride, (self.left + self.width) * stride),
        )

    def cell_slices(self) -> tuple[slice, slice]:
        """Row and column slices of the box on the feature grid."""
        return self.pixel_slices(1)

    def mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The paste mask ``(G, G)``, float, 1 inside the box and 0 outside."""
        m = torch.zeros(self.grid, self.grid, device=device)
        m[self.cell_slices()] = 1.0
        return m


def default_region_cells(grid: int) -> tuple[int, int]:
    """The box side range for a G × G grid: the authors' 3–5 cells of 7, scaled.

    Returns ``(round(3G/7), round(5G/7))`` clipped to ``[1, G - 1]`` so that both
    the paste and the canvas are non-empty.

    Raises:
        ValueError: if ``grid < 2`` (no box can leave a canvas).
    """
    if grid < 2:
        raise UserError(
            f"the feature grid is {grid}×{grid}: region swapping needs at least 2×2 cells; "
            "use a larger image size or a backbone with a smaller output stride."
        )
    lo = min(max(1, round(3 * grid / 7)), grid - 1)
    hi = min(max(lo, round(5 * grid / 7)), grid - 1)
    return lo, hi


def check_region_cells(region_cells: tuple[int, int] | list[int], grid: int) -> tuple[int, int]:
    """Validate an explicit ``[lo, hi]`` box side range for a G × G grid."""
    lo, hi = (int(v) for v in region_cells)
    if not 1 <= lo <= hi <= grid - 1:
        raise UserError(
            f"region_cells={[lo, hi]} is not a valid box side range for a {grid}×{grid} "
            f"feature grid: need 1 <= lo <= hi <= {grid - 1} so that the canvas is not empty."
        )
    return lo, hi


def sample_box(
    grid: int,
    region_cells: tuple[int, int] | list[int] | None = None,
    generator: torch.Generator | None = None,
) -> Box:
    """Draw one box: sides uniform in ``region_cells`` (inclusive), position uniform inside the grid."""
    lo, hi = default_region_cells(grid) if region_cells is None else check_region_cells(region_cells, grid)
    h, w = (int(v) for v in torch.randint(lo, hi + 1, (2,), generator=generator))
    top = int(torch.randint(0, grid - h + 1, (1,), generator=generator))
    left = int(torch.randint(0, grid - w + 1, (1,), generator=generator))
    return Box(top, left, h, w, grid)


def derangement(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random permutation of ``range(n)`` with no fixed point (CPU, int64).

    Rejection sampling: a random permutation is a derangement with probability ≈ 1/e.
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {n}")
    arange = torch.arange(n)
    while True:
        perm = torch.randperm(n, generator=generator)
        if not bool((perm == arange).any()):
            return perm


def pairing_permutation(
    n: int, pairing: Pairing = "derangement", generator: torch.Generator | None = None
) -> torch.Tensor:
    """The permutation π: composite i receives its paste from image π(i).

    ``"reverse"`` is the authors' pairing (i ↔ n−1−i); it is refused for odd
    ``n`` because the middle image would be pasted into itself.
    """
    if n < 2:
        raise UserError(f"region swapping needs a batch of at least 2 images per process, got {n}")
    if pairing == "derangement":
        return derangement(n, generator)
    if pairing == "reverse":
        if n % 2:
            raise UserError(
                f'pairing="reverse" with an odd batch ({n}) pastes the middle image into itself; '
                'use an even per-process batch or pairing="derangement".'
            )
        return torch.arange(n - 1, -1, -1)
    raise UserError(f"unknown pairing {pairing!r}; expected one of {PAIRINGS}")


@dataclass
class SwapResult:
    """What :func:`region_swap` returns.

    Attributes:
        composite: ``(B, 3, H, W)``; composite i is image i with the box taken from image π(i).
        box: the box, in cells.
        perm: π as int64 ``(B,)`` on the images' device.
    """

    composite: torch.Tensor
    box: Box
    perm: torch.Tensor


def region_swap(
    images: torch.Tensor,
    stride: int,
    region_cells: tuple[int, int] | list[int] | None = None,
    pairing: Pairing = "derangement",
    generator: torch.Generator | None = None,
) -> SwapResult:
    """Build the composite batch (SPEC §1).

    Args:
        images: ``(B, 3, S, S)``, S a multiple of ``stride``, B ≥ 2.
        stride: the backbone's output stride in pixels.
        region_cells: inclusive ``[lo, hi]`` box side range in cells; ``None`` scales the
            authors' 3–5 of 7 to the grid.
        pairing: ``"derangement"`` (default) or ``"reverse"``.
        generator: a CPU generator for the box and π (the draws never touch the device).

    Returns:
        The composites, the box and π.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W), got shape {tuple(images.shape)}")
    b, _, h, w = images.shape
    if h != w or h % stride:
        raise UserError(f"images must be square with a side that is a multiple of the stride {stride}, got {h}×{w} px")
    perm_cpu = pairing_permutation(b, pairing, generator)
    box = sample_box(h // stride, region_cells, generator)
    perm = perm_cpu.to(images.device, non_blocking=True)
    rows, cols = box.pixel_slices(stride)
    composite = images.clone()
    composite[:, :, rows, cols] = images[:, :, rows, cols][perm]
    return SwapResult(composite, box, perm)


@dataclass
class NoSwapResult:
    """What :func:`noswap_views` returns (the ablation of SPEC §7).

    Attributes:
        paste: ``(B, 3, H, W)``; view i is the box of image π(i) on a zero image.
        canvas: ``(B, 3, H, W)``; view i is image i with the box zeroed.
        box: the box, in cells.
        perm: π as int64 ``(B,)`` on the images' device.
    """

    paste: torch.Tensor
    canvas: torch.Tensor
    box: Box
    perm: torch.Tensor


def noswap_views(
    images: torch.Tensor,
    stride: int,
    region_cells: tuple[int, int] | list[int] | None = None,
    pairing: Pairing = "derangement",
    generator: torch.Generator | None = None,
) -> NoSwapResult:
    """The paste and canvas views without swapping (supplementary A.4), same draws as :func:`region_swap`.

    "Zero" is zero in the tensor the encoder sees (after normalisation, i.e. the dataset
    mean colour), as in the authors' code, which fills normalised tensors.
    """
    swap = region_swap(images, stride, region_cells, pairing, generator)
    rows, cols = swap.box.pixel_slices(stride)
    paste = torch.zeros_like(images)
    paste[:, :, rows, cols] = swap.composite[:, :, rows, cols]  # already image π(i)'s region
    canvas = images.clone()
    canvas[:, :, rows, cols] = 0
    return NoSwapResult(paste, canvas, swap.box, swap.perm)
