#!/usr/bin/env python
"""Linear probe of a frozen encoder (MoCo's protocol by default; --optimizer lars for SimSiam's).

    python scripts/linear_probe.py runs/default --epochs 10 --lr 1 --image-size 32          # on the sample set
    python scripts/linear_probe.py hf-hub:ORG/regioncl_m_r50 --train-data /data/train --val-data /data/val

ENCODER is a run folder, a checkpoint folder, a weights file, or a timm `local-dir:`/`hf-hub:` name.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from regioncl.data import build_source  # noqa: E402
from regioncl.knn import load_eval_encoder  # noqa: E402
from regioncl.linear import ProbeConfig, linear_probe  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("encoder")
    p.add_argument("--train-data", default="sample")
    p.add_argument("--val-data", default="sample")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--num-classes", type=int, help="default: the largest label + 1 of the training data")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    defaults = ProbeConfig()
    for f in dataclasses.fields(ProbeConfig):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        elif isinstance(value, list):
            p.add_argument(flag, type=int, nargs="+", default=value)
        else:
            p.add_argument(flag, type=type(value), default=value)
    a = vars(p.parse_args(argv))
    cfg = ProbeConfig(**{f.name: a[f.name] for f in dataclasses.fields(ProbeConfig)})
    size = cfg.image_size
    train = build_source(a["train_data"], a["train_split"], image_size=size)
    val = build_source(a["val_data"], a["val_split"], image_size=size)
    labels = [train[i][1] for i in range(len(train))] if a["num_classes"] is None else []
    if labels and min(labels) < 0:
        p.error("the training data has no labels")
    num_classes = a["num_classes"] or max(labels) + 1
    result = linear_probe(load_eval_encoder(a["encoder"]), train, val, num_classes, cfg, torch.device(a["device"]))
    out = {"encoder": a["encoder"], "top1": result["top1"], "top5": result["top5"], "epochs": cfg.epochs}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
