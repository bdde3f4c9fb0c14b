#!/usr/bin/env python
"""Convert a pretrained timm ResNet encoder into a detectron2 ``.pkl`` (MoCo's mapping).

    python scripts/convert_detectron2.py OUTPUT_DIR/encoder.safetensors regioncl_r50.pkl

ENCODER_PATH: encoder.safetensors / model.safetensors, a folder holding one, or a .pth/.pt/.bin
state dict (read with weights_only=True). Then fine-tune with
regioncl/export/configs/detectron2/mask_rcnn_R_50_FPN_2x_regioncl.yaml (MODEL.WEIGHTS).
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regioncl.files import atomic_write  # noqa: E402
from regioncl.export.transfer import load_and_convert, detectron2_checkpoint, timm_to_detectron2  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("encoder", type=Path, help="timm encoder weights (file or folder)")
    p.add_argument("out", type=Path, help="detectron2 checkpoint to write (.pkl)")
    a = p.parse_args(argv)

    state, mapped = load_and_convert(p, a.encoder, timm_to_detectron2)
    ckpt = detectron2_checkpoint(mapped)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            pickle.dump(ckpt, f, protocol=4)

    atomic_write(a.out, write)  # an interrupted run leaves no truncated .pkl behind

    # Learnable tensors only: BN running statistics are buffers, not parameters.
    n_params = sum(v.size for k, v in ckpt["model"].items() if not k.endswith(("running_mean", "running_var")))
    dropped = len(state) - len(mapped)
    print(
        f"{a.encoder} -> {a.out}: {len(mapped)} tensors mapped to detectron2 names "
        f"({dropped} num_batches_tracked dropped), {n_params:,} parameters"
    )


if __name__ == "__main__":
    main()
