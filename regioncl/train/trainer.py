"""The pretraining loop on Accelerate: one code path for CPU, one GPU and many, any precision.

Everything random in a step (augmentations, the box, π, the key shuffle) is a
pure function of (seed, epoch, index) or (seed, step), so a run resumed from a
checkpoint computes exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Sampler

from . import checkpoint as ckpt
from ..files import atomic_write, read_state
from ..backbones import compile_encoders, create_encoder
from .hostmem import keep_host_memory_for, release_freed_host_memory
from .config import PretrainConfig, config_json
from ..distributed import concat_all_gather, make_accelerator, progress_bar
from ..data import (
    BatchedMoCoV2,
    EpochSampler,
    MoCoV2Views,
    StreamingTwoViewDataset,
    TwoViewDataset,
    build_source,
    eval_transform,
    normalize,
)
from ..eval.knn import knn_evaluate
from ..rng import derive_seed
from ..methods import SSLMethod, build_method

logger = logging.getLogger("regioncl")


#: config fields that may change between a run and its resumption.
RUN_MANAGEMENT = frozenset({
    "resume", "stop_at_step", "output_dir", "log_every", "checkpoint_every", "keep_checkpoints", "log_with",
    "num_workers", "prefetch_factor", "pin_memory", "persistent_workers", "knn", "knn_every", "knn_k",
    "knn_temperature", "knn_train_data", "knn_val_data", "max_bad_fraction", "compile", "keep_host_memory",
})


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


class _Window:
    """Sums of the step outputs since the last log line, kept on the device (no per-step sync)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.bad = 0
        self.start = time.perf_counter()

    def add(self, out: dict[str, torch.Tensor], bad: int) -> None:
        for key, value in out.items():
            self.sums[key] = self.sums[key] + value.detach().float() if key in self.sums else value.detach().float()
        self.steps += 1
        self.bad += bad


@dataclass
class RunState:
    """Progress saved in ``trainer_state.json``."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    step_in_epoch: int = 0  # steps done within `epoch`
    bad_images: int = 0  # unreadable images skipped so far (all processes)
    images_read: int = 0  # images decoded or attempted (all processes)
    # Streaming: positions each reader (process × worker, in rank order) has delivered in this epoch.
    stream_positions: list[int] = field(default_factory=list)


def lr_at(cfg: PretrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up (``warmup_epochs``) then half-cosine to 0 over ``total_steps``, per step."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    """Builds model, data and optimizer from a config and runs pretraining.

    Args:
        cfg: the run configuration (see :class:`~regioncl.config.PretrainConfig`).
        accelerator: an existing Accelerator (one is created if ``None``).
    """

    def __init__(self, cfg: PretrainConfig, accelerator: Accelerator | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.accelerator = accelerator or make_accelerator(
            log_with=cfg.log_with,
            project_dir=cfg.output_dir,
            # Each process keeps an identical queue; re-broadcasting 65,536 keys every step is waste.
            kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
        )
        acc = self.accelerator
        # Before the first step allocates: every step then reuses the previous one's memory.
        keep_host_memory_for(cfg.keep_host_memory, acc.device.type)
        self.world = acc.num_processes
        if cfg.batch_size % self.world:
            raise ValueError(f"batch_size {cfg.batch_size} (global) is not divisible by {self.world} processes")
        self.batch_per_process = cfg.batch_size // self.world
        set_seed(cfg.seed)  # identical initial weights on every process

        # Model first: its checks (stride, box range, batch, queue) need no data.
        bn_groups = cfg.bn_groups if cfg.bn_groups is not None else (1 if self.world > 1 else 2)
        encoder = create_encoder(cfg.backbone, **cfg.backbone_args)
        self.model: SSLMethod = build_method(
            cfg.method,
            encoder,
            region_cells=cfg.region_cells,
            pairing=cfg.pairing,
            region_weight=cfg.region_weight,
            hidden_dim=cfg.proj_hidden_dim,
            dim=cfg.proj_dim,
            pred_dim=cfg.pred_dim,
            dense_weight=cfg.dense_weight,
            queue_size=cfg.queue_size,
            temperature=cfg.temperature,
            momentum=cfg.key_momentum,
            bn_groups=bn_groups,
            seed=cfg.seed,
        )
        self.model.check(cfg.image_size, self.batch_per_process, self.world)

        # Data: sources raise clear errors (missing folder, unknown id, missing column) here.
        source = build_source(
            cfg.data,
            "train",
            image_size=cfg.image_size,
            streaming=cfg.streaming,
            image_column=cfg.image_column,
            label_column=cfg.label_column,
        )  # the sample set is the same whatever the run seed
        # Workers decode and crop to uint8 views, with the colour and blur ops unless gpu_augment
        # moves those to the device (batched); normalisation always runs on the device.
        transform = MoCoV2Views(cfg.image_size, ops=not cfg.gpu_augment)
        self.gpu_augment = BatchedMoCoV2(cfg.image_size) if cfg.gpu_augment else None
        self.streaming = bool(getattr(source, "is_streaming", False))
        workers = cfg.workers
        if self.streaming:
            workers = self._stream_workers(source.num_shards, workers)
        loader_args = dict(num_workers=workers, pin_memory=acc.device.type == "cuda" if cfg.pin_memory is None else cfg.pin_memory)
        if workers > 0:
            loader_args["prefetch_factor"] = cfg.prefetch_factor
        # Readers of this process's stream (one per worker, or the process itself), for exact resumption.
        self.readers_per_process = max(1, workers)
        self.stream_positions = [0] * self.readers_per_process
        if self.streaming:
            self.dataset = StreamingTwoViewDataset(
                source, transform, seed=cfg.seed, shuffle_buffer=cfg.shuffle_buffer,
                rank=acc.process_index, world_size=self.world,
            )
            # Workers are re-created each epoch: they read the epoch and the resume positions when they start.
            self.loader = DataLoader(self.dataset, batch_size=self.batch_per_process, drop_last=True, **loader_args)
            self.steps_per_epoch = None
            self.dataset_size = None
        else:
            self.dataset = TwoViewDataset(source, transform, seed=cfg.seed)
            self.sampler = EpochSampler(len(self.dataset), seed=cfg.seed)
            batches = ShardedBatchSampler(self.sampler, self.batch_per_process, self.world, acc.process_index)
            self.loader = DataLoader(
                self.dataset, batch_sampler=batches, persistent_workers=workers > 0 and cfg.persistent_workers,
                **loader_args,
            )
            self.dataset_size = len(self.dataset)
            self.steps_per_epoch = len(self.dataset) // cfg.batch_size
            if self.steps_per_epoch == 0:
                raise ValueError(
                    f"the dataset has {len(self.dataset)} images, fewer than one global batch of {cfg.batch_size}"
                )

        planned = cfg.epochs * self.steps_per_epoch if self.steps_per_epoch else None
        self.total_steps = min(s for s in (planned, cfg.max_steps) if s is not None)
        # A stream has no length: its warm-up epochs are max_steps / epochs steps long.
        self.nominal_epoch_steps = self.steps_per_epoch or max(1, self.total_steps // cfg.epochs)

        if self.model.sync_batch_norm and cfg.sync_bn and self.world > 1:
            self._sync_batch_norm()
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if cfg.compile:
            compile_encoders(self.model)
        self.optimizer = torch.optim.SGD(
            self.model.param_groups(cfg.fix_pred_lr), lr=cfg.lr, momentum=cfg.sgd_momentum, weight_decay=cfg.weight_decay
        )
        self.model, self.optimizer = acc.prepare(self.model, self.optimizer)
        self.state = RunState()
        self.out = Path(cfg.output_dir)

    def _sync_batch_norm(self) -> None:
        """SyncBN across processes (SimSiam), where torch's SyncBatchNorm supports the device."""
        if self.accelerator.device.type in ("cuda", "xpu"):
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            logger.info("batch norm synchronised across %d processes", self.world)
        else:
            logger.warning(
                "SyncBatchNorm is not available on %s: batch norm statistics stay per process "
                "(per-process batch %d); pass --no-sync-bn to silence this",
                self.accelerator.device.type, self.batch_per_process,
            )

    def _stream_workers(self, shards: int, workers: int) -> int:
        """DataLoader workers for a stream of ``shards`` shards: every reader (process ×
        worker) must have shards of its own; fewer workers when there are too few."""
        if shards < self.world:
            raise ValueError(
                f"the stream {self.cfg.data!r} has {shards} shard(s), fewer than the {self.world} processes; every "
                "process must read shards of its own. Write the data as more parquet files or row groups "
                "(e.g. Dataset.to_parquet in parts), or use fewer processes"
            )
        if max(1, workers) * self.world > shards:
            fewer = shards // self.world
            logger.warning("the stream has %d shards: %d DataLoader worker(s) per process instead of %d, so that "
                           "every worker reads shards of its own", shards, fewer, workers)
            return fewer
        return workers

    # ------------------------------------------------------------------ helpers
    @property
    def unwrapped(self) -> SSLMethod:
        return self.accelerator.unwrap_model(self.model)

    def _to_device(self, images: torch.Tensor, view: int) -> torch.Tensor:
        images = images.to(self.accelerator.device, non_blocking=True)
        if self.gpu_augment is not None:  # parameters seeded by (seed, step, process, view): resumable
            generator = torch.Generator(device=images.device).manual_seed(
                derive_seed(self.cfg.seed, "gpu_augment", self.state.step, self.accelerator.process_index, view))
            images = self.gpu_augment(images, generator)
        else:
            images = normalize(images)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _log(self, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with open(self.out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.cfg.log_with:
            self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def _state_dict(self) -> dict[str, Any]:
        return {**vars(self.state), "config": self.cfg.to_dict()}

    def save(self) -> Path | None:
        if self.streaming:  # every process's readers, in rank order (a collective: all processes save)
            local = torch.tensor(self.stream_positions, dtype=torch.long, device=self.accelerator.device)
            self.state.stream_positions = concat_all_gather(local).tolist()
        path = ckpt.save_checkpoint(self.accelerator, self.out, self._state_dict(), self.cfg.keep_checkpoints)
        if path is not None:
            logger.info("checkpoint saved: %s", path)
        return path

    def resume(self, where: str) -> None:
        """Load model, key encoder, queue, optimizer and RNG states, and the run position."""
        path = ckpt.resolve_resume(where, self.out)
        saved = read_state(path)
        # Everything that shapes the computation must match, or the resumed run is another run.
        mine, theirs = self.cfg.to_dict(), saved.get("config", {})
        differ = sorted(k for k in mine if k not in RUN_MANAGEMENT and theirs.get(k, mine[k]) != mine[k])
        if differ:
            detail = ", ".join(f"{k}={theirs[k]!r} (now {mine[k]!r})" for k in differ)
            raise ValueError(f"checkpoint {path} was trained with {detail}; resume with the same settings")
        self.accelerator.load_state(str(path))
        fields = vars(RunState())
        self.state = RunState(**{k: saved[k] for k in fields if k in saved})
        if self.streaming and self.state.step_in_epoch > 0:
            readers = self.world * self.readers_per_process
            if len(self.state.stream_positions) != readers:
                raise ValueError(
                    f"checkpoint {path} stopped mid-epoch in a stream read by {len(self.state.stream_positions)} "
                    f"readers (processes × workers); this run has {readers}. Resume with the same number of "
                    "processes and --num-workers, so every reader continues its own part of the stream"
                )
            mine = self.accelerator.process_index * self.readers_per_process
            self.stream_positions = self.state.stream_positions[mine : mine + self.readers_per_process]
        self._truncate_metrics(self.state.step)
        logger.info("resumed from %s at step %d (epoch %d)", path, self.state.step, self.state.epoch)

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines a killed run wrote after the checkpoint we resume from."""
        path = self.out / "metrics.jsonl"
        if not self.accelerator.is_main_process or not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        atomic_write(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept)))

    def _check_bad(self, bad: int, read: int, final: bool = False) -> None:
        """Stop with a clear error once unreadable images exceed ``max_bad_fraction``."""
        minimum = 1000 if self.dataset_size is None else min(1000, self.dataset_size)
        if bad and (read >= minimum or final) and bad > self.cfg.max_bad_fraction * read:
            raise RuntimeError(
                f"{bad} of {read} images read ({bad / read:.1%}) could not be decoded, more than "
                f"max_bad_fraction={self.cfg.max_bad_fraction:.1%}; see the 'regioncl.data' warnings for their "
                "ids, fix or remove them, or raise --max-bad-fraction"
            )

    # ------------------------------------------------------------------ kNN
    def knn(self) -> float | None:
        """kNN top-1 (SPEC §10) of the online encoder on the held-out split, or None without labels."""
        cfg = self.cfg
        train_spec = cfg.knn_train_data or (cfg.data if cfg.data == "sample" else None)
        val_spec = cfg.knn_val_data or ("sample" if train_spec == "sample" else None)
        if not cfg.knn or train_spec is None or val_spec is None:
            return None
        # Rendered at the training size, the sample set needs no resize; other images get the usual crop.
        crop = 1.0 if train_spec == "sample" else 0.875
        transform = eval_transform(cfg.image_size, crop_pct=crop)
        splits = ("train", "val") if train_spec == "sample" else ("train", "validation")
        bank_source, val_source = (build_source(spec, split, image_size=cfg.image_size)
                                   for spec, split in ((train_spec, splits[0]), (val_spec, splits[1])))
        top1 = knn_evaluate(self.unwrapped.encoder, bank_source, val_source, transform, self.accelerator.device,
                            k=cfg.knn_k, temperature=cfg.knn_temperature, num_workers=cfg.workers,
                            channels_last=cfg.channels_last)
        if top1 is None:
            logger.info("kNN skipped: the evaluation data has no labels")
        return top1

    def _knn_record(self, tag: str) -> float | None:
        top1 = self.knn()  # every process encodes its share
        release_freed_host_memory()  # the feature banks' memory is not the steps'
        if top1 is not None and self.accelerator.is_main_process:
            logger.info("kNN top-1 %s: %.2f%%", tag, 100 * top1)
            # Epochs completed (a float for a partial one), so curves of runs line up by epoch.
            epochs_done = self.state.step / self.nominal_epoch_steps
            self._log({"step": self.state.step, "epoch": epochs_done, "knn_top1": top1})
        return top1

    # ------------------------------------------------------------------ loop
    def _epoch_batches(self, epoch: int, skip_steps: int) -> Iterator[dict[str, torch.Tensor]]:
        """This process's batches of ``epoch`` after the first ``skip_steps``."""
        if not self.streaming:
            self.sampler.set_epoch(epoch, skip=skip_steps * self.cfg.batch_size)
            yield from self.loader
            return
        if skip_steps == 0:
            self.stream_positions = [0] * self.readers_per_process
        # Resumed mid-epoch: every reader skips, undecoded, what it had delivered (exact resumption).
        readers = self.world * self.readers_per_process
        resumed = skip_steps > 0 and len(self.state.stream_positions) == readers
        self.dataset.set_epoch(epoch, skip=self.state.stream_positions if resumed else None,
                               rotate=skip_steps % self.readers_per_process if resumed else 0)
        it = iter(self.loader)
        while True:
            batch = next(it, None)
            # Shards can be uneven: every process stops as soon as one runs out, so none waits forever.
            if self.world > 1:  # "any process ran out": a max (Accelerate's reduce knows no min)
                ran_out = torch.tensor([1.0 if batch is None else 0.0], device=self.accelerator.device)
                if self.accelerator.reduce(ran_out, reduction="max").item() > 0.0:
                    return
            if batch is None:
                return
            yield batch

    def train(self) -> dict[str, Any]:
        """Run (or resume) pretraining; returns the final metrics."""
        cfg, acc = self.cfg, self.accelerator
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(config_json(cfg))
        if cfg.log_with:
            acc.init_trackers("regioncl", config={k: str(v) for k, v in cfg.to_dict().items()})
        if cfg.resume:
            self.resume(cfg.resume)
        result: dict[str, Any] = {}
        if self.state.step == 0:
            result["knn_top1_before"] = self._knn_record("before training")

        stop = self.total_steps if cfg.stop_at_step is None else min(self.total_steps, cfg.stop_at_step)
        bar = progress_bar(acc, total=self.total_steps, initial=self.state.step, desc=cfg.method, dynamic_ncols=True)
        self.model.train()
        window = _Window()
        while self.state.step < stop:
            first_step = self.state.step
            for batch in self._epoch_batches(self.state.epoch, self.state.step_in_epoch):
                lr = lr_at(cfg, self.state.step, self.total_steps, self.nominal_epoch_steps)
                self._train_step(batch, lr, window)
                bar.update(1)
                at_checkpoint = self.state.step % cfg.checkpoint_every == 0 and self.state.step < stop
                # A checkpoint must hold the bad-image counts of every step it covers: flush first.
                if self.state.step % cfg.log_every == 0 or self.state.step == stop or at_checkpoint:
                    record = self._flush(window, lr)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.3g}", ips=f"{record['images_per_s']:.0f}")
                if self.state.step >= stop:
                    break
                if at_checkpoint:
                    self.save()
            else:  # the epoch's data ran out
                if self.state.step == first_step and self.state.step_in_epoch == 0:
                    raise RuntimeError(f"data source {cfg.data!r} yielded no full batch of {self.batch_per_process} images")
                self.state.epoch += 1
                self.state.step_in_epoch = 0
                if cfg.knn_every and self.state.epoch % cfg.knn_every == 0 and self.state.step < self.total_steps:
                    evaluating = time.perf_counter()
                    self._knn_record(f"after epoch {self.state.epoch}")
                    self.model.train()
                    window.start += time.perf_counter() - evaluating  # images/s counts training time only
        bar.close()
        self._check_bad(self.state.bad_images, self.state.images_read, final=True)
        self.save()
        if self.state.step >= self.total_steps:
            self._save_encoder()
            result["knn_top1_after"] = self._knn_record("after training")
        result.update(step=self.state.step, epoch=self.state.epoch)
        for tracker in acc.trackers:  # the process group stays up: the caller may go on using it
            tracker.finish()
        return result

    def _train_step(self, batch: dict[str, torch.Tensor], lr: float, window: "_Window") -> None:
        acc = self.accelerator
        for group in self.optimizer.param_groups:
            if not group.get("fix_lr", False):
                group["lr"] = lr
        with acc.autocast():
            out = self.model(self._to_device(batch["view_q"], 0), self._to_device(batch["view_k"], 1), step=self.state.step)
        acc.backward(out["loss"])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        window.add(out, int(batch["bad"].sum()))
        if self.streaming:  # a batch comes from one reader (worker); its positions are CPU tensors: no sync
            reader = int(batch["reader"][0]) - self.accelerator.process_index * self.readers_per_process
            self.stream_positions[reader] = int(batch["index"].max()) + 1
        self.state.step += 1
        self.state.step_in_epoch += 1

    def _flush(self, window: "_Window", lr: float) -> dict[str, Any]:
        """Average the window's losses over steps and processes, count bad images, log one record."""
        keys = sorted(window.sums)
        device = window.sums[keys[0]].device
        packed = torch.stack([window.sums[k] for k in keys] + [torch.tensor(float(window.bad), device=device)])
        if self.world > 1:
            packed = self.accelerator.reduce(packed, reduction="sum")
        values = packed.tolist()  # the only host sync of the window
        seconds = time.perf_counter() - window.start
        total_bad = int(values[-1])
        self.state.bad_images += total_bad
        self.state.images_read += window.steps * self.cfg.batch_size + total_bad
        record: dict[str, Any] = {"step": self.state.step, "epoch": self.state.epoch, "lr": lr}
        record.update({k: v / (window.steps * self.world) for k, v in zip(keys, values[:-1])})
        record["images_per_s"] = window.steps * self.cfg.batch_size / max(seconds, 1e-9)
        record["bad_images"] = self.state.bad_images
        self._log(record)
        window.reset()
        self._check_bad(self.state.bad_images, self.state.images_read)
        return record

    def _save_encoder(self) -> None:
        """The online encoder's timm state dict, ready for plain timm (full export: scripts/export.py)."""
        if self.accelerator.is_main_process:
            state = {k: v.detach().cpu().contiguous() for k, v in self.unwrapped.encoder.model.state_dict().items()}
            save_file(state, str(self.out / "encoder.safetensors"), metadata={"architecture": self.unwrapped.encoder.spec.architecture})
            logger.info("encoder weights saved: %s", self.out / "encoder.safetensors")


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Build a :class:`Trainer` from ``cfg``, train, and end the run (trackers, process group)."""
    trainer = Trainer(cfg)
    result = trainer.train()
    trainer.accelerator.end_training()
    return result
