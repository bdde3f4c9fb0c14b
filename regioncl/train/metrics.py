"""The run's metrics: step outputs summed on the device, one record per logging window, bad images counted.

Records go to ``OUTPUT_DIR/metrics.jsonl`` (main process) and to Accelerate's trackers. The
window's losses stay on the device between records, so a step costs no host synchronisation;
the one synchronisation of a window is the reduction across processes when it is written.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_write


class MetricsLog:
    """Sums of the step outputs since the last record, the bad-image accounting, and the log file.

    Args:
        accelerator: the run's Accelerator (reduction, main process, trackers).
        out: the run's output folder.
        batch_size: the global batch (images per step, for images/s).
        max_bad_fraction, max_bad_images: unreadable images become too many when they are more than
            this fraction of the images read and more than this many per pass over the data.
        dataset_size: images in the source (None for a stream), for when the fraction is checked.
        trackers: whether records also go to Accelerate's trackers.
    """

    def __init__(
        self,
        accelerator: Any,
        out: Path,
        batch_size: int,
        max_bad_fraction: float,
        max_bad_images: int,
        dataset_size: int | None,
        trackers: bool,
    ) -> None:
        self.accelerator, self.out, self.batch_size = accelerator, out, batch_size
        self.max_bad_fraction, self.max_bad_images = max_bad_fraction, max_bad_images
        self.dataset_size, self.trackers = dataset_size, trackers
        self.bad_images = 0  # unreadable images skipped so far (all processes)
        self.images_read = 0  # images decoded or attempted (all processes)
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.first_step = 0
        self.bad = 0
        self.start = time.perf_counter()

    def add(self, out: dict[str, torch.Tensor], bad: int, step: int) -> None:
        """Step ``step``'s outputs (kept on the device) and the bad images its batch skipped."""
        if not self.steps:
            self.first_step = step
        for key, value in out.items():
            self.sums[key] = self.sums[key] + value.detach().float() if key in self.sums else value.detach().float()
        self.steps += 1
        self.bad += bad

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside does not count in images/s (an evaluation between steps)."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.start += time.perf_counter() - began

    def flush(self, step: int, epoch: int, lr: float) -> dict[str, Any]:
        """Average the window's outputs over steps and processes, count bad images, log one record."""
        keys = sorted(self.sums)
        device = self.sums[keys[0]].device
        packed = torch.stack([self.sums[k] for k in keys] + [torch.tensor(float(self.bad), device=device)])
        world = self.accelerator.num_processes
        if world > 1:
            packed = self.accelerator.reduce(packed, reduction="sum")
        values = packed.tolist()  # the only host sync of the window
        seconds = time.perf_counter() - self.start
        total_bad = int(values[-1])
        self.bad_images += total_bad
        self.images_read += self.steps * self.batch_size + total_bad
        record: dict[str, Any] = {"step": step, "epoch": epoch, "lr": lr}
        record.update({k: v / (self.steps * world) for k, v in zip(keys, values[:-1])})
        record["images_per_s"] = self.steps * self.batch_size / max(seconds, 1e-9)
        record["bad_images"] = self.bad_images
        self.write(record)
        record["window"] = [self.first_step, step]  # the steps this record covers (not logged)
        self.reset()
        return record

    def write(self, record: dict[str, Any], trackers: bool = True) -> None:
        """One record to ``metrics.jsonl`` (main process) and, unless ``trackers`` is False (a record
        of text), to the trackers."""
        if self.accelerator.is_main_process:
            with open(self.out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.trackers and trackers:
            self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def truncate(self, step: int) -> None:
        """Drop records a killed run wrote after the checkpoint it resumes from (at ``step``; -1: all)."""
        path = self.out / "metrics.jsonl"
        if not self.accelerator.is_main_process or not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        atomic_write(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept)))

    def too_many_bad(self, epoch: int, final: bool = False) -> str | None:
        """Why the unreadable images so far are too many to go on, or None. They are too many when
        they are more than ``max_bad_fraction`` of the images read *and* more than ``max_bad_images``
        per pass over the data (a pass: the dataset's size in images read; for a stream, an epoch), so
        that a few bad files in a small folder never stop a run. Before 1,000 images (or one pass over
        a smaller set) are read, only at the end (``final``)."""
        bad, read = self.bad_images, self.images_read
        minimum = 1000 if self.dataset_size is None else min(1000, self.dataset_size)
        if not bad or not (read >= minimum or final):
            return None
        passes = max(1.0, read / self.dataset_size) if self.dataset_size else epoch + 1.0
        if bad <= self.max_bad_fraction * read or bad <= self.max_bad_images * passes:
            return None
        return (
            f"{bad} of {read} images read ({bad / read:.1%}) could not be decoded, more than "
            f"data.max_bad_fraction={self.max_bad_fraction:.1%} of them and more than data.max_bad_images="
            f"{self.max_bad_images} per pass over the data; the 'regioncl.data' warnings name them"
        )
