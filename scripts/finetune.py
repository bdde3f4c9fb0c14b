#!/usr/bin/env python
"""Fine-tune a pretrained encoder end to end with a new classifier (timm optimizer/scheduler/mixup, Accelerate).

    python scripts/finetune.py runs/default --epochs 5 --lr 0.05 --image-size 32 --warmup-epochs 1
    accelerate launch scripts/finetune.py hf-hub:ORG/regioncl_m_r50 --train-data /data/train --val-data /data/val \\
        --opt adamw --lr 1e-3 --weight-decay 0.05 --mixup 0.8 --cutmix 1.0

ENCODER is a run folder, a checkpoint folder, a weights file, or a timm `local-dir:`/`hf-hub:` name.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regioncl.cli import add_dataclass_arguments, add_labelled_data_arguments, dataclass_from_args, labelled_sources  # noqa: E402
from regioncl.distributed import make_accelerator  # noqa: E402
from regioncl.finetune import FinetuneConfig, finetune, load_finetune_model  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_labelled_data_arguments(p)
    add_dataclass_arguments(p, FinetuneConfig)
    a = p.parse_args(argv)
    cfg = dataclass_from_args(FinetuneConfig, a)
    train, val, num_classes = labelled_sources(p, a, cfg.image_size)
    acc = make_accelerator()
    result = finetune(load_finetune_model(a.encoder, num_classes), train, val, num_classes, cfg, acc)
    out = {"encoder": a.encoder, "top1": result["top1"], "top5": result["top5"], "epochs": cfg.epochs}
    if acc.is_main_process:
        print(json.dumps(out))
    acc.end_training()  # every process tears the group down together
    return out


if __name__ == "__main__":
    main()
