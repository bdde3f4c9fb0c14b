"""Two-view datasets with reproducible per-sample randomness, and the epoch sampler.

The augmentation of sample (epoch, index) is a pure function of
(seed, epoch, index): the transform runs under ``torch.random.fork_rng`` after
seeding torch's CPU generator with a hash of those three numbers. The result is
therefore independent of the number of DataLoader workers, of the order in
which samples are fetched, and of whether the run was resumed mid-epoch, and
the caller's global RNG stream is left untouched.

The epoch travels with every index (``EpochSampler`` yields ``(epoch, index)``)
so that worker processes never need to be told about the epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.utils.data

from ..rng import derive_seed
from .hf import HFSource
from .images import MAX_CONSECUTIVE_BAD, BadImageError, load_decodable

__all__ = ["EpochSampler", "StreamingTwoViewDataset", "TwoViewDataset"]

logger = logging.getLogger("regioncl.data")


def _two_views(load: Callable[[Callable | None], Any], transform: Callable, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two views of the image ``load(draft)`` decodes, with torch's CPU generator seeded by ``seed``.

    A two-view transform (``transform.two_view``, e.g. :class:`MoCoV2Views`) gets the loader
    and the generator; any other callable is called twice on the decoded image.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed also seeds CUDA lazily (slow)
        if getattr(transform, "two_view", False):
            return transform(load, torch.default_generator)
        image = load(None)
        # Two calls under one seed: the second continues the stream of the
        # first, so the views get independent random parameters.
        return transform(image), transform(image)


class EpochSampler(torch.utils.data.Sampler):
    """Yields (epoch, index) pairs: a permutation of range(n) drawn from torch.Generator seeded with (seed, epoch).

    Args:
        n: dataset length.
        seed: shuffle seed.
        shuffle: False yields indices in order 0..n-1 (still paired with the epoch).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        if n < 0:
            raise ValueError(f"EpochSampler: n must be >= 0, got {n}")
        self.n = int(n)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Selects the epoch and drops the first ``skip`` indices of its order.

        ``skip`` = number of samples already consumed in this epoch gives exact
        mid-epoch resumption.
        """
        if not 0 <= skip <= self.n:
            raise ValueError(f"EpochSampler: skip must be in [0, {self.n}], got {skip}")
        self.epoch = int(epoch)
        self.skip = int(skip)

    def order(self, epoch: int) -> torch.Tensor:
        """Full index order of ``epoch``, int64 tensor of shape (n,)."""
        if not self.shuffle:
            return torch.arange(self.n)
        gen = torch.Generator()
        gen.manual_seed(derive_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=gen)

    def __len__(self) -> int:
        return self.n - self.skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        for index in self.order(epoch)[self.skip :].tolist():
            yield epoch, index


def _sample_dict(view_q: torch.Tensor, view_k: torch.Tensor, index: int, label: int, bad: int, reader: int = -1) -> dict:
    return {"view_q": view_q, "view_k": view_k, "index": int(index), "label": int(label), "bad": int(bad),
            "reader": int(reader)}


class TwoViewDataset(torch.utils.data.Dataset):
    """Map-style dataset of two augmented views per image, indexed by (epoch, index).

    Use with :class:`EpochSampler` as the DataLoader's sampler.

    Args:
        source: map-style source returning ``(PIL image, label)``, raising
            :class:`BadImageError` for undecodable images.
        transform: a two-view transform (:class:`MoCoV2Views`), or a one-view
            augmentation using torch's global RNG, called twice.
        seed: augmentation seed.
        max_retries: how many following images to try when an image is bad.

    Each item is ``{"view_q": (3, S, S), "view_k": (3, S, S), "index": int, "label": int,
    "bad": int}`` (views as the transform returns them: uint8 from :class:`MoCoV2Views`). When image ``index`` is bad it
    is replaced by the next index ``(index + 1) % len`` (repeatedly); ``index``
    and ``label`` then describe the image actually used and ``bad`` counts the
    images skipped for this item. The views are still seeded by the requested
    (epoch, index), so a substitute is augmented differently from its own item.
    """

    def __init__(self, source: Any, transform: Callable, seed: int = 0, max_retries: int = MAX_CONSECUTIVE_BAD):
        if getattr(source, "is_streaming", False):
            raise TypeError("TwoViewDataset needs a map-style source; use StreamingTwoViewDataset for streaming")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.source = source
        self.transform = transform
        self.seed = int(seed)
        self.max_retries = int(max_retries)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        """Returns the two views of image ``index`` for ``epoch``; ``item`` = (epoch, index)."""
        epoch, index = (int(v) for v in item)
        found: dict[str, int] = {}

        def load(draft: Callable | None) -> Any:
            image, found["label"], found["used"], found["bad"] = load_decodable(
                self.source, index, self.max_retries, draft)
            return image

        view_q, view_k = _two_views(load, self.transform, derive_seed(self.seed, epoch, index))
        return _sample_dict(view_q, view_k, found["used"], found["label"], found["bad"])


def read_with_retries(open_stream: Callable[[], Iterator[Any]], retries: int, wait: float, where: str) -> Iterator[Any]:
    """The items of ``open_stream()``, each once and in order, even when reading fails midway.

    A stream whose order is fixed (by seed and epoch) can be opened again and read up to where it
    failed: after an :class:`OSError` it is, after ``wait`` s (doubling with each failure in a
    row), skipping the items already delivered. After ``retries`` failures in a row without an
    item in between, the error is raised again, naming ``where`` and the item it stopped at.
    """
    delivered, failures = 0, 0
    while True:
        try:
            for position, item in enumerate(open_stream()):
                if position < delivered:
                    continue
                yield item
                delivered += 1
                failures = 0
            return
        except OSError as err:
            failures += 1
            if failures > retries:
                raise OSError(f"reading {where} failed {failures} times in a row at example {delivered}: {err}") from err
            pause = wait * 2 ** (failures - 1)
            logger.warning("reading %s failed at example %d (%s); reading again from there in %.1f s (%d of %d)",
                           where, delivered, err, pause, failures, retries)
            time.sleep(pause)


class StreamingTwoViewDataset(torch.utils.data.IterableDataset):
    """Two augmented views per example of a streaming :class:`HFSource`.

    Work is split over ``R = world_size × num_workers`` readers (``num_workers`` = 1
    without workers); reader ``r = rank × num_workers + worker_id`` reads its own,
    disjoint set of whole shards of the epoch's shuffled stream
    (:meth:`HFSource.iterate` with ``shard=(r, R)``), so no two readers download
    the same data and the union over readers is the whole stream. The stream
    needs at least ``R`` shards (parquet: row groups).

    Each item carries ``reader`` = r and ``index`` = its position in reader r's
    stream of the epoch (bad images included); views are seeded by (seed, epoch,
    R, r, position). Everything is a pure function of (seed, epoch, R), so a
    reader told by :meth:`set_epoch` to skip the first ``n`` positions continues
    exactly where an interrupted run stopped, without decoding what it skips.

    Bad images are skipped (logged as warnings) and counted in ``bad`` of the
    next item of the same reader; those after a reader's last good image, in
    that last item (each item is yielded once the next good one is decoded).

    Call :meth:`set_epoch` before creating each epoch's DataLoader iterator;
    workers read the epoch and the skips when they start (so do not make them
    persistent).

    Args:
        source: a streaming ``HFSource``.
        transform: as for :class:`TwoViewDataset`.
        seed: shuffle and augmentation seed.
        shuffle_buffer: shuffle buffer size in examples (<= 0: no shuffle).
        rank: this process's rank for distributed training.
        world_size: number of distributed processes.
        read_retries, retry_wait: a read of the stream that fails (:class:`OSError`: a network
            error, a file briefly unavailable) is started again from the same example up to
            ``read_retries`` times in a row, after ``retry_wait`` s, doubling each time
            (:func:`read_with_retries`).
    """

    def __init__(
        self,
        source: HFSource,
        transform: Callable,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        *,
        rank: int = 0,
        world_size: int = 1,
        read_retries: int = 5,
        retry_wait: float = 1.0,
    ):
        if not getattr(source, "is_streaming", False):
            raise TypeError("StreamingTwoViewDataset needs a streaming HFSource; use TwoViewDataset otherwise")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.source = source
        self.transform = transform
        self.seed = int(seed)
        self.shuffle_buffer = int(shuffle_buffer)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.read_retries, self.retry_wait = int(read_retries), float(retry_wait)
        self.epoch = 0
        self.skip: list[int] | None = None
        self.rotate = 0

    def set_epoch(self, epoch: int, skip: Sequence[int] | None = None, rotate: int = 0) -> None:
        """Selects the epoch produced next.

        For a resumed run: ``skip[r]`` = positions reader r (global id) had already
        delivered in this epoch, and ``rotate`` = batches this process had taken
        from its loader: worker w then plays reader ``(w + rotate) % num_workers``, so
        the DataLoader's round-robin over workers continues with the reader that was next.
        """
        self.epoch = int(epoch)
        self.skip = None if skip is None else [int(n) for n in skip]
        self.rotate = int(rotate)

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        readers = self.world_size * num_workers
        reader = self.rank * num_workers + (worker_id + self.rotate) % num_workers
        if self.skip is not None and len(self.skip) != readers:
            raise ValueError(f"resume positions are for {len(self.skip)} readers, this loader has {readers}")
        epoch, skip = self.epoch, (self.skip[reader] if self.skip else 0)
        stream = read_with_retries(
            lambda: self.source.iterate(self.seed, epoch, self.shuffle_buffer, decode=False, shard=(reader, readers)),
            self.read_retries, self.retry_wait,
            f"shard {reader} of {readers} of {self.source.path!r} [{self.source.split}] (epoch {epoch})")
        # Each item is held until the reader's next good one is decoded, so that the bad images
        # after the reader's last good one are counted with it rather than lost.
        pending_bad, held = 0, None
        for position, (key, raw, label) in enumerate(stream):
            if position < skip:
                continue
            try:
                view_q, view_k = _two_views(
                    lambda draft, raw=raw, key=key: self.source.decode(raw, key, draft),
                    self.transform, derive_seed(self.seed, epoch, readers, reader, position))
            except BadImageError as err:
                # a stream's key is a position in this epoch's order, not the image: name each one
                logger.warning("skipping bad image %s: %s", err.image_id, err.reason)
                pending_bad += 1
                continue
            if held is not None:
                yield held
            held = _sample_dict(view_q, view_k, position, label, pending_bad, reader)
            pending_bad = 0
        if held is not None:
            held["bad"] += pending_bad
            yield held
