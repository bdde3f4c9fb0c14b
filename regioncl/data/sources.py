"""Image sources by name: the built-in sample, folders and Hugging Face ``datasets``.

Every source yields ``(PIL.Image in RGB mode, label: int)`` with label -1 when unknown;
:func:`build_source` picks one from a string spec.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ..errors import UserError, UserFileNotFoundError
from .folder import ImageFolderSource
from .hf import HFSource
from .sample import SampleShapes

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
            raise UserError("streaming is only supported for 'hf:' sources, not 'sample'")
        return SampleShapes(split, size=image_size, seed=seed)
    if spec.startswith("hf:"):
        path, hf_split = _parse_hf_spec(spec[3:], split)
        if not path:
            raise UserError(f"empty dataset id in source spec {spec!r}")
        return HFSource(
            path,
            split=hf_split,
            streaming=streaming,
            image_column=image_column,
            label_column=label_column,
            cache_dir=cache_dir,
        )
    if streaming:
        raise UserError(f"streaming is only supported for 'hf:' sources, not folder {spec!r}")
    if not os.path.exists(spec):
        raise UserFileNotFoundError(f"data source {spec!r} is not 'sample', not an 'hf:' spec, and no such folder exists")
    return ImageFolderSource(spec)


def num_classes(source: Any) -> int:
    """Classes of a labelled source from what it knows (folder names, a ``ClassLabel``, the label
    column), without decoding its images; 0 when it has no labels."""
    classes = getattr(source, "classes", None)
    if classes:
        return len(classes)
    if hasattr(source, "labels"):
        return max(source.labels(), default=-1) + 1
    label_of = getattr(source, "label_of", None)
    return max((label_of(i) for i in range(len(source))), default=-1) + 1 if label_of is not None else 0


def same_images(spec_a: str, split_a: str, spec_b: str, split_b: str) -> bool:
    """Whether two source specs name the same images, or one a part of the other's: the same
    split of the sample set or of a dataset, or folders one inside the other (a folder source
    has no splits: its split is ignored)."""
    if spec_a == "sample" or spec_b == "sample":
        return spec_a == spec_b and split_a == split_b
    if spec_a.startswith("hf:") or spec_b.startswith("hf:"):
        if not (spec_a.startswith("hf:") and spec_b.startswith("hf:")):
            return False
        (path_a, hf_a), (path_b, hf_b) = _parse_hf_spec(spec_a[3:], split_a), _parse_hf_spec(spec_b[3:], split_b)
        return os.path.normpath(path_a) == os.path.normpath(path_b) and hf_a == hf_b
    a, b = os.path.realpath(spec_a), os.path.realpath(spec_b)
    return os.path.commonpath([a, b]) in (a, b)
