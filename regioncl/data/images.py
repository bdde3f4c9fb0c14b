"""Decoding images: every failure to read one becomes a :class:`BadImageError`.

All sources decode through :func:`load_rgb`, which turns any failure to read an image
(unreadable, truncated, empty, decompression bomb) into a :class:`BadImageError` so that
callers can skip the image instead of crashing a long training run; :func:`load_decodable`
does the skipping. Grayscale, 16-bit, palette, RGBA and CMYK images come out as RGB.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

logger = logging.getLogger("regioncl.data")

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")

# Transparent pixels are composited onto white, the usual convention for web
# images (logos, icons) whose designers assume a white page.
ALPHA_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

_warned: set[str] = set()  # bad images this process has named: later passes count them without repeating it


def log_bad_image(image_id: str, reason: str, where: str = "") -> None:
    """Name a skipped image once per process (a warning; each loader worker is one), at debug level
    on later passes: a run of many epochs over a folder with a broken file would otherwise repeat
    the same line each epoch."""
    first = image_id not in _warned
    _warned.add(image_id)
    logger.log(logging.WARNING if first else logging.DEBUG, "skipping bad image %s%s: %s%s", image_id, where,
               reason, "" if first else " (named before)")


#: consecutive unreadable images an item walks past before it gives up: a folder of corrupt downloads
#: sorted together is skipped, counted and judged by the run's limits (data.max_bad_*), not fatal at once.
MAX_CONSECUTIVE_BAD = 100


def load_decodable(source: Any, index: int, max_retries: int = MAX_CONSECUTIVE_BAD,
                   draft: Callable | None = None) -> tuple[Any, int, int, int]:
    """``(image, label, index used, bad images skipped)``: ``source[index]``, or when that image
    cannot be decoded the next decodable one (``index + 1``, … wrapping around), each bad
    one logged with its id. ``draft`` goes to the source's ``load(index, draft)`` where it has
    one (see :func:`load_rgb`); other sources are indexed.

    Raises:
        RuntimeError: after ``max_retries + 1`` consecutive bad images.
    """
    n = len(source)
    max_retries = min(max_retries, n - 1)  # every image once at most
    current = index
    reasons = []
    load = getattr(source, "load", None)
    for attempt in range(max_retries + 1):
        try:
            image, label = load(current, draft) if load is not None else source[current]
            return image, label, current, attempt
        except BadImageError as err:
            log_bad_image(err.image_id, err.reason, f" (index {current})")
            reasons.append(f"{err.image_id}: {err.reason}")
            current = (current + 1) % n
    raise RuntimeError(
        f"{max_retries + 1} consecutive bad images starting at index {index}; giving up. Last errors: {reasons[-3:]}"
    )


class BadImageError(ValueError):
    """An image could not be decoded.

    Attributes:
        image_id: file path or dataset key of the image.
        reason: short human-readable cause.
    """

    def __init__(self, image_id: Any, reason: str):
        # Both values go to ``args`` so the exception survives pickling across
        # DataLoader worker processes.
        super().__init__(image_id, reason)
        self.image_id = image_id
        self.reason = reason

    def __str__(self) -> str:
        return f"bad image {self.image_id!s}: {self.reason}"



def _gray_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Maps a high-bit-depth grayscale array to uint8 in [0, 255].

    16-bit modes use their full range (65535 -> 255). ``I`` (int32) and ``F``
    (float32) carry no declared range, so it is inferred from the values:
    floats within [0, 1] are treated as normalised intensities, values within
    [0, 255] as 8-bit, within [0, 65535] as 16-bit, and anything else is
    min-max normalised.
    """
    a = arr.astype(np.float64)
    if mode.startswith("I;16"):
        scale = 65535.0
        lo = 0.0
    else:
        finite = a[np.isfinite(a)]
        lo_v = float(finite.min()) if finite.size else 0.0
        hi_v = float(finite.max()) if finite.size else 0.0
        lo = 0.0
        if mode == "F" and lo_v >= 0.0 and hi_v <= 1.0:
            scale = 1.0
        elif lo_v >= 0.0 and hi_v <= 255.0:
            scale = 255.0
        elif lo_v >= 0.0 and hi_v <= 65535.0:
            scale = 65535.0
        else:
            lo, scale = lo_v, max(hi_v - lo_v, 1e-12)
        a = np.nan_to_num(a, nan=lo, posinf=lo + scale, neginf=lo)
    return np.clip(np.rint((a - lo) * (255.0 / scale)), 0, 255).astype(np.uint8)


def _composite(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    rgba = img.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(base, rgba).convert("RGB")


def to_rgb(img: Image.Image, background: tuple[int, int, int] = ALPHA_BACKGROUND) -> Image.Image:
    """Converts a decoded PIL image of any common mode to 8-bit RGB.

    * ``L``/``1``/``CMYK``/``YCbCr``/``HSV``: PIL's own conversion.
    * ``I;16*``, ``I``, ``F`` (high-bit-depth grayscale): rescaled to 8 bits
      (see ``_gray_to_uint8``) instead of PIL's clipping, which would turn most
      16-bit pixels white.
    * ``P``: via RGBA when the palette has transparency, else straight to RGB.
    * ``RGBA``/``LA``/``PA``/``RGBa``/``La``: composited onto ``background``
      (white by default), so transparent pixels do not take arbitrary colours.

    Args:
        img: a loaded PIL image.
        background: RGB colour behind transparent pixels.

    Returns:
        A PIL image in mode "RGB" of the same size.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        gray = _gray_to_uint8(np.asarray(img), mode)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "P":
        if "transparency" in img.info:
            return _composite(img, background)
        return img.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composite(img, background)
    return img.convert("RGB")


def _open_source(data: Any) -> tuple[Any, Any]:
    """Normalises the accepted inputs to ``(file-like or path, default id)``."""
    if isinstance(data, dict):
        raw, path = data.get("bytes"), data.get("path")
        if raw is not None:
            return io.BytesIO(raw), path
        if path:
            return path, path
        raise ValueError("image dict has neither 'bytes' nor 'path'")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(data)), None
    if isinstance(data, (str, os.PathLike)):
        return data, os.fspath(data)
    if hasattr(data, "read"):
        return data, getattr(data, "name", None)
    raise TypeError(f"cannot decode an image from {type(data).__name__}")


def load_rgb(
    data: Any,
    image_id: Any = None,
    background: tuple[int, int, int] = ALPHA_BACKGROUND,
    draft: Callable[[tuple[int, int]], tuple[int, int] | None] | None = None,
) -> Image.Image:
    """Decodes an image fully and returns it in RGB mode.

    Args:
        data: a path, raw encoded bytes, a binary file object, a
            ``{"bytes": ..., "path": ...}`` dict (Hugging Face ``Image(decode=False)``)
            or an already decoded PIL image.
        image_id: identifier used in error messages; defaults to the path.
        background: RGB colour behind transparent pixels (see ``to_rgb``).
        draft: called with the encoded image's (width, height) once its header is read; a
            returned (width, height) lets a JPEG decode at a reduced scale no smaller than
            that (PIL's ``Image.draft``: 1/2, 1/4 or 1/8). Not called for decoded images.

    Returns:
        A fully loaded PIL image in mode "RGB" (smaller than encoded when drafted).

    Raises:
        BadImageError: the image is empty, unreadable, truncated, exceeds
            ``PIL.Image.MAX_IMAGE_PIXELS`` (decompression bomb) or has a mode
            that cannot be converted to RGB.
    """
    if isinstance(data, Image.Image):
        img = data
        ident = image_id if image_id is not None else getattr(data, "filename", None) or "<PIL image>"
        try:
            img.load()
        except Exception as exc:  # PIL decoders raise many unrelated types on corrupt data.
            raise BadImageError(ident, f"{type(exc).__name__}: {exc}") from exc
    else:
        try:
            fp, default_id = _open_source(data)
        except (TypeError, ValueError) as exc:
            raise BadImageError(image_id if image_id is not None else "<unknown>", str(exc)) from exc
        ident = image_id if image_id is not None else default_id or "<bytes>"
        if isinstance(fp, (str, os.PathLike)) and os.path.isfile(fp) and os.path.getsize(fp) == 0:
            raise BadImageError(ident, "empty file (0 bytes)")
        try:
            # Escalate PIL's decompression-bomb warning so that oversized images
            # are rejected like the 2x-limit ones PIL already refuses.
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(fp) as opened:
                    wanted = draft(opened.size) if draft is not None else None
                    if wanted is not None:
                        opened.draft(opened.mode, wanted)  # no-op except for JPEG
                    opened.load()
                    img = opened
        except FileNotFoundError as exc:
            raise BadImageError(ident, f"file not found: {exc}") from exc
        except Exception as exc:  # PIL decoders raise many unrelated types on corrupt data.
            raise BadImageError(ident, f"{type(exc).__name__}: {exc}") from exc
    try:
        return to_rgb(img, background)
    except (OSError, ValueError) as exc:
        raise BadImageError(ident, f"cannot convert mode {img.mode!r} to RGB: {exc}") from exc
