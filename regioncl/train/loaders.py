"""The training data of one process: the source, the two-view dataset, the loader, and its batches.

A folder (or any indexed source) is read in a seeded order that every process shares, each
process taking its share of every global batch (:class:`ShardedBatchSampler`); a stream is split
by shards, each reader (process × DataLoader worker) reading its own, and its position is kept in
:class:`~regioncl.train.stream.StreamPositions` for exact resumption.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler

from ..data import (
    BatchedMoCoV2,
    EpochSampler,
    MoCoV2Views,
    StreamingTwoViewDataset,
    TwoViewDataset,
    build_source,
    normalize,
)
from ..data.workers import WorkerLoader
from ..errors import UserError
from ..rng import derive_seed
from .config import PretrainConfig
from .stream import StreamPositions

logger = logging.getLogger("regioncl")


class ShardedBatchSampler(Sampler):
    """This process's share of each *global* batch of an :class:`EpochSampler`'s order.

    Global batch g is items ``[g·P·b, (g+1)·P·b)`` of the epoch order; process r takes
    items ``[r·b, (r+1)·b)`` of it. An incomplete last global batch is dropped, so every
    process runs the same number of steps and the union over processes is each item once.
    """

    def __init__(self, sampler: EpochSampler, batch_per_process: int, num_processes: int, process_index: int) -> None:
        self.sampler = sampler
        self.batch = batch_per_process
        self.world = num_processes
        self.rank = process_index

    def __len__(self) -> int:
        return len(self.sampler) // (self.batch * self.world)

    def __iter__(self) -> Iterator[list[Any]]:
        global_batch = self.batch * self.world
        lo, hi = self.rank * self.batch, (self.rank + 1) * self.batch
        items: list[Any] = []
        for item in self.sampler:
            items.append(item)
            if len(items) == global_batch:
                yield items[lo:hi]
                items = []


class TrainData:
    """Builds the source (clear errors for a missing folder, an unknown id, a missing column),
    the two-view dataset and the DataLoader of this process, and yields an epoch's batches.

    Attributes:
        source: the image source.
        streaming: whether the source is a stream (no length).
        steps_per_epoch: global batches per epoch (None for a stream).
        dataset_size: images in the source (None for a stream).
        positions: the stream readers' positions (one reader when not streaming).
    """

    def __init__(self, cfg: PretrainConfig, accelerator: Any, batch_per_process: int) -> None:
        self.cfg, self.accelerator, self.batch_per_process = cfg, accelerator, batch_per_process
        self.world = accelerator.num_processes
        d = cfg.data
        self.source = source = build_source(
            d.source,
            "train",
            image_size=d.image_size,
            streaming=d.streaming,
            image_column=d.image_column,
            label_column=d.label_column,
        )
        # Workers decode and crop to uint8 views, with the colour and blur ops unless gpu_augment
        # moves those to the device (batched); normalisation always runs on the device.
        transform = MoCoV2Views(d.image_size, ops=not d.gpu_augment)
        self.gpu_augment = BatchedMoCoV2(d.image_size) if d.gpu_augment else None
        self.streaming = bool(getattr(source, "is_streaming", False))
        workers = self._stream_workers(source.num_shards, d.workers) if self.streaming else d.workers
        loader_args: dict[str, Any] = dict(
            num_workers=workers, pin_memory=accelerator.device.type == "cuda" if d.pin_memory is None else d.pin_memory
        )
        if workers > 0:
            loader_args["prefetch_factor"] = d.prefetch_factor
        self.positions = StreamPositions(max(1, workers), accelerator)
        self.cpu_group = None
        if self.streaming and self.world > 1:
            import torch.distributed as dist

            self.cpu_group = dist.new_group(backend="gloo")  # for the end-of-stream flag
        seed = cfg.run.seed
        if self.streaming:
            self.dataset = StreamingTwoViewDataset(
                source,
                transform,
                seed=seed,
                shuffle_buffer=d.shuffle_buffer,
                rank=accelerator.process_index,
                world_size=self.world,
                read_retries=d.read_retries,
            )
            # Workers are re-created each epoch: they read the epoch and the resume positions when they start.
            self.loader = WorkerLoader(self.dataset, batch_size=batch_per_process, drop_last=True, **loader_args)
            self.steps_per_epoch = self.dataset_size = None
        else:
            self.dataset = TwoViewDataset(source, transform, seed=seed)
            self.sampler = EpochSampler(len(self.dataset), seed=seed)
            batches = ShardedBatchSampler(self.sampler, batch_per_process, self.world, accelerator.process_index)
            self.loader = WorkerLoader(
                self.dataset,
                batch_sampler=batches,
                persistent_workers=workers > 0 and d.persistent_workers,
                **loader_args,
            )
            self.dataset_size = len(self.dataset)
            self.steps_per_epoch = len(self.dataset) // cfg.optim.batch_size
            if self.steps_per_epoch == 0:
                raise UserError(
                    f"the dataset has {len(self.dataset)} images, fewer than one global batch of {cfg.optim.batch_size}"
                )

    def _stream_workers(self, shards: int, workers: int) -> int:
        """DataLoader workers for a stream of ``shards`` shards: every reader (process ×
        worker) must have shards of its own; fewer workers when there are too few."""
        if shards < self.world:
            raise UserError(
                f"the stream {self.cfg.data.source!r} has {shards} shard(s), fewer than the {self.world} processes; "
                "every process must read shards of its own. Write the data as more parquet files or row groups "
                "(e.g. Dataset.to_parquet in parts), or use fewer processes"
            )
        if max(1, workers) * self.world > shards:
            fewer = shards // self.world
            logger.warning(
                "the stream has %d shards: %d DataLoader worker(s) per process instead of %d, so that "
                "every worker reads shards of its own",
                shards,
                fewer,
                workers,
            )
            return fewer
        return workers

    def batches(self, epoch: int, skip_steps: int) -> Iterator[dict[str, torch.Tensor]]:
        """This process's batches of ``epoch`` after the first ``skip_steps``."""
        if not self.streaming:
            self.sampler.set_epoch(epoch, skip=skip_steps * self.cfg.optim.batch_size)
            yield from self.loader
            return
        # Resumed mid-epoch: every reader skips, undecoded, what it had delivered (exact resumption).
        skip, rotate = self.positions.start_epoch(skip_steps)
        self.dataset.set_epoch(epoch, skip=skip, rotate=rotate)
        it = iter(self.loader)
        while True:
            batch = next(it, None)
            # Shards can be uneven: every process stops as soon as one runs out, so none waits
            # forever. The processes agree on a CPU group: the host never waits for the device.
            if self.world > 1:
                import torch.distributed as dist

                ran_out = torch.tensor([1 if batch is None else 0], dtype=torch.int32)
                dist.all_reduce(ran_out, op=dist.ReduceOp.MAX, group=self.cpu_group)
                if ran_out.item():
                    return
            if batch is None:
                return
            yield batch

    def to_device(self, images: torch.Tensor, view: int, step: int) -> torch.Tensor:
        """A batch of uint8 views on the device, augmented there (``gpu_augment``) and normalised."""
        images = images.to(self.accelerator.device, non_blocking=True)
        if self.gpu_augment is not None:  # parameters seeded by (seed, step, process, view): resumable
            generator = torch.Generator(device=images.device).manual_seed(
                derive_seed(self.cfg.run.seed, "gpu_augment", step, self.accelerator.process_index, view)
            )
            images = self.gpu_augment(images, generator)
        else:
            images = normalize(images)
        if self.cfg.run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images
