"""The ``regioncl`` command: one entry point, a subcommand per task.

    regioncl pretrain --config regioncl_m_r50          # also: accelerate launch -m regioncl pretrain ...
    regioncl probe runs/mine --train_data /data/train --val_data /data/val
    regioncl --help                                    # every subcommand

Errors in what was asked for (an option, a size, a file, a dataset, a checkpoint:
:class:`~regioncl.errors.UserError`) are one line, ``regioncl: error: ...``, exit status 2, no
traceback; ``--debug`` (anywhere on the line) or ``REGIONCL_DEBUG=1`` shows it. A run stopped on
purpose (a preemption signal, a non-finite loss, a full disk) prints why and exits with its
documented status. Anything else keeps its traceback: it is a bug to report.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from ..errors import RunStopped, UserError

#: subcommand → (module under regioncl.cli, what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("pretrain", "pretrain an encoder with RegionCL-M/D/S or their base method"),
    "knn": ("knn", "kNN top-1 of a frozen encoder"),
    "probe": ("probe", "linear probe of a frozen encoder"),
    "finetune": ("finetune", "fine-tune an encoder end to end with a new classifier"),
    "embed": ("embed", "write the pooled, L2-normalised features of every image as Parquet"),
    "export": ("export", "export an encoder as a plain timm model (safetensors + config)"),
    "push": ("push", "publish an encoder to the Hugging Face Hub with its card"),
    "convert": ("convert", "convert a ResNet encoder for detectron2 or mmdet/mmpose"),
    "plot": ("plot", "plot runs (losses, kNN, composites) or an embedding map"),
    "study": ("study", "run a study: many runs, their probes, the table and the plots"),
    "benchmark": ("benchmark", "time the training steps, the data pipeline, lightly (from a clone)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: regioncl COMMAND [options]   (regioncl COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", "--debug (or REGIONCL_DEBUG=1) shows the traceback of an error; -V, --version the version."]
    return "\n".join(lines)


def run(command: str, argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (0, or what an error or a stop calls for)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("REGIONCL_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    module = importlib.import_module(f"{__name__}.{COMMANDS[command][0]}")
    try:
        module.main(argv, prog=f"regioncl {command}")
    except UserError as e:
        if debug:
            raise
        print(f"regioncl: error: {e}", file=sys.stderr)
        return 2
    except RunStopped as e:
        print(f"regioncl: {e}", file=sys.stderr)
        return e.exit_code
    return 0


def main(argv: list[str] | None = None) -> Any:
    """``regioncl COMMAND ...``; exits with the command's status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        sys.exit(0 if argv else 2)
    if argv[0] in ("-V", "--version"):
        from .. import __version__

        print(f"regioncl {__version__}")
        sys.exit(0)
    if argv[0] not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        print(f"regioncl: error: unknown command {argv[0]!r}; {hint}commands: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(argv[0], argv[1:]))
