#!/usr/bin/env python
"""Pretrain a timm backbone with RegionCL or its base method.

    python scripts/pretrain.py                                  # RegionCL-M on the built-in sample set (CPU, minutes)
    accelerate launch scripts/pretrain.py --config regioncl_m_r50 --data hf:ILSVRC/imagenet-1k
    python scripts/pretrain.py --output-dir runs/x --resume     # continue from the latest checkpoint

Every field of the configuration (regioncl/config.py) is an option; those given override
the recipe, which overrides the defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from regioncl.train.config import add_config_arguments, make_config  # noqa: E402
from regioncl.train.trainer import pretrain  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="recipe: a YAML file or a shipped name (regioncl_m_r50, mocov2_r50, ...)")
    add_config_arguments(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = vars(parse_args(argv))
    cfg = make_config(args.pop("config"), args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = pretrain(cfg)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
