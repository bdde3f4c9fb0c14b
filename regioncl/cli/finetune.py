"""Fine-tune a pretrained encoder end to end with a new classifier (timm optimizer/scheduler/mixup, Accelerate).

    regioncl finetune runs/default --epochs 5 --lr 0.05 --warmup_epochs 1
    accelerate launch -m regioncl finetune hf-hub:ORG/regioncl_m_r50 --train_data /data/train --val_data /data/val \\
        --opt adamw --lr 1e-3 --weight_decay 0.05 --mixup 0.8 --cutmix 1.0

ENCODER is a run folder, a checkpoint folder, an export folder, a weights file, or a timm
`local-dir:`/`hf-hub:` name. Images are seen at the size the encoder was trained at unless
--image_size says otherwise.
"""

from __future__ import annotations

from ..eval.configs import FinetuneConfig
from .evaluation import run_labelled_evaluation


def _finetune(spec: str, train: object, val: object, n: int, cfg: FinetuneConfig, acc: object) -> dict:
    from ..eval.finetune import finetune, load_finetune_model

    return finetune(load_finetune_model(spec, n), train, val, n, cfg, acc)


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    return run_labelled_evaluation(__doc__, FinetuneConfig, _finetune, argv, prog, protocol="finetune")
