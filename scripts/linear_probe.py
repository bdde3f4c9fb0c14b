#!/usr/bin/env python
"""Linear probe of a frozen encoder (MoCo's protocol by default; --optimizer lars for SimSiam's).

    python scripts/linear_probe.py runs/default --epochs 10 --lr 1 --image-size 32          # on the sample set
    python scripts/linear_probe.py hf-hub:ORG/regioncl_m_r50 --train-data /data/train --val-data /data/val
    accelerate launch scripts/linear_probe.py runs/x --train-data /data/train --val-data /data/val   # data-parallel

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
from regioncl.knn import load_eval_encoder  # noqa: E402
from regioncl.linear import ProbeConfig, linear_probe  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_labelled_data_arguments(p)
    add_dataclass_arguments(p, ProbeConfig)
    a = p.parse_args(argv)
    cfg = dataclass_from_args(ProbeConfig, a)
    train, val, num_classes = labelled_sources(p, a, cfg.image_size)
    acc = make_accelerator()
    result = linear_probe(load_eval_encoder(a.encoder), train, val, num_classes, cfg, acc)
    out = {"encoder": a.encoder, "top1": result["top1"], "top5": result["top5"], "epochs": cfg.epochs}
    if acc.is_main_process:
        print(json.dumps(out))
    acc.end_training()  # every process tears the group down together
    return out


if __name__ == "__main__":
    main()
