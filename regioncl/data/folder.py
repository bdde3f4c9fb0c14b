"""Image folders: ``ROOT/[CLASS/]*.jpg`` read lazily, with class labels from subfolder names."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence


import numpy as np
import torch.utils.data
from PIL import Image

from ..errors import UserError, UserFileNotFoundError
from .images import IMAGE_EXTENSIONS, load_rgb



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


def list_images(root: str, extensions: Sequence[str]) -> list[str]:
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


def folder_labels(relpaths: Sequence[str]) -> tuple[list[str], np.ndarray]:
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
            raise UserFileNotFoundError(f"image folder {self.root!r} does not exist or is not a directory")
        relpaths = list_images(self.root, extensions)
        if not relpaths:
            raise UserError(f"no image files with extensions {tuple(extensions)} found under {self.root!r}")
        self.classes, self._labels = folder_labels(relpaths)
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
