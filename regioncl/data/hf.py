"""Hugging Face ``datasets`` sources: Hub ids, local parquet files and image folders, loaded or streamed.

``datasets`` is imported lazily: it is slow to import and only needed for ``hf:`` sources.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import torch.utils.data
from PIL import Image

from ..errors import UserError
from .folder import folder_labels, list_images
from .images import IMAGE_EXTENSIONS, BadImageError, load_rgb

logger = logging.getLogger("regioncl.data")

_IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp")
_LABEL_COLUMN_NAMES = ("label", "labels", "cls", "target")
_KNOWN_SPLITS = ("train", "validation", "valid", "val", "test")



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
    ``images``: the folder's image files, relative to ``path`` (``list_images``).
    """
    import datasets

    files = _for_split(path, [os.path.join(path, f) for f in images], split)
    if not files:
        raise UserError(f"no image files for split {split!r} under {path!r}")
    # Class = first folder below the split folder (if the paths name a split) or below ``path``.
    rel = [os.path.relpath(f, path).replace(os.sep, "/") for f in files]
    if all(_split_of_file(r.split("/", 1)[0]) for r in rel):
        rel = [r.split("/", 1)[1] if "/" in r else r for r in rel]
    classes, labels = folder_labels(rel)
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
                raise UserError(f"split {split!r} not in saved dataset; available: {sorted(ds)}")
            ds = ds[split]
        # Shards let processes and workers read disjoint parts: a few hundred contiguous ranges.
        return ds.to_iterable_dataset(num_shards=max(1, min(len(ds), 256))) if streaming else ds
    if (os.path.isfile(path) and path.endswith(".parquet")) or (
        os.path.isdir(path) and glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True)
    ):
        files = _parquet_files_for_split(path, split)
        if not files:
            raise UserError(f"no parquet file for split {split!r} under {path!r}")
        base = re.sub(r"\[.*\]$", "", split)
        return datasets.load_dataset(
            "parquet", data_files={base: files}, split=split, streaming=streaming, cache_dir=cache_dir
        )
    images = list_images(path, IMAGE_EXTENSIONS) if streaming and os.path.isdir(path) else []
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
            raise UserError(f"image column {requested!r} not found; available columns: {columns}")
        return requested
    features = ds.features or {}
    for name in columns:
        if isinstance(features.get(name), datasets.Image):
            return name
    for name in _IMAGE_COLUMN_NAMES:
        if name in columns:
            return name
    raise UserError(
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
            raise UserError(f"label column {requested!r} not found; available columns: {columns}")
        if requested in features and not _is_integer_feature(features[requested]):
            raise UserError(
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
            raise UserError(
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

    def labels(self) -> list[int]:
        """Every example's label (-1 without a label column), read from the label column alone."""
        if self.label_column is None:
            return [-1] * len(self)
        return [_as_label(v) for v in self._ds[self.label_column]]

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
                raise UserError(
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
