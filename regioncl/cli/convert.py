"""Convert a pretrained timm ResNet encoder for detection and pose frameworks.

    regioncl convert detectron2 OUTPUT_DIR/encoder.safetensors regioncl_r50.pkl   # MoCo's key mapping
    regioncl convert mmdet OUTPUT_DIR/encoder.safetensors regioncl_r50_mmdet.pth  # backbone.-prefixed, mmdet/mmpose

ENCODER: encoder.safetensors / model.safetensors, a folder holding one, or a .pth/.pt/.bin state
dict (read with weights_only=True). detectron2: fine-tune with
regioncl/export/configs/detectron2/mask_rcnn_R_50_FPN_2x_regioncl.yaml (MODEL.WEIGHTS). mmdet and
mmpose: the keys are ``backbone.<timm key>``; load them with
``init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=OUT)`` as the configs in
regioncl/export/configs/mmdet and .../mmpose do.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from ..files import atomic_write
from .common import parser


def to_detectron2(p, encoder: Path, out: Path) -> None:
    from ..export.transfer import detectron2_checkpoint, load_and_convert, timm_to_detectron2

    state, mapped = load_and_convert(p, encoder, timm_to_detectron2)
    ckpt = detectron2_checkpoint(mapped)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            pickle.dump(ckpt, f, protocol=4)

    atomic_write(out, write)  # an interrupted run leaves no truncated .pkl behind
    # Learnable tensors only: BN running statistics are buffers, not parameters.
    n_params = sum(v.size for k, v in ckpt["model"].items() if not k.endswith(("running_mean", "running_var")))
    dropped = len(state) - len(mapped)
    print(
        f"{encoder} -> {out}: {len(mapped)} tensors mapped to detectron2 names "
        f"({dropped} num_batches_tracked dropped), {n_params:,} parameters"
    )


def to_mmdet(p, encoder: Path, out: Path) -> None:
    import torch

    from ..export.transfer import load_and_convert, timm_to_mmdet

    state, converted = load_and_convert(p, encoder, timm_to_mmdet)
    # Plain str/int values only, so the file also loads under torch.load(weights_only=True).
    meta = {
        "converter": "regioncl convert mmdet",
        "source": str(encoder),
        "key_prefix": "backbone.",
        "num_tensors": len(converted),
    }
    # An interrupted run leaves no truncated file behind.
    atomic_write(out, lambda tmp: torch.save({"state_dict": converted, "meta": meta}, tmp))
    # Learnable tensors only: BN running statistics and step counters are buffers.
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    n_params = sum(v.numel() for k, v in converted.items() if not k.endswith(buffers))
    print(f"{encoder} -> {out}: {len(converted)} tensors as backbone.*, {n_params:,} parameters")


TARGETS = {"detectron2": to_detectron2, "mmdet": to_mmdet}


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = parser(__doc__, prog)
    p.add_argument("target", choices=sorted(TARGETS), help="the framework to convert for (mmdet also serves mmpose)")
    p.add_argument("encoder", type=Path, help="timm encoder weights (file or folder)")
    p.add_argument("out", type=Path, help="the checkpoint to write (.pkl for detectron2, .pth for mmdet)")
    a = p.parse_args(argv)
    TARGETS[a.target](p, a.encoder, a.out)
