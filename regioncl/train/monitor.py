"""The kNN monitor: top-1 of the online encoder on a held-out split while it trains (SPEC §10)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..data import build_source, eval_transform
from ..errors import UserError
from ..eval.knn import check_k, knn_evaluate
from .config import PretrainConfig
from .hostmem import release_freed_host_memory

logger = logging.getLogger("regioncl")


class KnnMonitor:
    """kNN top-1 on the configured bank and queries, or on the sample set when training on it.

    Every process must call :meth:`evaluate` (each encodes its share); the main process logs.
    """

    def __init__(self, cfg: PretrainConfig, accelerator: Any) -> None:
        self.cfg, self.accelerator = cfg, accelerator
        self.train_spec, self.val_spec = cfg.knn_data()

    def check(self) -> None:
        """Refuse, before any compute, a monitor that would score wrongly: queries from the bank's
        own images (each finds itself), a bank smaller than k, or data without labels."""
        if not self.active:
            return
        from ..data.sources import num_classes, same_images

        k = self.cfg.knn
        bank_split, val_split = self._splits()
        if same_images(self.train_spec, bank_split, self.val_spec, val_split):
            raise UserError(
                f"knn.val_data {self.val_spec!r} holds the images of the kNN bank ({self.train_spec!r}): "
                "each query would find itself; give held-out images"
            )
        size = self.cfg.data.image_size
        bank, val = (
            build_source(spec, split, image_size=size)
            for spec, split in ((self.train_spec, bank_split), (self.val_spec, val_split))
        )
        for name, spec, source in (("knn.train_data", self.train_spec, bank), ("knn.val_data", self.val_spec, val)):
            if num_classes(source) == 0:
                raise UserError(
                    f"{name} {spec!r} has no labels (class subfolders, or a label column): the kNN monitor "
                    "needs them; --knn.enabled false runs without it"
                )
        check_k(k.k, len(bank), "knn.k")

    def _splits(self) -> tuple[str, str]:
        # Rendered at the training size, the sample set has a val split; a dataset's is "validation".
        return ("train", "val") if self.train_spec == "sample" else ("train", "validation")

    @property
    def active(self) -> bool:
        return self.cfg.knn.enabled and self.train_spec is not None and self.val_spec is not None

    def top1(self, encoder: Any) -> float | None:
        """kNN top-1 of ``encoder``, or None when off or without labels."""
        if not self.active:
            return None
        cfg = self.cfg
        size = cfg.data.image_size
        on_sample = self.train_spec == "sample"
        # Rendered at the training size, the sample set needs no resize; other images get the usual crop.
        transform = eval_transform(size, crop_pct=1.0 if on_sample else 0.875)
        splits = self._splits()
        bank, val = (
            build_source(spec, split, image_size=size)
            for spec, split in ((self.train_spec, splits[0]), (self.val_spec, splits[1]))
        )
        top1 = knn_evaluate(
            encoder,
            bank,
            val,
            transform,
            self.accelerator.device,
            k=cfg.knn.k,
            temperature=cfg.knn.temperature,
            num_workers=cfg.data.workers,
            channels_last=cfg.run.channels_last,
        )
        if top1 is None:
            logger.info("kNN skipped: the evaluation data has no labels")
        return top1

    def evaluate(
        self, encoder: Any, tag: str, step: int, epochs_done: float, write: Callable[[dict], None]
    ) -> float | None:
        """:meth:`top1`, logged as a record ``{step, epoch, knn_top1}`` (epochs completed, a float)."""
        top1 = self.top1(encoder)
        release_freed_host_memory()  # the feature banks' memory is not the steps'
        if top1 is not None and self.accelerator.is_main_process:
            logger.info("kNN top-1 %s: %.2f%%", tag, 100 * top1)
            write({"step": step, "epoch": epochs_done, "knn_top1": top1})
        return top1
