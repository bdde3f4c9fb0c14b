"""The command line of the evaluations on labelled data (probe, fine-tune): one implementation, thin scripts.

The options are the fields of the evaluation's configuration dataclass (``--lr``, ``--image_size``,
``--augment false``), parsed and type-checked by jsonargparse as the pretraining configuration is,
plus ENCODER and the labelled data.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from typing import Any

from ..errors import UserError
from ..spelling import did_you_mean, underscored


def evaluation_parser(doc: str, config_cls: type, prog: str | None = None) -> Any:
    """ENCODER, ``--train_data``/``--val_data`` (and their splits, ``--num_classes``), and one option
    per field of ``config_cls`` with its help text."""
    from ..train.config import jsonargparse_parser

    p = jsonargparse_parser(
        prog, doc, usage=f"{prog or 'regioncl'} ENCODER [--train_data DATA --val_data DATA] [--OPTION VALUE ...]"
    )
    p.add_argument(
        "encoder", help="a run, checkpoint or export folder, a weights file, or a timm local-dir:/hf-hub: name"
    )
    p.add_argument(
        "--train_data", default="sample", help='labelled training images: "sample", a folder, or hf:ID[:SPLIT]'
    )
    p.add_argument("--val_data", default="sample", help="labelled images to score, other than the training images")
    p.add_argument("--train_split", default="train")
    p.add_argument("--val_split", default="val")
    p.add_argument("--num_classes", type=int, default=None, help="default: the largest label + 1 of the training data")
    p.add_class_arguments(config_cls, None, as_group=True)
    return p


def run_labelled_evaluation(
    doc: str,
    config_cls: type,
    evaluate: Callable[..., dict],
    argv: list[str] | None,
    prog: str | None = None,
    *,
    protocol: str,
) -> dict:
    """The whole ``main`` of an evaluation script on labelled data (probe, fine-tune): ENCODER,
    data and ``config_cls`` options, then ``evaluate(encoder_spec, train, val, num_classes, cfg,
    accelerator)`` on Accelerate; the main process prints the result as one JSON line, named by
    ``protocol`` (``linear``, ``finetune``) so that ``regioncl push --metrics`` can read it."""
    p = evaluation_parser(doc, config_cls, prog)
    try:
        a = p.parse_args(underscored(sys.argv[1:] if argv is None else argv))
    except Exception as e:  # jsonargparse's ArgumentError: a bad option or value
        options = [o for action in p._actions for o in action.option_strings]
        raise UserError(f"{did_you_mean(str(e), options)} (see {p.prog} --help)") from None
    from ..data.sources import same_images

    if same_images(a.train_data, a.train_split, a.val_data, a.val_split):
        raise UserError(
            f"the val data ({a.val_data}, split {a.val_split}) is the training data ({a.train_data}, "
            f"split {a.train_split}) or a part of it: score on held-out images (--val_data)"
        )
    cfg = config_cls(**{f.name: a[f.name] for f in dataclasses.fields(config_cls)})
    from ..data import build_source
    from ..data.sources import num_classes as num_classes_of
    from ..distributed import make_accelerator
    from ..eval.features import trained_image_size

    cfg = dataclasses.replace(cfg, image_size=cfg.image_size or trained_image_size(a.encoder) or 224)
    train = build_source(a.train_data, a.train_split, image_size=cfg.image_size)
    val = build_source(a.val_data, a.val_split, image_size=cfg.image_size)
    num_classes = a.num_classes or num_classes_of(train)  # from the source's metadata: no image decoded
    if num_classes <= 0:
        raise UserError(f"the training data {a.train_data!r} has no labels (class subfolders, or a label column)")
    if num_classes_of(val) <= 0:
        raise UserError(f"the val data {a.val_data!r} has no labels (class subfolders, or a label column)")
    acc = make_accelerator()
    result = evaluate(a.encoder, train, val, num_classes, cfg, acc)
    out = {
        "encoder": a.encoder,
        "protocol": protocol,
        "top1": result["top1"],
        "top5": result["top5"],
        "epochs": cfg.epochs,
        "image_size": cfg.image_size,
        "classes": num_classes,
        "val": a.val_data,
    }
    if acc.is_main_process:
        print(json.dumps(out))
    acc.end_training()  # every process tears the group down together
    return out
