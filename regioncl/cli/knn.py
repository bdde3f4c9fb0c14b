"""kNN top-1 (k = 200, cosine votes at temperature 0.07; SPEC §10) of a frozen encoder.

    regioncl knn runs/default                                    # the sample set's train → val
    regioncl knn local-dir:exported --bank_data /data/train --val_data /data/val
    regioncl knn hf-hub:ORG/regioncl_m_r50 --bank_data hf:ILSVRC/imagenet-1k:train \\
        --val_data hf:ILSVRC/imagenet-1k:validation

ENCODER is a run folder, a checkpoint folder, an export folder, a weights file, or a timm
`local-dir:`/`hf-hub:` name. The bank (labelled) and the queries (labelled, held out from the
bank) are given together, or neither for the built-in sample set. Images are scored at the size
the encoder was trained at unless --image_size says otherwise.
"""

from __future__ import annotations

import json

from .common import parser


def main(argv: list[str] | None = None, prog: str | None = None) -> float | None:
    p = parser(__doc__, prog)
    p.add_argument("encoder")
    p.add_argument("--bank_data", help='labelled bank: "sample", a folder, or hf:ID[:SPLIT] (default: the sample set)')
    p.add_argument(
        "--val_data",
        help="labelled queries, other images than the bank's (default: the sample set's "
        "val split; required with --bank_data)",
    )
    p.add_argument("--bank_split", default="train")
    p.add_argument("--val_split", default="val")
    p.add_argument("--image_size", type=int, help="input size (default: the size the encoder was trained at, else 224)")
    p.add_argument("--crop_pct", type=float, help="eval crop (default: 1.0 for the sample set, else 0.875)")
    p.add_argument("--k", type=int, default=200, help="neighbours that vote (at most the bank's images)")
    p.add_argument("--temperature", type=float, default=0.07)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--device", help="default: cuda where there is one, else cpu")
    a = p.parse_args(argv)
    if (a.bank_data is None) != (a.val_data is None):
        given, missing = ("--bank_data", "--val_data") if a.val_data is None else ("--val_data", "--bank_data")
        p.error(
            f"{given} without {missing}: give both (labelled images for the bank, and other labelled images "
            "to score), or neither for the built-in sample set"
        )
    bank_spec, val_spec = a.bank_data or "sample", a.val_data or "sample"
    from ..data.sources import num_classes, same_images

    if same_images(bank_spec, a.bank_split, val_spec, a.val_split):
        p.error(
            f"the queries ({val_spec}, split {a.val_split}) are images of the bank ({bank_spec}, split "
            f"{a.bank_split}): each would find itself; give held-out images to --val_data"
        )
    if a.k < 1:
        p.error(f"--k must be at least 1, got {a.k}")

    import torch

    from ..data import build_source, eval_transform
    from ..eval.features import load_eval_encoder, trained_image_size
    from ..eval.knn import check_k, knn_evaluate

    size = a.image_size or trained_image_size(a.encoder) or 224
    bank = build_source(bank_spec, a.bank_split, image_size=size)
    val = build_source(val_spec, a.val_split, image_size=size)
    for name, spec, source in (("bank", bank_spec, bank), ("val", val_spec, val)):
        if num_classes(source) == 0:
            p.error(f"the {name} data {spec!r} has no labels: kNN needs class subfolders (or a label column) in both")
    check_k(a.k, len(bank), "--k")
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = load_eval_encoder(a.encoder).to(device).eval()
    crop = a.crop_pct or (1.0 if bank_spec == "sample" else 0.875)
    scored: dict[str, int] = {}
    top1 = knn_evaluate(
        encoder,
        bank,
        val,
        eval_transform(size, crop_pct=crop),
        device,
        k=a.k,
        temperature=a.temperature,
        batch_size=a.batch_size,
        num_workers=a.num_workers,
        counts=scored,
    )
    if top1 is None:  # a dataset whose label column holds -1 for some images
        p.error("kNN needs a label for every image of the bank and the val data")
    print(
        json.dumps(
            {
                "encoder": a.encoder,
                "knn_top1": top1,
                "k": a.k,
                "image_size": size,
                "bank": bank_spec,
                "bank_images": scored["bank"],  # those decoded: unreadable files are left out
                "val": val_spec,
                "val_images": scored["val"],
            }
        )
    )
    return top1
