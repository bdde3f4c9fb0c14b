"""The memory queue of keys (MoCo's ``_dequeue_and_enqueue``), saved with the model.

Example:
    >>> q = KeyQueue(size=8, dim=4)
    >>> q.enqueue(torch.nn.functional.normalize(torch.randn(4, 4), dim=1))
    >>> int(q.ptr)
    4
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError


class KeyQueue(nn.Module):
    """A FIFO ring of ``size`` L2-normalised keys of dimension ``dim``.

    The keys and the write pointer are registered buffers, so the queue travels with
    ``state_dict()`` and therefore with every checkpoint. Enqueueing is pure device
    arithmetic (no host synchronisation).

    Args:
        size: K, the number of keys; must be a multiple of the global batch.
        dim: D, the key dimension.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size <= 0:
            raise UserError(f"queue size must be positive, got {size}")
        self.size = size
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def check_batch(self, global_batch: int) -> None:
        """Refuse a global batch that does not divide the queue length (as MoCo asserts)."""
        if global_batch <= 0 or self.size % global_batch:
            raise UserError(
                f"queue size {self.size} is not a multiple of the global batch {global_batch} "
                "(per-process batch × processes); change optim.batch_size or method.queue_size."
            )

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``(N, D)`` keys (already gathered from every process) over the oldest ones."""
        self.check_batch(keys.shape[0])
        index = (self.ptr + torch.arange(keys.shape[0], device=self.keys.device)) % self.size
        self.keys.index_copy_(0, index, keys.detach().to(self.keys.dtype))
        self.ptr.add_(keys.shape[0]).remainder_(self.size)
