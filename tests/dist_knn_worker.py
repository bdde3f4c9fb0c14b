"""Run under `accelerate launch --num_processes 2`: kNN of a fixed encoder on a folder; rank 0 writes it."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regioncl.backbones import create_encoder  # noqa: E402
from regioncl.data import build_source, eval_transform  # noqa: E402
from regioncl.distributed import make_accelerator  # noqa: E402
from regioncl.eval.knn import knn_evaluate  # noqa: E402

acc = make_accelerator()
torch.manual_seed(0)
encoder = create_encoder("resnet18", output_stride=8)
root = Path(sys.argv[1])
top1 = knn_evaluate(
    encoder,
    build_source(str(root / "train")),
    build_source(str(root / "val")),
    eval_transform(16, crop_pct=1.0),
    acc.device,
    k=5,
    batch_size=4,
)
if acc.is_main_process:
    (root / "knn.json").write_text(json.dumps({"top1": top1, "world": acc.num_processes}))
acc.wait_for_everyone()
acc.end_training()  # tear the group down together: a rank exiting mid-collective aborts gloo
