"""Linear probe of a frozen encoder (MoCo's protocol by default; --optimizer lars for SimSiam's).

    regioncl probe runs/default --epochs 10 --lr 1 --image_size 32          # on the sample set
    regioncl probe hf-hub:ORG/regioncl_m_r50 --train_data /data/train --val_data /data/val
    accelerate launch -m regioncl probe runs/x --train_data /data/train --val_data /data/val   # data-parallel

ENCODER is a run folder, a checkpoint folder, a weights file, or a timm `local-dir:`/`hf-hub:` name.
"""

from __future__ import annotations

from ..eval.features import load_eval_encoder
from ..eval.linear import ProbeConfig, linear_probe
from .evaluation import run_labelled_evaluation


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    return run_labelled_evaluation(
        __doc__, ProbeConfig,
        lambda spec, train, val, n, cfg, acc: linear_probe(load_eval_encoder(spec), train, val, n, cfg, acc), argv, prog)
