#!/usr/bin/env python
"""Convert a pretrained timm ResNet encoder into an mmdet 3.x / mmpose 1.x backbone checkpoint.

    python scripts/convert_mmdet.py OUTPUT_DIR/encoder.safetensors regioncl_r50_mmdet.pth

ENCODER_PATH: encoder.safetensors / model.safetensors, a folder holding one, or a .pth/.pt/.bin
state dict (read with weights_only=True). The keys are written as ``backbone.<timm key>``; load
them with ``init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=OUT)`` as the configs
in regioncl/export/configs/mmdet and .../mmpose do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from regioncl.files import atomic_write  # noqa: E402
from regioncl.export.transfer import load_and_convert, timm_to_mmdet  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("encoder", type=Path, help="timm encoder weights (file or folder)")
    p.add_argument("out", type=Path, help="mmdet/mmpose checkpoint to write (.pth)")
    a = p.parse_args(argv)

    state, converted = load_and_convert(p, a.encoder, timm_to_mmdet)
    # Plain str/int values only, so the file also loads under torch.load(weights_only=True).
    meta = {
        "converter": "regioncl scripts/convert_mmdet.py",
        "source": str(a.encoder),
        "key_prefix": "backbone.",
        "num_tensors": len(converted),
    }

    # An interrupted run leaves no truncated file behind.
    atomic_write(a.out, lambda tmp: torch.save({"state_dict": converted, "meta": meta}, tmp))

    # Learnable tensors only: BN running statistics and step counters are buffers.
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    n_params = sum(v.numel() for k, v in converted.items() if not k.endswith(buffers))
    print(f"{a.encoder} -> {a.out}: {len(converted)} tensors as backbone.*, {n_params:,} parameters")


if __name__ == "__main__":
    main()
