"""Pretrain a timm backbone with RegionCL or its base method.

    regioncl pretrain                                       # the sample recipe: RegionCL-M on the built-in set (CPU, minutes)
    regioncl pretrain --optim.epochs 2 --model.method mocov2
    accelerate launch -m regioncl pretrain --config regioncl_m_r50    # the paper's recipe, ImageNet streamed from the Hub
    regioncl pretrain --run.output_dir runs/x --run.resume latest   # continue from the newest checkpoint
    regioncl pretrain --config mocov2_r50 --print_recipe    # the resolved configuration, as a recipe
    regioncl pretrain --data.source /data/my_images --model.backbone resnet18 --model.backbone_args '{}' \\
        --data.image_size 96 --model.init timm --run.output_dir runs/mine   # your images, from timm's weights

Every field of the configuration (regioncl/train/config.py) is an option named by its section;
those given override the recipe, which overrides the defaults (the paper's).

Exit status: 0 done; 2 refused before anything ran or was written (a one-line error); 75 stopped
by a signal (SIGTERM, SIGUSR1, SIGINT) after saving a checkpoint at the step reached; 65 stopped at
a non-finite loss (no checkpoint from those weights); 74 a checkpoint could not be written; 66
too many images could not be read (after saving a checkpoint at the step reached).
"""

from __future__ import annotations

import json
import logging
import os

from ..train.config import parse_config


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    cfg = parse_config(argv, prog=prog, description=__doc__)
    from ..train.trainer import pretrain

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = pretrain(cfg)  # a stop on purpose (RunStopped) leaves with its exit status, see regioncl.cli
    if int(os.environ.get("RANK", "0")) == 0:  # one result, not one per process (a study keeps it as JSON)
        print(json.dumps(result, indent=2))
    return result
