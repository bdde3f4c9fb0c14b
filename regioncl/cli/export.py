"""Export a pretraining checkpoint's online encoder for plain timm (model.safetensors + config.json).

    regioncl export runs/default exported/           # newest checkpoint of a run
    regioncl export runs/x/checkpoints/step_00001000 out/ --recipe regioncl_m_r50
    python -c "import timm; timm.create_model('local-dir:out', pretrained=True)"

OUT_DIR must be new or empty (--overwrite replaces an earlier export's files). Its config.json
records what the run trained: method, data (never a local path), steps and epochs trained, input
size, batch, lr, precision, and the weights it started from.
"""

from __future__ import annotations

import json

from .common import parser


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = parser(__doc__, prog)
    p.add_argument("checkpoint", help="a run folder, a checkpoint folder, or a .safetensors/.bin/.pth file")
    p.add_argument("out_dir")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that holds files")
    p.add_argument("--backbone", help="default: the training config's")
    p.add_argument("--backbone-args", type=json.loads, help="JSON; default: the training config's")
    p.add_argument("--image-size", type=int, help="pretraining input size for pretrained_cfg (default: the run's)")
    p.add_argument("--recipe", help="recipe name recorded in the metadata and tag")
    p.add_argument("--metrics", type=json.loads, default=None, help="JSON, e.g. '{\"imagenet_linear_top1\": 69.4}'")
    a = p.parse_args(argv)
    from ..export.hub import export

    meta = {k: v for k, v in (("recipe", a.recipe), ("metrics", a.metrics)) if v is not None}
    try:
        out = export(
            a.checkpoint,
            a.out_dir,
            backbone=a.backbone,
            backbone_args=a.backbone_args,
            image_size=a.image_size,
            metadata=meta,
            overwrite=a.overwrite,
        )
    except (OSError, ValueError) as e:  # a missing, damaged or untrusted file: a message, not a trace
        p.error(str(e))
    print(f"exported to {out}: " + ", ".join(sorted(f.name for f in out.iterdir())))
