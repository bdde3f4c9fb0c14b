"""The pretraining loop on Accelerate: one code path for CPU, one GPU and many, any precision.

Everything random in a step (augmentations, the box, π, the key shuffle) is a pure function of
(seed, epoch, index) or (seed, step), so a run resumed from a checkpoint computes exactly what the
uninterrupted run would have (on a GPU, to the rounding of the kernels cuDNN picks each time). The pieces around the loop live beside it: the data
(:mod:`.loaders`, :mod:`.stream`), the metrics (:mod:`.metrics`), the kNN monitor
(:mod:`.monitor`) and the checkpoints (:mod:`.checkpoint`).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from timm.layers import convert_sync_batchnorm

from ..backbones import compile_encoders, create_encoder
from ..distributed import make_accelerator, progress_bar
from ..errors import UserError
from ..files import atomic_write, list_checkpoints, read_state, save_safetensors
from ..methods import METHODS, SSLMethod, build_method, method_arguments
from . import checkpoint as ckpt
from .config import PRECISIONS, MethodConfig, PretrainConfig, config_json
from .hostmem import keep_host_memory_for
from .init import initialise_encoder
from .loaders import TrainData
from .metrics import MetricsLog
from .monitor import KnnMonitor
from .preemption import (
    EXIT_BAD_DATA,
    EXIT_CHECKPOINT,
    EXIT_NONFINITE,
    EXIT_STOPPED,
    RunStopped,
    StopSignals,
    requeue_slurm_job,
)
from .region_check import WARNING, region_check
from .region_diagnostics import check_diagnosable, region_diagnostics

logger = logging.getLogger("regioncl")


def warmup_steps(cfg: PretrainConfig, steps_per_epoch: int) -> int:
    """The learning rate's warm-up (``optim.warmup_epochs``), in steps."""
    return int(cfg.optim.warmup_epochs * steps_per_epoch)


def lr_at(cfg: PretrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up (``optim.warmup_epochs``) then half-cosine to 0 over ``total_steps``, per step."""
    o = cfg.optim
    warmup = warmup_steps(cfg, steps_per_epoch)
    if step < warmup:
        return o.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return o.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def schedule_words(cfg: PretrainConfig, total_steps: int, steps_per_epoch: int) -> str:
    """The learning rate's schedule as the run's summary gives it; a warm-up that outlasts a run cut
    short (``optim.max_steps``) says where the lr stops, since it never reaches ``optim.lr``."""
    lr, warmup = cfg.optim.lr, warmup_steps(cfg, steps_per_epoch)
    if total_steps == 0:
        return "nothing trained (optim.max_steps 0)"
    if warmup == 0:
        return f"lr {lr:g}, then cosine"
    if warmup > total_steps:
        last = lr_at(cfg, total_steps - 1, total_steps, steps_per_epoch)
        return f"lr warming up to {lr:g} over {warmup:,} steps, more than the run's {total_steps:,}: it stops at {last:.2g}"
    return f"lr {lr:g} with {warmup:,} warm-up steps, then cosine"


def finite(record: dict[str, Any]) -> bool:
    """Whether every loss term of a metrics record is finite (a NaN or Inf on any process carries into the sums)."""
    return all(math.isfinite(v) for k, v in record.items() if k.startswith("loss"))


#: the ``method`` settings a base method's constructor takes, by its argument's name
METHOD_ARGS = {
    "proj_hidden_dim": "hidden_dim",
    "proj_dim": "dim",
    "pred_dim": "pred_dim",
    "dense_weight": "dense_weight",
    "queue_size": "queue_size",
    "temperature": "temperature",
    "key_momentum": "momentum",
    "bn_groups": "bn_groups",
}


def build_model(cfg: PretrainConfig, world: int) -> SSLMethod:
    """The method of ``cfg`` on its backbone (random init from the global seed)."""
    m = cfg.method
    args = {arg: getattr(m, field) for field, arg in METHOD_ARGS.items()}
    if m.bn_groups is None:
        args["bn_groups"] = 1 if world > 1 else 2
    return build_method(
        cfg.model.method,
        create_encoder(cfg.model.backbone, **cfg.model.backbone_args),
        region_cells=m.region_cells,
        pairing=m.pairing,
        region_weight=m.region_weight,
        region_min_content=m.region_min_content,
        seed=cfg.run.seed,
        **args,
    )


def unused_method_settings(cfg: PretrainConfig) -> list[str]:
    """The ``method`` settings changed from their defaults that the method has no use for
    (``method.pred_dim`` for MoCo v2, ``method.queue_size`` for SimSiam...): one recipe serves
    every method, so these are ignored, and named so that a user who meant them knows."""
    names = method_arguments(cfg.model.method)
    defaults = MethodConfig()
    unused = [
        f"method.{field}={getattr(cfg.method, field)!r}"
        for field, arg in METHOD_ARGS.items()
        if arg not in names and getattr(cfg.method, field) != getattr(defaults, field)
    ]
    # The trainer reads sync_bn, not the constructor: only for a method that wants its batch norm synchronised.
    if cfg.method.sync_bn != defaults.sync_bn and not METHODS[cfg.model.method][0].sync_batch_norm:
        unused.append(f"method.sync_bn={cfg.method.sync_bn!r}")
    return unused


def synchronised_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its batch norms synchronised across processes. timm's conversion, not
    torch's: torch's turns timm's ``BatchNormAct2d`` (EfficientNet, RegNet, MobileNetV3, CSPNet...)
    into a plain ``SyncBatchNorm`` whose forward never calls the activation: another network."""
    return convert_sync_batchnorm(model)


def check_trackers(names: list[str]) -> None:
    """Refuse a tracker Accelerate does not know, or one not installed here, before anything is
    built: Accelerate warns and trains on without it, and the run ends without the logs asked for.

    Raises:
        UserError: naming the tracker and what to install.
    """
    from accelerate import tracking
    from accelerate.utils import LoggerType

    builtin = [str(t.value) for t in LoggerType]
    known = set(builtin) | set(getattr(tracking, "LOGGER_TYPE_TO_CLASS", {}))  # and trackers registered by name
    available = {str(t.value) for t in tracking.get_available_trackers()}
    for name in names:
        if name not in known:
            raise UserError(f"run.log_with: unknown tracker {name!r}; one of {builtin}")
        if name == "all" and not available:
            raise UserError("run.log_with: all, but no tracker is installed here: pip install tensorboard (or another)")
        if name in builtin and name != "all" and name not in available:
            raise UserError(
                f"run.log_with: {name} is not installed here: pip install {name.replace('_', '-')}, "
                "or leave it out of run.log_with"
            )


class Trainer:
    """Builds model, data and optimizer from a config and runs pretraining.

    Args:
        cfg: the run configuration (see :class:`~regioncl.train.config.PretrainConfig`).
        accelerator: an existing Accelerator (one is created if ``None``).
    """

    def __init__(self, cfg: PretrainConfig, accelerator: Accelerator | None = None) -> None:
        cfg.validate()
        if cfg.run.log_with and int(os.environ.get("RANK", "0")) == 0:  # trackers log on the main process only
            check_trackers(cfg.run.log_with)
        self.cfg = cfg
        self.accelerator = acc = accelerator or make_accelerator(
            log_with=cfg.run.log_with,
            project_dir=cfg.run.output_dir,
            # Each process keeps an identical queue; re-broadcasting 65,536 keys every step is waste.
            kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
            **({"mixed_precision": PRECISIONS[cfg.run.precision]} if cfg.run.precision else {}),
        )
        self.world = acc.num_processes
        cfg.run.precision = self._precision()  # the run records the precision it trains in
        self.out = Path(cfg.run.output_dir)
        # Where the run starts is decided before anything is built or written: a run refused here
        # leaves its folder (and the earlier run in it) exactly as it was.
        self.start_from: Path | None = self.on_main(self._start_point)
        if acc.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed image and batch sizes: let cuDNN pick its kernels
        if cfg.optim.batch_size % self.world:
            raise UserError(
                f"optim.batch_size {cfg.optim.batch_size} (global) is not divisible by {self.world} processes"
            )
        batch_per_process = cfg.optim.batch_size // self.world
        set_seed(cfg.run.seed)  # identical initial weights on every process
        # Model first: its checks (a feature map at this size, stride, box range, batch, queue) need no data.
        self.model = build_model(cfg, self.world)
        unused = unused_method_settings(cfg)
        if unused and acc.is_main_process:
            # info, not a warning: a recipe written for MoCo v2 sets its queue for every method trained from it
            logger.info(
                "%s: not used by %s, ignored (from the recipe or the command line)", ", ".join(unused), cfg.model.method
            )
        self.model.check(cfg.data.image_size, batch_per_process, self.world)
        if cfg.run.diagnose_every:
            check_diagnosable(self.model, cfg.model.method)
        self.init_source = None
        if cfg.model.init and self.start_from is None:  # a resumed run has its weights in its checkpoint
            self.init_source = initialise_encoder(self.model, cfg.model.init)
        self.monitor = KnnMonitor(cfg, acc)
        self.monitor.check()
        self.data = TrainData(cfg, acc, batch_per_process)
        spe = self.data.steps_per_epoch
        planned = cfg.optim.epochs * spe if spe else None
        self.total_steps = min(s for s in (planned, cfg.optim.max_steps) if s is not None)
        # A stream has no length: its warm-up epochs are max_steps / epochs steps long.
        self.nominal_epoch_steps = spe or max(1, self.total_steps // cfg.optim.epochs)
        if cfg.method.region_warmup:
            self.model.region_ramp_steps = warmup_steps(cfg, self.nominal_epoch_steps)

        # Once the settings are known to work, before the first step allocates: every step then
        # reuses the previous one's memory.
        keep_host_memory_for(cfg.run.keep_host_memory, acc.device.type)
        if self.model.sync_batch_norm and cfg.method.sync_bn and self.world > 1:
            self._sync_batch_norm()
        if cfg.run.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if cfg.run.compile:
            compile_encoders(self.model)
        self.optimizer = torch.optim.SGD(
            self.model.param_groups(cfg.optim.fix_pred_lr),
            lr=cfg.optim.lr,
            momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay,
        )
        self.model, self.optimizer = acc.prepare(self.model, self.optimizer)
        self.state = ckpt.RunState(init_source=self.init_source)
        self.metrics = MetricsLog(
            acc,
            self.out,
            cfg.optim.batch_size,
            cfg.data.max_bad_fraction,
            cfg.data.max_bad_images,
            self.data.dataset_size,
            trackers=bool(cfg.run.log_with),
        )
        self.region_check = region_check(
            cfg.model.method,
            self.unwrapped,
            cfg.run.region_warning,
            self.total_steps,
            warmup_steps(cfg, self.nominal_epoch_steps),
        )
        self.rollbacks = 0  # non-finite windows rolled back so far
        self.skip_through = 0  # after a rollback: batches up to this step are skipped, not trained on

    def _precision(self) -> str:
        """run.precision, resolved: the one asked for, else the launcher's (Accelerate's), else fp32."""
        acc, asked = self.accelerator, self.cfg.run.precision
        running = next(
            (name for name, accelerate_name in PRECISIONS.items() if accelerate_name == acc.mixed_precision),
            str(acc.mixed_precision),
        )
        if asked and running != asked:
            raise UserError(
                f"run.precision {asked} was asked for, but the Accelerator runs in {running} "
                "(accelerate launch --mixed_precision, or one created before): make them agree"
            )
        if running == "fp16" and acc.device.type == "cpu":
            raise UserError("fp16 needs a GPU (loss scaling on CUDA): use run.precision bf16 or fp32 on the CPU")
        return running

    def _start_point(self) -> Path | None:
        """The checkpoint this run resumes from, or None for step 0; a run that would mix with an
        earlier one in its folder, or resume what it cannot, is refused (:class:`UserError`)."""
        cfg = self.cfg
        earlier = list_checkpoints(self.out)
        resume = cfg.run.resume
        if resume == "auto":  # a requeued job: continue where the last one stopped, if it saved anything
            resume = "latest" if earlier else None
        if resume:
            path = ckpt.resolve_resume(resume, self.out)
            ckpt.check_resumable(cfg, read_state(path).get("config", {}), path)
            return path
        if earlier:  # its checkpoints would be taken for this run's at the next resume
            raise UserError(
                f"{self.out} holds checkpoints of an earlier run: continue it with --run.resume latest "
                "(or auto), or give this run another run.output_dir"
            )
        if (self.out / "encoder.safetensors").is_file():
            raise UserError(
                f"{self.out} holds the encoder of a finished run (encoder.safetensors): give this run "
                "another run.output_dir"
            )
        return None

    def summary(self) -> str:
        """One paragraph of what this run will do, for the log as it starts."""
        cfg, data = self.cfg, self.data
        source = data.source
        classes = len(getattr(source, "classes", None) or [])
        images = (
            ("a stream" if data.streaming else f"{data.dataset_size:,} images")
            + f" from {cfg.data.source}"
            + (f" ({classes} classes)" if classes else "")
        )
        per_process = cfg.optim.batch_size // self.world
        n = self.total_steps / data.steps_per_epoch if data.steps_per_epoch else 0.0
        epochs = (
            (f"{round(n, 2):,g}" if n >= 1 else f"{n:.2g}") + f" epochs of {data.steps_per_epoch:,} steps"
            if data.steps_per_epoch
            else "a stream"
        )
        start = (
            f"resumes at {self.start_from}"
            if self.start_from
            else f"starts from {self.init_source}"
            if self.init_source
            else "starts from a random init"
        )
        return (
            f"{cfg.model.method} on {cfg.model.backbone}, {cfg.data.image_size} px: {images}; batch "
            f"{cfg.optim.batch_size} ({self.world} process{'es' if self.world > 1 else ''} × {per_process}), "
            f"{epochs} = {self.total_steps:,} step{'s' if self.total_steps != 1 else ''}; "
            f"{schedule_words(cfg, self.total_steps, self.nominal_epoch_steps)}; {cfg.run.precision} on {self.accelerator.device.type}; {start}; output in {self.out}"
        )

    def _sync_batch_norm(self) -> None:
        """SyncBN across processes (SimSiam), where torch's SyncBatchNorm supports the device."""
        if self.accelerator.device.type in ("cuda", "xpu"):
            self.model = synchronised_batch_norm(self.model)
            logger.info("batch norm synchronised across %d processes", self.world)
        else:
            logger.warning(
                "SyncBatchNorm is not available on %s: batch norm statistics stay per process "
                "(per-process batch %d); pass --method.sync_bn false to silence this",
                self.accelerator.device.type,
                self.cfg.optim.batch_size // self.world,
            )

    @property
    def unwrapped(self) -> SSLMethod:
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict[str, Any]:
        """Run (or resume) pretraining; returns the final metrics.

        Raises:
            RunStopped: a stop signal (after a checkpoint at the step reached), a non-finite loss
                (without a checkpoint from those weights), or a checkpoint that could not be written.
        """
        cfg, acc = self.cfg, self.accelerator
        if acc.is_main_process:
            logger.info("%s", self.summary())
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write(self.out / "config.json", lambda tmp: tmp.write_text(config_json(cfg)))
        if cfg.run.log_with:
            acc.init_trackers("regioncl", config={k: str(v) for k, v in cfg.leaves().items()})
        if self.start_from is not None:
            self.resume(self.start_from)
        else:  # a run started again from step 0 in its folder (killed before its first checkpoint)
            self.metrics.truncate(-1)
        result: dict[str, Any] = {}
        if self.state.step == 0:
            result["knn_top1_before"] = self.knn("before training")

        stop = self.total_steps if cfg.run.stop_at_step is None else min(self.total_steps, cfg.run.stop_at_step)
        bar = progress_bar(
            acc, total=self.total_steps, initial=self.state.step, desc=cfg.model.method, dynamic_ncols=True
        )
        self.model.train()
        with StopSignals(cfg.run.stop_signals, acc) as signals:
            while self.state.step < stop:
                first_step, rolled_back = self.state.step, False
                for batch in self.data.batches(self.state.epoch, self.state.step_in_epoch):
                    if self.state.step < self.skip_through:  # the steps that diverged, after a rollback
                        self.advance(batch)
                        bar.update(1)
                        if self.state.step >= stop:
                            break
                        continue
                    lr = lr_at(cfg, self.state.step, self.total_steps, self.nominal_epoch_steps)
                    self.train_step(batch, lr)
                    bar.update(1)
                    at_checkpoint = self.state.step % cfg.run.checkpoint_every == 0 and self.state.step < stop
                    # A checkpoint must hold the bad-image counts of every step it covers: flush first.
                    if self.state.step % cfg.run.log_every == 0 or self.state.step == stop or at_checkpoint:
                        record = self.metrics.flush(self.state.step, self.state.epoch, lr)
                        bar.set_postfix(
                            loss=f"{record['loss']:.3f}", lr=f"{lr:.3g}", ips=f"{record['images_per_s']:.0f}"
                        )
                        if not finite(record):
                            self.roll_back_or_stop(record["window"])
                            rolled_back = True
                            break
                        self.stop_if_too_many_bad()
                        if self.region_check is not None:
                            self.warn(self.region_check.see(record))
                    if self.state.step >= stop:
                        break
                    if signals.agreed():
                        self.stop_for_signal(signals.received, lr)
                    if at_checkpoint:
                        self.save(periodic=True)
                else:  # the epoch's data ran out
                    if self.state.step == first_step and self.state.step_in_epoch == 0:
                        raise RuntimeError(
                            f"data source {cfg.data.source!r} yielded no full batch of "
                            f"{cfg.optim.batch_size // self.world} images"
                        )
                    self.state.epoch += 1
                    self.state.step_in_epoch = 0
                    if cfg.knn.every and self.state.epoch % cfg.knn.every == 0 and self.state.step < self.total_steps:
                        with self.metrics.paused():  # images/s counts training time only
                            self.knn(f"after epoch {self.state.epoch}")
                        self.model.train()
                if rolled_back:
                    bar.reset(total=self.total_steps)
                    bar.update(self.state.step)
        bar.close()
        self.stop_if_too_many_bad(final=True)
        self.save()
        if self.state.step >= self.total_steps:
            self.share_eval_buffers()
            self.save_encoder()
            # No step taken (max_steps 0, a random-init reference): the weights are those just scored.
            untrained = self.state.step == 0 and "knn_top1_before" in result
            result["knn_top1_after"] = result["knn_top1_before"] if untrained else self.knn("after training")
        result.update(step=self.state.step, epoch=self.state.epoch)
        for tracker in acc.trackers:  # the process group stays up: the caller may go on using it
            tracker.finish()
        return result

    def advance(self, batch: dict[str, torch.Tensor]) -> None:
        """Count a batch as done without training on it."""
        if self.data.streaming:
            self.data.positions.update(batch)
        self.state.step += 1
        self.state.step_in_epoch += 1

    def stop_for_signal(self, name: str | None, lr: float) -> None:
        """A checkpoint at the step reached (every process), the metrics flushed, the job requeued if
        asked; but never from weights that followed a non-finite loss."""
        if self.metrics.steps:
            record = self.metrics.flush(self.state.step, self.state.epoch, lr)
            if not finite(record):
                raise RunStopped(self.nonfinite_message(record["window"], self.last_good()), EXIT_NONFINITE)
        path = self.save()
        if self.cfg.run.requeue_on_signal and self.accelerator.is_main_process:
            requeue_slurm_job()
        raise RunStopped(
            f"stopped by {name or 'a signal to another process'} at step {self.state.step}: "
            f"checkpoint {path or 'saved'}; continue with --run.resume latest",
            EXIT_STOPPED,
        )

    def stop_if_too_many_bad(self, final: bool = False) -> None:
        """Stop once unreadable images are too many (:meth:`MetricsLog.too_many_bad`), after a
        checkpoint at the step reached: the steps paid for are kept (bad images are skipped, never
        trained on), and the run continues from there once the files are fixed or the limits raised."""
        why = self.metrics.too_many_bad(self.state.epoch, final)
        if why is None:
            return
        path = self.save()
        raise RunStopped(
            f"{why}. Checkpoint {path or 'saved'} at step {self.state.step}: fix or remove those files "
            "(or raise --data.max_bad_fraction / --data.max_bad_images) and continue with --run.resume "
            "latest",
            EXIT_BAD_DATA,
        )

    def on_main(self, decide: Any) -> Any:
        """``decide()`` on the main process, its answer (or its exception) given to every process:
        the processes take the same branch even where each would read the files differently."""
        answer: list[Any] = [None]
        if self.accelerator.is_main_process:
            try:
                answer[0] = decide()
            except Exception as e:
                answer[0] = e
        if self.world > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(answer)
        if isinstance(answer[0], Exception):
            raise answer[0]
        return answer[0]

    def last_good(self) -> Path | None:
        """The newest checkpoint of this run that verifies, or None (decided on the main process)."""

        def find() -> Path | None:
            try:
                return ckpt.resolve_resume("latest", self.out)
            except (FileNotFoundError, ckpt.CheckpointError):
                return None

        return self.on_main(find)

    def nonfinite_message(self, window: list[int], good: Path | None) -> str:
        where = f"the last good checkpoint is {good}" if good else "there is no checkpoint of this run yet"
        hint = (
            f" ({self.rollbacks} rollbacks spent)"
            if self.cfg.run.on_nonfinite == "rollback"
            else "; --run.on_nonfinite rollback reloads it and skips the offending steps"
        )
        return (
            f"the loss was not finite (NaN or Inf) in steps {window[0]}–{window[1]}; no checkpoint was written "
            f"from these weights, and {where}{hint}. Try a lower optim.lr, more optim.warmup_epochs, or "
            "bf16/fp32 instead of fp16 (accelerate launch --mixed_precision)"
        )

    def roll_back_or_stop(self, window: list[int]) -> None:
        """After a non-finite loss in steps ``window``: reload the newest good checkpoint and skip the
        batches from it through the window (``run.on_nonfinite: rollback``, while rollbacks remain), or stop."""
        first, last = window
        good = self.last_good()
        if self.cfg.run.on_nonfinite == "rollback" and good is not None and self.rollbacks < self.cfg.run.max_rollbacks:
            self.rollbacks += 1
            logger.warning(
                "non-finite loss in steps %d–%d: rolling back to %s and skipping the batches up to step %d "
                "(rollback %d of at most %d)",
                first,
                last,
                good,
                last,
                self.rollbacks,
                self.cfg.run.max_rollbacks,
            )
            self.resume(good)
            self.skip_through = last
            if self.accelerator.is_main_process:
                self.metrics.write({"step": last, "nonfinite_steps": [first, last], "rolled_back_to": self.state.step})
            return
        raise RunStopped(self.nonfinite_message(window, good), EXIT_NONFINITE)

    def train_step(self, batch: dict[str, torch.Tensor], lr: float) -> None:
        acc, step = self.accelerator, self.state.step
        for group in self.optimizer.param_groups:
            if not group.get("fix_lr", False):
                group["lr"] = lr
        # The views are made (augmented on the device, normalised) in fp32, outside autocast: the
        # augmentation writes into float32 batches, and the model's autocast is for the model.
        view_q, view_k = self.data.to_device(batch["view_q"], 0, step), self.data.to_device(batch["view_k"], 1, step)
        every = self.cfg.run.diagnose_every
        if every and (step + 1) % every == 0:  # labelled with the step it precedes, as a resumed run counts
            with acc.autocast(), self.metrics.paused():
                record = region_diagnostics(self.unwrapped, view_q, view_k, step)
            self.metrics.write({"step": step + 1, **record})
        with acc.autocast():
            out = self.model(view_q, view_k, step=step)
        acc.backward(out["loss"])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.metrics.add(out, int(batch["bad"].sum()), self.state.step + 1)
        if self.data.streaming:
            self.data.positions.update(batch)
        self.state.step += 1
        self.state.step_in_epoch += 1

    def share_eval_buffers(self) -> None:
        """Every process takes the main process's BN running statistics of the online encoder.

        DDP does not broadcast buffers here (the queue would go with them every step), so each
        process's running statistics follow its own batches. Evaluations and the exported encoder
        use the main process's (those a checkpoint keeps, and a resumed run starts from).
        """
        if self.world > 1:
            import torch.distributed as dist

            for buffer in self.unwrapped.encoder.buffers():
                dist.broadcast(buffer, src=0)

    def knn(self, tag: str) -> float | None:
        """kNN top-1 of the online encoder, logged with the epochs completed (every process calls it)."""
        if self.monitor.active:
            self.share_eval_buffers()
        return self.monitor.evaluate(
            self.unwrapped.encoder, tag, self.state.step, self.state.step / self.nominal_epoch_steps, self.metrics.write
        )

    # ------------------------------------------------------------------ checkpoints
    def save(self, periodic: bool = False) -> Path | None:
        """A checkpoint at the current step (a collective: every process calls it). A periodic one
        that cannot be written stops the run, or is skipped with a warning (``run.on_save_error``)."""
        if self.data.streaming:
            self.state.stream_positions = self.data.positions.gather()
        self.state.bad_images, self.state.images_read = self.metrics.bad_images, self.metrics.images_read
        state = {
            **vars(self.state),
            "config": self.cfg.to_dict(),
            "steps_per_epoch": self.nominal_epoch_steps,
            "total_steps": self.total_steps,
        }
        try:
            path = ckpt.save_checkpoint(self.accelerator, self.out, state, self.cfg.run.keep_checkpoints)
        except ckpt.CheckpointError as e:
            if periodic and self.cfg.run.on_save_error == "continue":
                logger.warning("%s; training goes on, the next checkpoint tries again", e)
                return None
            raise RunStopped(str(e), EXIT_CHECKPOINT) from e
        if path is not None:
            logger.info("checkpoint saved: %s", path)
        return path

    def warn(self, message: str | None) -> None:
        """A warning about the run's course, in the log and as a record of ``metrics.jsonl`` (main process)."""
        if message and self.accelerator.is_main_process:
            logger.warning("%s", message)
            self.metrics.write({"step": self.state.step, "warning": WARNING, "message": message}, trackers=False)

    def resume(self, path: Path) -> None:
        """Load model, key encoder, queue, optimizer and RNG states, and the run position, from the
        checkpoint ``path`` (verified, on the main process: :meth:`_start_point`, :meth:`last_good`)."""
        saved = read_state(path)
        self.accelerator.load_state(str(path))
        self.state = ckpt.RunState.from_saved(saved)
        self.metrics.bad_images, self.metrics.images_read = self.state.bad_images, self.state.images_read
        if self.data.streaming:
            self.data.positions.restore(self.state.stream_positions, self.state.step_in_epoch, path)
        self.metrics.truncate(self.state.step)
        self.metrics.reset()
        if self.region_check is not None:
            self.warn(self.region_check.replay(self.out / "metrics.jsonl"))
        logger.info("resumed from %s at step %d (epoch %d)", path, self.state.step, self.state.epoch)

    def save_encoder(self) -> None:
        """The online encoder's timm state dict, ready for plain timm (full export: scripts/export.py)."""
        if self.accelerator.is_main_process:
            encoder = self.unwrapped.encoder
            state = {k: v.detach().cpu().contiguous() for k, v in encoder.model.state_dict().items()}
            save_safetensors(
                state, self.out / "encoder.safetensors", metadata={"architecture": encoder.spec.architecture}
            )
            logger.info("encoder weights saved: %s", self.out / "encoder.safetensors")


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Build a :class:`Trainer` from ``cfg``, train, and end the run (trackers, process group)."""
    trainer = Trainer(cfg)
    try:
        result = trainer.train()
    except RunStopped:  # every process stops at the same step: end the group together
        trainer.accelerator.end_training()
        raise
    trainer.accelerator.end_training()
    return result
