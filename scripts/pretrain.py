#!/usr/bin/env python
"""Pretrain a timm backbone with RegionCL or its base method.

    python scripts/pretrain.py                                  # RegionCL-M on the built-in sample set (CPU, minutes)
    accelerate launch scripts/pretrain.py --config regioncl_m_r50 --data hf:ILSVRC/imagenet-1k --streaming
    python scripts/pretrain.py --output-dir runs/x --resume     # continue from the latest checkpoint
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from regioncl.config import make_config  # noqa: E402
from regioncl.methods import METHODS  # noqa: E402
from regioncl.trainer import pretrain  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="recipe: a YAML file or a shipped name (regioncl_m_r50, mocov2_r50, ...)")
    p.add_argument("--method", choices=sorted(METHODS))
    p.add_argument("--backbone", help="any timm CNN name, or resnet50w2 / resnet50w4")
    p.add_argument("--backbone-args", type=json.loads, help='extra timm.create_model kwargs as JSON, e.g. \'{"output_stride": 8}\'')
    p.add_argument("--data", help='"sample" (default), a folder of images, or hf:ID_OR_PATH[:SPLIT]')
    p.add_argument("--streaming", action="store_true", default=None, help="stream an hf: dataset")
    p.add_argument("--image-column")
    p.add_argument("--label-column")
    p.add_argument("--image-size", type=int, help="pixels, a multiple of the backbone's output stride")
    p.add_argument("--batch-size", type=int, help="global batch (all processes)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int, help="cap the total number of steps (the schedule follows)")
    p.add_argument("--stop-at-step", type=int, help="stop early without changing the schedule")
    p.add_argument("--lr", type=float, help="learning rate for the global batch")
    p.add_argument("--queue-size", type=int)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--max-bad-fraction", type=float)
    p.add_argument("--output-dir")
    p.add_argument("--resume", nargs="?", const="latest", help="resume from PATH, or from the latest checkpoint in --output-dir")
    p.add_argument("--seed", type=int)
    p.add_argument("--checkpoint-every", type=int, help="steps")
    p.add_argument("--log-every", type=int, help="steps")
    p.add_argument("--no-knn", dest="knn", action="store_false", default=None, help="skip the kNN evaluation")
    p.add_argument("--log-with", nargs="+", help="Accelerate trackers, e.g. tensorboard wandb")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = vars(parse_args(argv))
    recipe = args.pop("config")
    cfg = make_config(recipe, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = pretrain(cfg)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
