"""The smallest pretraining run the trainer's tests share: resnet10t at 16 px, a batch of 8, a queue
of 32, narrow heads, no workers, no kNN, a record every step (short override names, as
``make_config(overrides=...)`` takes them)."""

from contextlib import contextmanager

import torch

TINY = dict(
    backbone="resnet10t",
    image_size=16,
    batch_size=8,
    queue_size=32,
    proj_hidden_dim=32,
    proj_dim=16,
    num_workers=0,
    knn=False,
    log_every=1,
    epochs=1,
    lr=0.05,
)


@contextmanager
def torch_threads(n: int):
    """Runs compared step by step with a signalled run use its thread count: another count sums in
    another order, and on some CPUs that moves the losses beyond the comparison's tolerance (the golden runs, a stop
    signal's resumed run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
