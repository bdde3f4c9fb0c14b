"""Image sources: folders, Hugging Face ``datasets`` and the built-in sample.

Every source yields ``(PIL.Image in RGB mode, label: int)`` with label -1 when
unknown. All decoding goes through :func:`load_rgb`, which turns any failure to
read an image (unreadable, truncated, empty, decompression bomb) into a
:class:`BadImageError` so that callers can skip the image instead of crashing a
long training run.

``datasets`` is imported lazily: it is slow to import and only needed for
``hf:`` sources.
"""

from __future__ import annotations

import glob
import io
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch.utils.data
from PIL import Image

from .sample import SampleShapes

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadImageError",
    "HFSource",
    "ImageFolderSource",
    "build_source",
    "load_rgb",
    "to_rgb",
]

logger = logging.getLogger("regioncl.data")

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")

# Transparent pixels are composited onto white, the usual convention for web
# images (logos, icons) whose designers assume a white page.
ALPHA_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

_IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp")
_LABEL_COLUMN_NAMES = ("label", "labels", "cls", "target")
def load_decodable(source: Any, index: int, max_retries: int = 10, draft: Callable | None = None) -> tuple[Any, int, int, int]:
    """``(image, label, index used, bad images skipped)``: ``source[index]``, or when that image
    cannot be decoded the next decodable one (``index + 1``, … wrapping around), each bad
    one logged with its id. ``draft`` goes to the source's ``load(index, draft)`` where it has
    one (see :func:`load_rgb`); other sources are indexed.

    Raises:
        RuntimeError: after ``max_retries + 1`` consecutive bad images.
    """
    n = len(source)
    current = index
    reasons = []
    load = getattr(source, "load", None)
    for attempt in range(max_retries + 1):
        try:
            image, label = load(current, draft) if load is not None else source[current]
            return image, label, current, attempt
        except BadImageError as err:
            logger.warning("skipping bad image %s (index %d): %s", err.image_id, current, err.reason)
            reasons.append(f"{err.image_id}: {err.reason}")
            current = (current + 1) % n
    raise RuntimeError(
        f"{max_retries + 1} consecutive bad images starting at index {index}; giving up. Last errors: {reasons[-3:]}"
    )


_KNOWN_SPLITS = ("train", "validation", "valid", "val", "test")


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


# --------------------------------------------------------------------------- #
# Decoding
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# Folder source
# --------------------------------------------------------------------------- #


class _PackedStrings:
    """Immutable list of strings stored in two numpy arrays.

    A Python list of millions of ``str`` objects gets copied page by page into
    every forked DataLoader worker as reference counts are touched; two flat
    arrays do not.
    """

    def __init__(self, items: Sequence[str]):
        encoded = [s.encode("utf-8", "surrogateescape") for s in items]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        self._offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        lo, hi = self._offsets[i], self._offsets[i + 1]
        return self._blob[lo:hi].tobytes().decode("utf-8", "surrogateescape")


def _list_images(root: str, extensions: Sequence[str]) -> list[str]:
    """Sorted relative POSIX paths of image files under ``root``, hidden entries skipped."""
    exts = tuple(e.lower() for e in extensions)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        # Hidden files include macOS "._x.jpg" resource forks, a classic source of
        # undecodable "images".
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(exts):
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                found.append(rel.replace(os.sep, "/"))
    found.sort()
    return found


def _folder_labels(relpaths: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Class names and labels from first-level subfolders, or ([], all -1)."""
    parts = [p.split("/", 1) for p in relpaths]
    if not parts or any(len(p) == 1 for p in parts):
        return [], np.full(len(relpaths), -1, dtype=np.int64)
    classes = sorted({p[0] for p in parts})
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.array([index[p[0]] for p in parts], dtype=np.int64)


class ImageFolderSource(torch.utils.data.Dataset):
    """Images found recursively under a folder.

    If every image sits inside a first-level subfolder, the subfolder names
    (sorted) are the classes and label = index of the name; otherwise labels are
    -1 and ``classes`` is empty. Files and folders whose name starts with "." are
    ignored. EXIF orientation is not applied (as in torchvision's ImageFolder).

    Args:
        root: folder to scan.
        extensions: accepted file name endings, case-insensitive.

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a directory.
        ValueError: no image file was found under ``root``.
    """

    def __init__(self, root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS):
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"image folder {self.root!r} does not exist or is not a directory")
        relpaths = _list_images(self.root, extensions)
        if not relpaths:
            raise ValueError(f"no image files with extensions {tuple(extensions)} found under {self.root!r}")
        self.classes, self._labels = _folder_labels(relpaths)
        self._paths = _PackedStrings(relpaths)

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, index: int) -> str:
        """Full path of image ``index``."""
        return os.path.join(self.root, self._paths[index])

    def label_of(self, index: int) -> int:
        """Label of image ``index`` without decoding it."""
        return int(self._labels[index])

    def load(self, index: int, draft: Callable | None = None) -> tuple[Image.Image, int]:
        """Returns (RGB PIL image, label); raises BadImageError if it cannot be decoded.
        ``draft``: see :func:`load_rgb`."""
        path = self.path(index)
        return load_rgb(path, path, draft=draft), self.label_of(index)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self.load(index)


# --------------------------------------------------------------------------- #
# Hugging Face source
# --------------------------------------------------------------------------- #


def _is_saved_to_disk(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or (
        os.path.isfile(os.path.join(path, "state.json")) and os.path.isfile(os.path.join(path, "dataset_info.json"))
    )


def _split_of_file(relpath: str) -> str | None:
    """Split named by a file's path (HF conventions: ``train/...``, ``train-0000.parquet``)."""
    for part in re.split(r"[/\\]", relpath.lower()):
        stem = part[: -len(".parquet")] if part.endswith(".parquet") else part
        for split in _KNOWN_SPLITS:
            if stem == split or re.match(rf"^{split}[-_.]", stem):
                return split
    return None


def _for_split(root: str, files: list[str], split: str) -> list[str]:
    """The ``files`` (under ``root``) of ``split``; all of them if none names a split."""
    tagged = {f: _split_of_file(os.path.relpath(f, root)) for f in files}
    if not any(tagged.values()):
        return files
    base = re.sub(r"\[.*\]$", "", split)
    return [f for f, s in tagged.items() if s == base]


def _parquet_files_for_split(path: str, split: str) -> list[str]:
    """Parquet files under ``path`` for ``split``; all of them if none names a split."""
    if os.path.isfile(path):
        return [path]
    return _for_split(path, sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True)), split)


_FOLDER_SHARDS = 1024


def _stream_image_folder(path: str, images: list[str], split: str) -> Any:
    """A local folder of images (``[SPLIT/]CLASS/x.jpg`` or flat) as a stream of up to 1,024 shards.

    ``load_dataset(folder, streaming=True)`` makes a single shard of all the files (datasets
    5.2), which no two readers could share; here shard k holds files k, k + K, … of the sorted
    list (every class in every shard) and each example is ``{"image": {"path"}, "label"}``.
    ``images``: the folder's image files, relative to ``path`` (``_list_images``).
    """
    import datasets

    files = _for_split(path, [os.path.join(path, f) for f in images], split)
    if not files:
        raise ValueError(f"no image files for split {split!r} under {path!r}")
    # Class = first folder below the split folder (if the paths name a split) or below ``path``.
    rel = [os.path.relpath(f, path).replace(os.sep, "/") for f in files]
    if all(_split_of_file(r.split("/", 1)[0]) for r in rel):
        rel = [r.split("/", 1)[1] if "/" in r else r for r in rel]
    classes, labels = _folder_labels(rel)
    k = min(len(files), _FOLDER_SHARDS)
    shards = [[(files[i], int(labels[i])) for i in range(j, len(files), k)] for j in range(k)]
    features = {"image": datasets.Image(decode=False)}
    if classes:
        features["label"] = datasets.ClassLabel(names=classes)

    def examples(shards: list[list[tuple[str, int]]]) -> Iterator[dict]:
        for shard in shards:
            for file, label in shard:
                yield {"image": {"path": file, "bytes": None}, **({"label": label} if classes else {})}

    return datasets.IterableDataset.from_generator(
        examples, features=datasets.Features(features), gen_kwargs={"shards": shards})


def _load_hf(path: str, split: str, streaming: bool, data_files: Any, cache_dir: str | None) -> Any:
    import datasets

    if data_files is not None:
        return datasets.load_dataset(path, data_files=data_files, split=split, streaming=streaming, cache_dir=cache_dir)
    if os.path.isdir(path) and _is_saved_to_disk(path):
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"split {split!r} not in saved dataset; available: {sorted(ds)}")
            ds = ds[split]
        # Shards let processes and workers read disjoint parts: a few hundred contiguous ranges.
        return ds.to_iterable_dataset(num_shards=max(1, min(len(ds), 256))) if streaming else ds
    if (os.path.isfile(path) and path.endswith(".parquet")) or (
        os.path.isdir(path) and glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True)
    ):
        files = _parquet_files_for_split(path, split)
        if not files:
            raise ValueError(f"no parquet file for split {split!r} under {path!r}")
        base = re.sub(r"\[.*\]$", "", split)
        return datasets.load_dataset(
            "parquet", data_files={base: files}, split=split, streaming=streaming, cache_dir=cache_dir
        )
    images = _list_images(path, IMAGE_EXTENSIONS) if streaming and os.path.isdir(path) else []
    if images:  # walked once: ImageNet's folder holds 1.28 million files
        return _stream_image_folder(path, images, split)
    return datasets.load_dataset(path, split=split, streaming=streaming, cache_dir=cache_dir)


def _column_names(ds: Any) -> list[str]:
    if ds.features is not None:
        return list(ds.features)
    if getattr(ds, "column_names", None):
        return list(ds.column_names)
    # Some streaming builders only know their columns after reading an example.
    return list(next(iter(ds.take(1))).keys())


def _pick_image_column(ds: Any, columns: list[str], requested: str | None) -> str:
    import datasets

    if requested is not None:
        if requested not in columns:
            raise ValueError(f"image column {requested!r} not found; available columns: {columns}")
        return requested
    features = ds.features or {}
    for name in columns:
        if isinstance(features.get(name), datasets.Image):
            return name
    for name in _IMAGE_COLUMN_NAMES:
        if name in columns:
            return name
    raise ValueError(
        f"no image column found (looked for an Image feature or {_IMAGE_COLUMN_NAMES}); available columns: {columns}"
    )


def _is_integer_feature(feature: Any) -> bool:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return True
    return isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))


def _pick_label_column(ds: Any, columns: list[str], requested: str | None) -> str | None:
    import datasets

    features = ds.features or {}
    if requested is not None:
        if requested not in columns:
            raise ValueError(f"label column {requested!r} not found; available columns: {columns}")
        if requested in features and not _is_integer_feature(features[requested]):
            raise ValueError(
                f"label column {requested!r} has type {features[requested]}; expected ClassLabel or an integer Value"
            )
        return requested
    for name in columns:
        if isinstance(features.get(name), datasets.ClassLabel):
            return name
    for name in _LABEL_COLUMN_NAMES:
        if name in columns and (name not in features or _is_integer_feature(features[name])):
            return name
    return None


def _as_label(value: Any) -> int:
    if value is None:
        return -1
    if isinstance(value, (list, tuple)):
        # Multi-label rows have no single class; treat as unlabelled.
        return -1
    return int(value)


class HFSource(torch.utils.data.Dataset):
    """A Hugging Face ``datasets`` dataset as an image source, map-style or streaming.

    ``path`` may be a Hub id, a local directory of ``.parquet`` files (or a
    single file; loaded offline with the ``parquet`` builder, files whose path
    names a split such as ``train-*.parquet`` or ``val/`` are selected by split),
    a directory written by ``save_to_disk``, or anything else
    ``datasets.load_dataset`` accepts.

    Images are always decoded by :func:`load_rgb` (``Image`` columns are cast
    to ``decode=False``), so a corrupt image raises :class:`BadImageError` for
    that example instead of breaking iteration.

    Map-style (``is_streaming`` False): ``len(src)`` and ``src[i]`` ->
    ``(RGB PIL image, label)``. Streaming: :meth:`iterate`.

    Args:
        path: Hub id or local path.
        split: split name (HF slicing like ``"train[:1000]"`` works map-style).
        streaming: load as a ``datasets.IterableDataset``.
        image_column: image column; auto-detected when None.
        label_column: integer/ClassLabel label column; auto-detected when None
            (labels are -1 if none is found).
        data_files: forwarded to ``load_dataset`` together with ``path``.
        cache_dir: Hugging Face cache directory for map-style loading; the
            library default when None.

    Raises:
        ValueError: the dataset cannot be loaded, or a column is missing or
            has the wrong type (message lists the available columns).
    """

    def __init__(
        self,
        path: str,
        split: str = "train",
        streaming: bool = False,
        image_column: str | None = None,
        label_column: str | None = None,
        data_files: Any = None,
        cache_dir: str | os.PathLike | None = None,
    ):
        import datasets

        self.path = os.fspath(path)
        self.split = split
        self.is_streaming = bool(streaming)
        cache = os.fspath(cache_dir) if cache_dir is not None else None
        try:
            ds = _load_hf(self.path, split, self.is_streaming, data_files, cache)
        except Exception as exc:  # datasets raises many types (network, builder, file errors).
            raise ValueError(
                f"could not load Hugging Face dataset {self.path!r} (split={split!r}, streaming={streaming}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if self.is_streaming:
            # Parquet: one shard per row group instead of per file, so that readers
            # (processes × workers) get disjoint shards of nearly equal size.
            try:
                ds = ds.reshard()
            except NotImplementedError:  # a format datasets cannot split further: its files are the shards
                pass
        columns = _column_names(ds)
        self.image_column = _pick_image_column(ds, columns, image_column)
        self.label_column = _pick_label_column(ds, columns, label_column)
        features = ds.features or {}
        label_feature = features.get(self.label_column) if self.label_column else None
        self.classes: list[str] = list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else []
        if isinstance(features.get(self.image_column), datasets.Image):
            ds = ds.cast_column(self.image_column, datasets.Image(decode=False))
        keep = [c for c in (self.image_column, self.label_column) if c is not None]
        # Dropping other columns avoids reading/decoding data we never use.
        ds = ds.select_columns(keep)
        self._ds = ds

    @property
    def num_shards(self) -> int:
        """How many disjoint parts a stream can be split into (row groups for parquet)."""
        return int(self._ds.num_shards) if self.is_streaming else 1

    def __len__(self) -> int:
        if self.is_streaming:
            raise TypeError(f"streaming HFSource {self.path!r} has no length; use iterate()")
        return len(self._ds)

    def label_of(self, index: int) -> int:
        """Label of example ``index`` (map-style only) without decoding the image."""
        if self.label_column is None:
            return -1
        return _as_label(self._ds[int(index)][self.label_column])

    def _row_to_pair(self, row: dict, key: str, draft: Callable | None = None) -> tuple[Image.Image, int]:
        label = _as_label(row[self.label_column]) if self.label_column else -1
        return self.decode(row[self.image_column], key, draft), label

    def decode(self, value: Any, key: Any, draft: Callable | None = None) -> Image.Image:
        """Decodes one raw image value (PIL image, bytes/path dict, bytes or path) to RGB.
        ``draft``: see :func:`load_rgb`.

        Raises:
            BadImageError: the value cannot be decoded; ``image_id`` is ``key``.
        """
        if value is None:
            raise BadImageError(key, "missing image (None)")
        return load_rgb(value, key, draft=draft)

    def load(self, index: int, draft: Callable | None = None) -> tuple[Image.Image, int]:
        """Returns (RGB PIL image, label) of example ``index`` (map-style only); ``draft``: see :func:`load_rgb`."""
        if self.is_streaming:
            raise TypeError(f"streaming HFSource {self.path!r} is not indexable; use iterate()")
        row = self._ds[int(index)]
        return self._row_to_pair(row, f"{self.path}[{self.split}][{int(index)}]", draft)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self.load(index)

    def iterate(
        self,
        seed: int,
        epoch: int,
        shuffle_buffer: int,
        *,
        decode: bool = True,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[tuple[str, Any, int]]:
        """Iterates over the stream (or one reader's part of it) once, in an order fixed by (seed, epoch).

        Args:
            seed: shuffle seed.
            epoch: passed to ``set_epoch`` so each epoch gets a new order.
            shuffle_buffer: size of the shuffle buffer in examples; <= 0 keeps the
                stored order. The shard order is shuffled too (with the seed and epoch).
            decode: when False, yield the raw image value (decode it later with
                :meth:`decode`) so that skipped examples cost no decoding.
            shard: ``(index, count)``: read only reader ``index``'s part of ``count``.
                Readers get disjoint sets of whole shards (``split_dataset_by_node`` with
                ``strategy="shards"``, after the seeded shard shuffle, so every reader
                agrees on the assignment), never every-``count``-th example of the
                whole stream; their sizes differ by at most about one shard.

        Raises:
            ValueError: ``count`` is larger than :attr:`num_shards`.

        Yields:
            ``(key, image, label)`` with key a string naming the example (reader and
            position in the reader's stream, plus the file name when known).
        """
        if not self.is_streaming:
            raise TypeError(f"HFSource {self.path!r} is map-style; index it instead of iterate()")
        ds = self._ds.shuffle(seed=seed, buffer_size=shuffle_buffer) if shuffle_buffer > 0 else self._ds
        reader = ""
        if shard is not None and shard[1] > 1:
            from datasets.distributed import split_dataset_by_node

            if shard[1] > self.num_shards:
                raise ValueError(
                    f"{self.path!r} has {self.num_shards} shards, fewer than the {shard[1]} readers "
                    "(processes × DataLoader workers) that must each read their own"
                )
            ds = split_dataset_by_node(ds, rank=shard[0], world_size=shard[1], strategy="shards")
            reader = f"r{shard[0]}/{shard[1]}"
        ds.set_epoch(epoch)
        position = 0
        # ``IterableDataset.iter`` does not shard by DataLoader worker, unlike
        # plain iteration inside a worker: the reader split above is the only one.
        for batch in ds.iter(batch_size=64):
            images = batch[self.image_column]
            labels = batch[self.label_column] if self.label_column else [None] * len(images)
            for value, label in zip(images, labels, strict=True):
                name = value.get("path") if isinstance(value, dict) else None
                key = f"{self.path}[{self.split}]{reader}#{position}" + (f" ({name})" if name else "")
                position += 1
                yield key, (self.decode(value, key) if decode else value), _as_label(label)


# --------------------------------------------------------------------------- #
# Spec parsing
# --------------------------------------------------------------------------- #

_SPLIT_SUFFIX = re.compile(r"^(?P<path>.+):(?P<split>[A-Za-z][\w.\-]*(?:\[[^\]]*\])?)$")


def _parse_hf_spec(rest: str, default_split: str) -> tuple[str, str]:
    """Splits ``ID_OR_PATH[:SPLIT]`` into (path, split)."""
    if os.path.exists(rest):
        return rest, default_split
    match = _SPLIT_SUFFIX.match(rest)
    # A one-letter remainder is a Windows drive ("C:data"), not a dataset id.
    if match and not re.fullmatch(r"[A-Za-z]", match.group("path")):
        return match.group("path"), match.group("split")
    return rest, default_split


def build_source(
    spec: str,
    split: str = "train",
    *,
    image_size: int = 64,
    streaming: bool = False,
    image_column: str | None = None,
    label_column: str | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> SampleShapes | ImageFolderSource | HFSource:
    """Builds an image source from a string spec.

    Args:
        spec: ``"sample"`` for the built-in :class:`SampleShapes`;
            ``"hf:ID_OR_PATH"`` or ``"hf:ID_OR_PATH:SPLIT"`` for :class:`HFSource`;
            anything else is a folder for :class:`ImageFolderSource`.
        split: split name ("train", "val", ...); an ``hf:`` spec may override it.
        image_size: side in pixels of the generated sample images (other
            sources keep their native size; transforms resize).
        streaming: stream an ``hf:`` source.
        image_column: ``hf:`` image column, auto-detected when None.
        label_column: ``hf:`` label column, auto-detected when None.
        seed: seed of the sample dataset.
        cache_dir: Hugging Face cache directory for ``hf:`` sources.

    Returns:
        The source; ``HFSource`` with ``is_streaming`` True when streaming.

    Raises:
        FileNotFoundError: a folder spec that does not exist.
        ValueError: an empty folder, an unloadable dataset, a bad column, or
            streaming requested for a non-``hf:`` source.
    """
    if spec == "sample":
        if streaming:
            raise ValueError("streaming is only supported for 'hf:' sources, not 'sample'")
        return SampleShapes(split, size=image_size, seed=seed)
    if spec.startswith("hf:"):
        path, hf_split = _parse_hf_spec(spec[3:], split)
        if not path:
            raise ValueError(f"empty dataset id in source spec {spec!r}")
        return HFSource(
            path,
            split=hf_split,
            streaming=streaming,
            image_column=image_column,
            label_column=label_column,
            cache_dir=cache_dir,
        )
    if streaming:
        raise ValueError(f"streaming is only supported for 'hf:' sources, not folder {spec!r}")
    if not os.path.exists(spec):
        raise FileNotFoundError(f"data source {spec!r} is not 'sample', not an 'hf:' spec, and no such folder exists")
    return ImageFolderSource(spec)
