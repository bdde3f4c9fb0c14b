#!/usr/bin/env python
"""Linear probe of a frozen encoder (MoCo's protocol by default; --optimizer lars for SimSiam's).

    python scripts/linear_probe.py runs/default --epochs 10 --lr 1 --image_size 32          # on the sample set
    python scripts/linear_probe.py hf-hub:ORG/regioncl_m_r50 --train_data /data/train --val_data /data/val
    accelerate launch scripts/linear_probe.py runs/x --train_data /data/train --val_data /data/val   # data-parallel

ENCODER is a run folder, a checkpoint folder, a weights file, or a timm `local-dir:`/`hf-hub:` name.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regioncl.eval.cli import run_labelled_evaluation  # noqa: E402
from regioncl.eval.features import load_eval_encoder  # noqa: E402
from regioncl.eval.linear import ProbeConfig, linear_probe  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    return run_labelled_evaluation(
        __doc__, ProbeConfig,
        lambda spec, train, val, n, cfg, acc: linear_probe(load_eval_encoder(spec), train, val, n, cfg, acc), argv)


if __name__ == "__main__":
    main()
