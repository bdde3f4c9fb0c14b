"""Built-in procedurally generated dataset of shapes on cluttered backgrounds.

``SampleShapes`` lets the whole pipeline (pretraining, linear probe, kNN
evaluation) run end to end without downloading anything. Every image is a pure
function of ``(seed, split, index)``, so two processes, two DataLoader workers or
a resumed run all see exactly the same pixels.

The class of an image is its *shape* only. Colours, position, scale and rotation
of the object, the background and the distractors are all drawn from the same
distributions for every class, so a model can only solve the task by looking at
shape, which is what a useful self-supervised representation should capture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch.utils.data
from PIL import Image, ImageDraw

__all__ = ["SHAPE_CLASSES", "SampleShapes"]

SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "stripes",
    "checkerboard",
    "dots",
    "crescent",
)

# Split ids feed the RNG key, so different splits never share an image.
_SPLIT_IDS = {"train": 0, "val": 1, "validation": 1, "test": 2}
_DEFAULT_PER_CLASS = {"train": 500, "val": 100, "validation": 100, "test": 100}

# Object extent (its diameter) as a fraction of the image side.
_MIN_EXTENT, _MAX_EXTENT = 0.35, 0.70
# Minimum Euclidean RGB distance between object and the background under it,
# so that the object is visible; the colour law stays the same for every class.
_MIN_CONTRAST = 90.0

# A primitive is either ("poly", points) with points an (N, 2) array, or
# ("ellipse", centre (2,), radius, ring_width) with ring_width 0 for a filled disc.
# All coordinates are in unit space: the shape fits in the disc of radius 1.
_Primitive = tuple


def _regular_polygon(n: int, radius: float, phase: float = math.pi / 2) -> np.ndarray:
    angles = phase + 2.0 * math.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, outer: float = 1.0, inner: float = 0.42) -> np.ndarray:
    angles = math.pi / 2 + math.pi * np.arange(2 * points) / points
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross(half_width: float = 0.3, length: float = 0.95) -> np.ndarray:
    w, a = half_width, length
    return np.array(
        [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w)]
    )


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def _crescent(offset: float = 0.5, inner_radius: float = 0.85, steps: int = 16) -> np.ndarray:
    # Unit disc minus a disc of radius `inner_radius` centred at (offset, 0):
    # the outer arc runs over the left side of the unit circle, the inner arc
    # returns over the left side of the offset circle.
    x_int = (1.0 - inner_radius**2 + offset**2) / (2.0 * offset)
    y_int = math.sqrt(max(1.0 - x_int**2, 0.0))
    phi0 = math.atan2(y_int, x_int)
    psi0 = math.atan2(y_int, x_int - offset)
    outer = np.linspace(phi0, 2.0 * math.pi - phi0, steps)
    inner = np.linspace(2.0 * math.pi - psi0, psi0, steps)
    pts = np.concatenate(
        [
            np.stack([np.cos(outer), np.sin(outer)], axis=1),
            np.stack([offset + inner_radius * np.cos(inner), inner_radius * np.sin(inner)], axis=1),
        ]
    )
    # Centre the bounding box so that the shape's position law matches the others.
    pts[:, 0] += (1.0 - x_int) / 2.0
    return pts


def _unit_shapes() -> tuple[tuple[_Primitive, ...], ...]:
    checker = tuple(
        ("poly", _rect(-0.8 + 0.4 * i, -0.8 + 0.4 * j, -0.4 + 0.4 * i, -0.4 + 0.4 * j))
        for i in range(4)
        for j in range(4)
        if (i + j) % 2 == 0
    )
    dots = tuple(
        ("ellipse", np.array(c, dtype=float), 0.24, 0.0)
        for c in ((-0.62, -0.62), (0.62, -0.62), (0.0, 0.0), (-0.62, 0.62), (0.62, 0.62))
    )
    stripes = tuple(("poly", _rect(-0.85, y - 0.17, 0.85, y + 0.17)) for y in (-0.66, 0.0, 0.66))
    shapes = {
        "circle": (("ellipse", np.zeros(2), 1.0, 0.0),),
        "square": (("poly", _rect(-0.75, -0.75, 0.75, 0.75)),),
        "triangle": (("poly", _regular_polygon(3, 1.0)),),
        "star": (("poly", _star()),),
        "cross": (("poly", _cross()),),
        "ring": (("ellipse", np.zeros(2), 1.0, 0.32),),
        "stripes": stripes,
        "checkerboard": checker,
        "dots": dots,
        "crescent": (("poly", _crescent()),),
    }
    return tuple(shapes[name] for name in SHAPE_CLASSES)


_UNIT_SHAPES = _unit_shapes()


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    label: int,
    centre: Sequence[float],
    radius: float,
    angle: float,
    fill: tuple[int, ...] | int,
) -> None:
    """Draws shape ``label`` onto ``draw``.

    Args:
        draw: target drawing context.
        label: class index into ``SHAPE_CLASSES``.
        centre: (x, y) centre of the shape in pixels.
        radius: half the shape's extent in pixels.
        angle: rotation in radians (counter-clockwise in image coordinates).
        fill: colour in the target image's mode.
    """
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    origin = np.asarray(centre, dtype=float)
    for prim in _UNIT_SHAPES[label]:
        if prim[0] == "poly":
            pts = prim[1] @ rot.T * radius + origin
            draw.polygon([tuple(p) for p in pts.tolist()], fill=fill)
        else:
            _, unit_centre, unit_r, unit_width = prim
            cx, cy = unit_centre @ rot.T * radius + origin
            r = unit_r * radius
            box = (cx - r, cy - r, cx + r, cy + r)
            if unit_width > 0:
                draw.ellipse(box, outline=fill, width=max(2, round(unit_width * radius)))
            else:
                draw.ellipse(box, fill=fill)


def shape_mask(label: int, size: int = 64, angle: float = 0.0) -> np.ndarray:
    """Renders the clean silhouette of one class, centred, at 70% of the side.

    Useful to inspect the classes and to test that they are distinct.

    Args:
        label: class index into ``SHAPE_CLASSES``.
        size: side of the square output in pixels.
        angle: rotation in radians.

    Returns:
        Boolean array of shape (size, size), True on the object.
    """
    img = Image.new("L", (size, size), 0)
    _draw_shape(ImageDraw.Draw(img), label, (size / 2, size / 2), _MAX_EXTENT * size / 2, angle, 255)
    return np.asarray(img) > 0


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3)


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    # A grey of random lightness with a slight tint: backgrounds vary, but carry little hue.
    return rng.uniform(40.0, 215.0) + rng.uniform(-20.0, 20.0, size=3)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Linear muted-colour gradient in a random direction, float32 (size, size, 3) in [0, 255]."""
    c0, c1 = _muted_colour(rng), _muted_colour(rng)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    t = coords[None, :] * math.cos(theta) + coords[:, None] * math.sin(theta)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return (c0 + t[..., None] * (c1 - c0)).astype(np.float32)


def _draw_distractors(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int) -> None:
    # Small lines and blobs well below the object's minimum extent, so they add
    # clutter without being mistaken for an object of some class.
    for _ in range(int(rng.integers(2, 6))):
        colour = tuple(int(v) for v in _random_colour(rng))
        x, y = rng.uniform(0, size, size=2)
        if rng.random() < 0.6:
            length = rng.uniform(0.08, 0.25) * size
            phi = rng.uniform(0.0, 2.0 * math.pi)
            end = (x + length * math.cos(phi), y + length * math.sin(phi))
            draw.line([(x, y), end], fill=colour, width=int(rng.integers(1, 3)))
        else:
            r = rng.uniform(0.02, 0.05) * size
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)


def render_shape_image(label: int, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Renders one cluttered RGB image of class ``label``.

    Args:
        label: class index into ``SHAPE_CLASSES``.
        rng: source of all randomness; the image is a pure function of its state.
        size: side of the square image in pixels.

    Returns:
        RGB PIL image of size (size, size).
    """
    bg = _background(rng, size)
    img = Image.fromarray(bg.round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    _draw_distractors(rng, draw, size)

    radius = rng.uniform(_MIN_EXTENT, _MAX_EXTENT) * size / 2.0
    centre = rng.uniform(radius, size - radius, size=2)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    under = bg[int(centre[1]), int(centre[0])]
    colour = _random_colour(rng)
    # Bounded rejection sampling keeps the draw count fixed-ish and the image a
    # pure function of the RNG; the last candidate is used if none passes.
    for _ in range(8):
        if np.linalg.norm(colour - under) >= _MIN_CONTRAST:
            break
        colour = _random_colour(rng)
    _draw_shape(draw, label, centre, radius, angle, tuple(int(v) for v in colour))

    noise_sigma = rng.uniform(0.0, 10.0)
    arr = np.asarray(img, dtype=np.float32) + np.float32(noise_sigma) * rng.standard_normal(
        (size, size, 3), dtype=np.float32
    )
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "RGB")


class SampleShapes(torch.utils.data.Dataset):
    """Built-in procedurally generated labelled images, deterministic, no files.

    Ten shape classes (``SHAPE_CLASSES``) drawn at ``size`` x ``size`` pixels on a
    random colour gradient with random small distractor lines/blobs and pixel
    noise. The object's colour, position, extent (35-70% of the side) and
    rotation are random and their laws do not depend on the class.

    Image ``i`` is generated from ``numpy.random.default_rng([seed, split_id, i])``
    and has label ``i % num_classes``, so any prefix of the dataset is balanced.

    Args:
        split: "train" (500 per class by default), "val"/"validation" or "test"
            (100 per class by default); splits never share images.
        size: image side in pixels.
        num_per_class: images per class; None for the split's default.
        seed: dataset seed; a different seed gives a different dataset.
    """

    def __init__(self, split: str = "train", size: int = 64, num_per_class: int | None = None, seed: int = 0):
        if split not in _SPLIT_IDS:
            raise ValueError(f"SampleShapes: unknown split {split!r}; expected one of {sorted(_SPLIT_IDS)}")
        if size < 8:
            raise ValueError(f"SampleShapes: size must be >= 8 pixels, got {size}")
        if seed < 0:
            raise ValueError(f"SampleShapes: seed must be non-negative, got {seed}")
        self.split = split
        self.size = int(size)
        self.seed = int(seed)
        self.num_per_class = _DEFAULT_PER_CLASS[split] if num_per_class is None else int(num_per_class)
        if self.num_per_class < 0:
            raise ValueError(f"SampleShapes: num_per_class must be >= 0, got {num_per_class}")
        self.classes: list[str] = list(SHAPE_CLASSES)
        self._split_id = _SPLIT_IDS[split]

    def __len__(self) -> int:
        return self.num_per_class * len(self.classes)

    def label_of(self, index: int) -> int:
        """Class index of image ``index`` without rendering it."""
        return index % len(self.classes)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        """Returns (RGB PIL image of size (size, size), class index)."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"SampleShapes index {index} out of range for length {n}")
        index = int(index) % n
        rng = np.random.default_rng([self.seed, self._split_id, index])
        label = self.label_of(index)
        return render_shape_image(label, rng, self.size), label
