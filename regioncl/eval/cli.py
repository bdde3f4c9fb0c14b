"""Command-line pieces shared by the evaluation scripts (thin scripts, one implementation)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

from ..data import build_source


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """``--field-name`` for every field of the dataclass ``cls``, defaulting to its default."""
    defaults = cls()
    for f in dataclasses.fields(cls):
        flag, value = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        elif isinstance(value, list):
            parser.add_argument(flag, type=type(value[0]) if value else str, nargs="+", default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value)


def dataclass_from_args(cls: type, args: argparse.Namespace) -> Any:
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def add_labelled_data_arguments(parser: argparse.ArgumentParser) -> None:
    """ENCODER plus the labelled training and validation data of a probe or a fine-tune."""
    parser.add_argument("encoder", help="a run/checkpoint folder, a weights file, or a timm local-dir:/hf-hub: name")
    parser.add_argument("--train-data", default="sample", help='"sample", a folder, or hf:ID[:SPLIT]')
    parser.add_argument("--val-data", default="sample")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="val")
    parser.add_argument("--num-classes", type=int, help="default: the largest label + 1 of the training data")


def labelled_sources(parser: argparse.ArgumentParser, args: argparse.Namespace, image_size: int) -> tuple[Any, Any, int]:
    """The training and validation sources and the number of classes (an argparse error without labels)."""
    train = build_source(args.train_data, args.train_split, image_size=image_size)
    val = build_source(args.val_data, args.val_split, image_size=image_size)
    num_classes = args.num_classes or max(train[i][1] for i in range(len(train))) + 1
    if num_classes <= 0:
        parser.error("the training data has no labels")
    return train, val, num_classes


def run_labelled_evaluation(doc: str, config_cls: type, evaluate: Callable[..., dict], argv: list[str] | None) -> dict:
    """The whole ``main`` of an evaluation script on labelled data (probe, fine-tune): ENCODER,
    data and ``config_cls`` options, then ``evaluate(encoder_spec, train, val, num_classes, cfg,
    accelerator)`` on Accelerate; the main process prints the result as one JSON line."""
    import json

    from ..distributed import make_accelerator

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_labelled_data_arguments(p)
    add_dataclass_arguments(p, config_cls)
    a = p.parse_args(argv)
    cfg = dataclass_from_args(config_cls, a)
    train, val, num_classes = labelled_sources(p, a, cfg.image_size)
    acc = make_accelerator()
    result = evaluate(a.encoder, train, val, num_classes, cfg, acc)
    out = {"encoder": a.encoder, "top1": result["top1"], "top5": result["top5"], "epochs": cfg.epochs}
    if acc.is_main_process:
        print(json.dumps(out))
    acc.end_training()  # every process tears the group down together
    return out
