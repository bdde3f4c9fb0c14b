"""Linear probe of a frozen encoder (MoCo's protocol by default; --optimizer lars for SimSiam's).

    regioncl probe runs/default --epochs 10 --lr 1                          # on the sample set
    regioncl probe hf-hub:ORG/regioncl_m_r50 --train_data /data/train --val_data /data/val
    accelerate launch -m regioncl probe runs/x --train_data /data/train --val_data /data/val   # data-parallel

ENCODER is a run folder, a checkpoint folder, an export folder, a weights file, or a timm
`local-dir:`/`hf-hub:` name. Images are seen at the size the encoder was trained at unless
--image_size says otherwise.
"""

from __future__ import annotations

from ..eval.configs import ProbeConfig
from .evaluation import run_labelled_evaluation


def _probe(spec: str, train: object, val: object, n: int, cfg: ProbeConfig, acc: object) -> dict:
    from ..eval.features import load_eval_encoder
    from ..eval.linear import linear_probe

    return linear_probe(load_eval_encoder(spec), train, val, n, cfg, acc)


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    return run_labelled_evaluation(__doc__, ProbeConfig, _probe, argv, prog, protocol="linear")
