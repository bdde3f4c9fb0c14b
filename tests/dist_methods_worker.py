"""Run under `accelerate launch --num_processes 2`: a few steps of every method; rank 0 writes the losses."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regioncl.methods import METHODS  # noqa: E402
from regioncl.train.config import make_config  # noqa: E402
from regioncl.train.trainer import Trainer  # noqa: E402

out = Path(sys.argv[1])
results = {}
for name in METHODS:
    cfg = make_config(
        overrides=dict(
            method=name,
            backbone="resnet10t",
            image_size=16,
            batch_size=8,
            queue_size=32,
            proj_hidden_dim=32,
            proj_dim=16,
            pred_dim=8,
            num_workers=0,
            knn=False,
            log_every=1,
            max_steps=3,
            output_dir=str(out / name),
        )
    )
    trainer = Trainer(cfg)
    trainer.train()
    inner = trainer.unwrapped
    # The BN running statistics each rank now holds for evaluation and export (a digest per rank).
    buffers = torch.cat([b.float().flatten() for b in inner.encoder.buffers()])
    digests = [torch.zeros(2) for _ in range(trainer.world)]
    torch.distributed.all_gather(digests, torch.stack([buffers.sum(), (buffers * torch.arange(len(buffers))).sum()]))
    results[name] = {
        "buffer_digests": [d.tolist() for d in digests],
        "world": trainer.world,
        "queue_ptr": int(inner.queue.ptr) if hasattr(inner, "queue") else None,
        "dense_queue_ptr": int(inner.dense_queue.ptr) if hasattr(inner, "dense_queue") else None,
    }
if trainer.accelerator.is_main_process:
    (out / "results.json").write_text(json.dumps(results))
trainer.accelerator.end_training()
