"""Where each reader of a stream is, so that a resumed run continues at the exact example.

A reader is a DataLoader worker of a process (or the process itself without workers). Each
batch comes from one reader and carries the stream indices it holds; the reader's position is
the number of examples it has delivered in the epoch, bad ones included. A checkpoint gathers
every process's positions in rank order; a resumed reader skips that many examples undecoded,
and worker w plays reader (w + steps) mod W so that the DataLoader's round robin continues
with the reader whose turn it was.
"""

from __future__ import annotations

from typing import Any

import torch

from ..distributed import concat_all_gather
from ..errors import UserError


class StreamPositions:
    """The positions of this process's ``readers`` in the current epoch."""

    def __init__(self, readers: int, accelerator: Any) -> None:
        self.readers = readers
        self.accelerator = accelerator
        self.local = [0] * readers
        self.saved: list[int] = []  # every reader's position at the checkpoint resumed from

    def update(self, batch: dict[str, torch.Tensor]) -> None:
        """Record the batch's reader as having delivered up to its last index (CPU tensors: no sync)."""
        reader = int(batch["reader"][0]) - self.accelerator.process_index * self.readers
        self.local[reader] = int(batch["index"].max()) + 1

    def gather(self) -> list[int]:
        """Every reader's position, in rank order (a collective: every process calls it)."""
        local = torch.tensor(self.local, dtype=torch.long, device=self.accelerator.device)
        return concat_all_gather(local).tolist()

    def restore(self, saved: list[int], step_in_epoch: int, where: Any) -> None:
        """Take this process's positions from a checkpoint stopped mid-epoch."""
        self.saved = list(saved)
        if step_in_epoch == 0:
            return
        readers = self.accelerator.num_processes * self.readers
        if len(saved) != readers:
            raise UserError(
                f"checkpoint {where} stopped mid-epoch in a stream read by {len(saved)} readers (processes × "
                f"workers); this run has {readers}. Resume with the same number of processes and "
                "--data.num_workers, so every reader continues its own part of the stream"
            )
        mine = self.accelerator.process_index * self.readers
        self.local = saved[mine : mine + self.readers]

    def start_epoch(self, skip_steps: int) -> tuple[list[int] | None, int]:
        """``(positions to skip, reader rotation)`` for an epoch entered after ``skip_steps`` steps."""
        if skip_steps == 0:
            self.local = [0] * self.readers
        resumed = skip_steps > 0 and len(self.saved) == self.accelerator.num_processes * self.readers
        return (self.saved if resumed else None), (skip_steps % self.readers if resumed else 0)
