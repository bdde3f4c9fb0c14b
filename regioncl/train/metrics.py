"""The run's metrics: step outputs summed on the device, one record per logging window, bad images counted.

Records go to ``OUTPUT_DIR/metrics.jsonl`` (main process) and to Accelerate's trackers. The
window's losses stay on the device between records, so a step costs no host synchronisation;
the one synchronisation of a window is the reduction across processes when it is written.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from ..files import atomic_write


class MetricsLog:
    """Sums of the step outputs since the last record, the bad-image accounting, and the log file.

    Args:
        accelerator: the run's Accelerator (reduction, main process, trackers).
        out: the run's output folder.
        batch_size: the global batch (images per step, for images/s).
        max_bad_fraction: stop once more than this fraction of the images read is unreadable.
        dataset_size: images in the source (None for a stream), for when the fraction is checked.
        trackers: whether records also go to Accelerate's trackers.
    """

    def __init__(self, accelerator: Any, out: Path, batch_size: int, max_bad_fraction: float,
                 dataset_size: int | None, trackers: bool) -> None:
        self.accelerator, self.out, self.batch_size = accelerator, out, batch_size
        self.max_bad_fraction, self.dataset_size, self.trackers = max_bad_fraction, dataset_size, trackers
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
        self.check_bad()
        return record

    def write(self, record: dict[str, Any]) -> None:
        """One record to ``metrics.jsonl`` (main process) and to the trackers."""
        if self.accelerator.is_main_process:
            with open(self.out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.trackers:
            self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def truncate(self, step: int) -> None:
        """Drop records a killed run wrote after the checkpoint it resumes from (at ``step``; -1: all)."""
        path = self.out / "metrics.jsonl"
        if not self.accelerator.is_main_process or not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        atomic_write(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept)))

    def check_bad(self, final: bool = False) -> None:
        """Stop with a clear error once unreadable images exceed ``max_bad_fraction``."""
        bad, read = self.bad_images, self.images_read
        minimum = 1000 if self.dataset_size is None else min(1000, self.dataset_size)
        if bad and (read >= minimum or final) and bad > self.max_bad_fraction * read:
            raise RuntimeError(
                f"{bad} of {read} images read ({bad / read:.1%}) could not be decoded, more than "
                f"data.max_bad_fraction={self.max_bad_fraction:.1%}; see the 'regioncl.data' warnings for their "
                "ids, fix or remove them, or raise --data.max_bad_fraction"
            )
