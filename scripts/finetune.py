#!/usr/bin/env python
"""Fine-tune a pretrained encoder end to end with a new classifier (timm optimizer/scheduler/mixup, Accelerate).

    python scripts/finetune.py runs/default --epochs 5 --lr 0.05 --image-size 32 --warmup-epochs 1
    accelerate launch scripts/finetune.py hf-hub:ORG/regioncl_m_r50 --train-data /data/train --val-data /data/val \\
        --opt adamw --lr 1e-3 --weight-decay 0.05 --mixup 0.8 --cutmix 1.0

ENCODER is a run folder, a checkpoint folder, a weights file, or a timm `local-dir:`/`hf-hub:` name.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regioncl.data import build_source  # noqa: E402
from regioncl.distributed import make_accelerator  # noqa: E402
from regioncl.finetune import FinetuneConfig, finetune, load_finetune_model  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("encoder")
    p.add_argument("--train-data", default="sample")
    p.add_argument("--val-data", default="sample")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--num-classes", type=int, help="default: the largest label + 1 of the training data")
    for f in dataclasses.fields(FinetuneConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    a = vars(p.parse_args(argv))
    cfg = FinetuneConfig(**{f.name: a[f.name] for f in dataclasses.fields(FinetuneConfig)})
    train = build_source(a["train_data"], a["train_split"], image_size=cfg.image_size)
    val = build_source(a["val_data"], a["val_split"], image_size=cfg.image_size)
    num_classes = a["num_classes"] or max(train[i][1] for i in range(len(train))) + 1
    if num_classes <= 0:
        p.error("the training data has no labels")
    acc = make_accelerator()
    result = finetune(load_finetune_model(a["encoder"], num_classes), train, val, num_classes, cfg, acc)
    out = {"encoder": a["encoder"], "top1": result["top1"], "top5": result["top5"], "epochs": cfg.epochs}
    if acc.is_main_process:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
