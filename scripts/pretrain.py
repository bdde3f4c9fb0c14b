#!/usr/bin/env python
"""Pretrain a timm backbone with RegionCL or its base method.

    python scripts/pretrain.py                                       # the sample recipe: RegionCL-M on the built-in set (CPU, minutes)
    python scripts/pretrain.py --optim.epochs 2 --model.method mocov2
    accelerate launch scripts/pretrain.py --config regioncl_m_r50    # the paper's recipe, ImageNet streamed from the Hub
    python scripts/pretrain.py --run.output_dir runs/x --run.resume latest   # continue from the newest checkpoint
    python scripts/pretrain.py --config mocov2_r50 --print_recipe    # the resolved configuration, as a recipe

Every field of the configuration (regioncl/train/config.py) is an option named by its section;
those given override the recipe, which overrides the defaults (the paper's).

Exit status: 0 done; 75 stopped by a signal (SIGTERM, SIGUSR1, SIGINT) after saving a checkpoint
at the step reached; 65 stopped at a non-finite loss (no checkpoint from those weights); 74 a
checkpoint could not be written (see regioncl/train/preemption.py).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from regioncl.train.config import parse_config  # noqa: E402
from regioncl.train.preemption import RunStopped  # noqa: E402
from regioncl.train.trainer import pretrain  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(argv, prog="pretrain.py", description=__doc__)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = pretrain(cfg)
    except RunStopped as stopped:  # on purpose, with a message and a documented exit status
        logging.getLogger("regioncl").error("%s", stopped)
        sys.exit(stopped.exit_code)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
