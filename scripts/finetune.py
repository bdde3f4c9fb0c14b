#!/usr/bin/env python
"""Fine-tune a pretrained encoder end to end with a new classifier (timm optimizer/scheduler/mixup, Accelerate).

    python scripts/finetune.py runs/default --epochs 5 --lr 0.05 --image_size 32 --warmup_epochs 1
    accelerate launch scripts/finetune.py hf-hub:ORG/regioncl_m_r50 --train_data /data/train --val_data /data/val \\
        --opt adamw --lr 1e-3 --weight_decay 0.05 --mixup 0.8 --cutmix 1.0

ENCODER is a run folder, a checkpoint folder, a weights file, or a timm `local-dir:`/`hf-hub:` name.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regioncl.eval.cli import run_labelled_evaluation  # noqa: E402
from regioncl.eval.finetune import FinetuneConfig, finetune, load_finetune_model  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    return run_labelled_evaluation(
        __doc__, FinetuneConfig,
        lambda spec, train, val, n, cfg, acc: finetune(load_finetune_model(spec, n), train, val, n, cfg, acc), argv)


if __name__ == "__main__":
    main()
