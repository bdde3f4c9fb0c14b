"""Run under `accelerate launch --num_processes 2`: one MoCo v2 step, then dump this rank's keys and queue."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regioncl import build_method, create_encoder  # noqa: E402
from regioncl.distributed import make_accelerator  # noqa: E402

acc = make_accelerator()
torch.manual_seed(0)
model = build_method("regioncl_m", create_encoder("resnet18", output_stride=8), queue_size=16, hidden_dim=32, dim=8)
model.check(32, 4, acc.num_processes)
model = acc.prepare(model)
g = torch.Generator().manual_seed(100 + acc.process_index)  # each rank sees different images
xq, xk = torch.randn(4, 3, 32, 32, generator=g), torch.randn(4, 3, 32, 32, generator=g)
out = model(xq, xk, step=0)
acc.backward(out["loss"])
inner = acc.unwrap_model(model)
with torch.no_grad():
    k = inner.keys(xk, step=0)["k"]  # same key params and shuffle as inside the step
torch.save(
    {"keys": k, "queue": inner.queue.keys.clone(), "ptr": int(inner.queue.ptr), "world": acc.num_processes},
    Path(sys.argv[1]) / f"rank{acc.process_index}.pt",
)
# Leave together and tear the group down: a rank exiting mid-collective aborts gloo.
acc.wait_for_everyone()
acc.end_training()
