"""kNN top-1 (k = 200, cosine votes at temperature 0.07; SPEC §10) of a frozen encoder.

    regioncl knn runs/default                                    # the sample set's train → val
    regioncl knn local-dir:exported --bank_data /data/train --val_data /data/val --image_size 224
    regioncl knn hf-hub:ORG/regioncl_m_r50 --bank_data hf:ILSVRC/imagenet-1k:train \\
        --val_data hf:ILSVRC/imagenet-1k:validation --image_size 224

ENCODER is a run folder, a checkpoint folder, a weights file, or a timm `local-dir:`/`hf-hub:` name.
"""

from __future__ import annotations

import json

import torch

from ..data import build_source, eval_transform
from ..eval.knn import knn_evaluate
from ..eval.features import load_eval_encoder
from .common import parser


def main(argv: list[str] | None = None, prog: str | None = None) -> float | None:
    p = parser(__doc__, prog)
    p.add_argument("encoder")
    p.add_argument("--bank_data", default="sample", help='labelled bank: "sample", a folder, or hf:ID[:SPLIT]')
    p.add_argument("--val_data", default="sample", help="labelled queries (default: the sample set's val split)")
    p.add_argument("--bank_split", default="train")
    p.add_argument("--val_split", default="val")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--crop_pct", type=float, default=None, help="eval crop (default: 1.0 for the sample set, else 0.875)")
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.07)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    encoder = load_eval_encoder(a.encoder).to(device).eval()
    crop = a.crop_pct or (1.0 if a.bank_data == "sample" else 0.875)
    bank = build_source(a.bank_data, a.bank_split, image_size=a.image_size)
    val = build_source(a.val_data, a.val_split, image_size=a.image_size)
    top1 = knn_evaluate(encoder, bank, val, eval_transform(a.image_size, crop_pct=crop), device, k=a.k,
                        temperature=a.temperature, batch_size=a.batch_size, num_workers=a.num_workers)
    if top1 is None:
        p.error("kNN needs labels in both the bank and the val data")
    print(json.dumps({"encoder": a.encoder, "knn_top1": top1, "k": a.k, "bank": a.bank_data, "val": a.val_data}))
    return top1
