"""Fine-tune a pretrained encoder end to end with a new classifier (timm optimizer/scheduler/mixup, Accelerate).

    regioncl finetune runs/default --epochs 5 --lr 0.05 --image_size 32 --warmup_epochs 1
    accelerate launch -m regioncl finetune hf-hub:ORG/regioncl_m_r50 --train_data /data/train --val_data /data/val \\
        --opt adamw --lr 1e-3 --weight_decay 0.05 --mixup 0.8 --cutmix 1.0

ENCODER is a run folder, a checkpoint folder, a weights file, or a timm `local-dir:`/`hf-hub:` name.
"""

from __future__ import annotations

from ..eval.finetune import FinetuneConfig, finetune, load_finetune_model
from .evaluation import run_labelled_evaluation


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    return run_labelled_evaluation(
        __doc__, FinetuneConfig,
        lambda spec, train, val, n, cfg, acc: finetune(load_finetune_model(spec, n), train, val, n, cfg, acc), argv, prog)
