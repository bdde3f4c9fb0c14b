"""Collective helpers that degrade to no-ops in one process (CPU or GPU alike)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every process along dim 0, in rank order (no gradient)."""
    n = world_size()
    if n == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(n)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def batch_shuffle(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo's shuffle-BN: permute the *global* key batch and give each process a slice.

    Every process must pass a generator in the same state, so that all draw the same
    permutation without a broadcast.

    Args:
        x: ``(B, ...)`` this process's batch.
        generator: a CPU generator, identically seeded on every process.

    Returns:
        ``(x_shuffled, index_unshuffle)``: this process's ``(B, ...)`` share of the
        shuffled global batch, and the global inverse permutation for :func:`batch_unshuffle`.
    """
    gathered = concat_all_gather(x)
    shuffle = torch.randperm(gathered.shape[0], generator=generator).to(x.device, non_blocking=True)
    unshuffle = torch.argsort(shuffle)
    mine = shuffle.view(world_size(), -1)[rank()]
    return gathered[mine], unshuffle


@torch.no_grad()
def batch_unshuffle(x: torch.Tensor, index_unshuffle: torch.Tensor) -> torch.Tensor:
    """Undo :func:`batch_shuffle` on the encoded keys ``(B, ...)``."""
    gathered = concat_all_gather(x)
    mine = index_unshuffle.view(world_size(), -1)[rank()]
    return gathered[mine]


def make_accelerator(**kwargs):
    """An ``accelerate.Accelerator`` that also spans several processes on a machine without accelerators.

    ``accelerate launch --multi_gpu --num_processes N`` starts N processes anywhere, but
    Accelerate forms a gloo group of CPU processes only when asked for the CPU; so ask for
    it exactly when no accelerator is present (a GPU machine is left to Accelerate's choice).

    Refused in a DataLoader worker that is importing the main module as it starts (see
    :mod:`regioncl.data.workers`): a script that makes its accelerator outside an
    ``if __name__ == "__main__":`` block would otherwise have every worker join the job as a process.
    """
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        from .errors import UserError

        raise UserError(
            "a DataLoader worker, importing the main script as it starts, was made to start a run: put "
            'the script\'s work under `if __name__ == "__main__":` (its workers import it), or use '
            "no workers (num_workers 0)"
        )
    from accelerate import Accelerator

    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    if not has_accelerator:
        kwargs.setdefault("cpu", True)
    return Accelerator(**kwargs)


def progress_bar(accelerator: Any, iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm bar on the local main process only; written to a log file rather than a
    terminal, it updates every 30 s instead of twice a second."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        disable=not accelerator.is_local_main_process,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,
        **kwargs,
    )


def default_workers(requested: int | None = None) -> int:
    """DataLoader workers per process: ``requested``, or one core short of all, at most 8."""
    if requested is not None:
        return requested
    import os

    return max(0, min(8, (os.cpu_count() or 1) - 1))
