"""The command line of the evaluations on labelled data (probe, fine-tune): one implementation, thin scripts.

The options are the fields of the evaluation's configuration dataclass (``--lr``, ``--image_size``,
``--augment false``), parsed and type-checked by jsonargparse as the pretraining configuration is,
plus ENCODER and the labelled data.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

from ..data import build_source
from ..data.sources import num_classes as num_classes_of
from ..distributed import make_accelerator
from ..errors import UserError


def evaluation_parser(doc: str, config_cls: type, prog: str | None = None) -> Any:
    """ENCODER, ``--train_data``/``--val_data`` (and their splits, ``--num_classes``), and one option
    per field of ``config_cls`` with its help text."""
    from jsonargparse import ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    p = ArgumentParser(prog=prog, description=doc, exit_on_error=False)
    p.add_argument("encoder", help="a run/checkpoint folder, a weights file, or a timm local-dir:/hf-hub: name")
    p.add_argument("--train_data", default="sample", help='"sample", a folder, or hf:ID[:SPLIT]')
    p.add_argument("--val_data", default="sample")
    p.add_argument("--train_split", default="train")
    p.add_argument("--val_split", default="val")
    p.add_argument("--num_classes", type=int, default=None, help="default: the largest label + 1 of the training data")
    p.add_class_arguments(config_cls, None, as_group=True)
    return p


def run_labelled_evaluation(doc: str, config_cls: type, evaluate: Callable[..., dict], argv: list[str] | None,
                            prog: str | None = None) -> dict:
    """The whole ``main`` of an evaluation script on labelled data (probe, fine-tune): ENCODER,
    data and ``config_cls`` options, then ``evaluate(encoder_spec, train, val, num_classes, cfg,
    accelerator)`` on Accelerate; the main process prints the result as one JSON line."""
    p = evaluation_parser(doc, config_cls, prog)
    try:
        a = p.parse_args(argv)
    except Exception as e:  # jsonargparse's ArgumentError: a bad option or value
        raise UserError(f"{e} (see {p.prog} --help)") from None
    cfg = config_cls(**{f.name: a[f.name] for f in dataclasses.fields(config_cls)})
    train = build_source(a.train_data, a.train_split, image_size=cfg.image_size)
    val = build_source(a.val_data, a.val_split, image_size=cfg.image_size)
    num_classes = a.num_classes or num_classes_of(train)  # from the source's metadata: no image decoded
    if num_classes <= 0:
        raise UserError(f"the training data {a.train_data!r} has no labels")
    acc = make_accelerator()
    result = evaluate(a.encoder, train, val, num_classes, cfg, acc)
    out = {"encoder": a.encoder, "top1": result["top1"], "top5": result["top5"], "epochs": cfg.epochs}
    if acc.is_main_process:
        print(json.dumps(out))
    acc.end_training()  # every process tears the group down together
    return out
