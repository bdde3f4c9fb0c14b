"""Atomic, resumable checkpoints on top of ``accelerator.save_state`` (layout: :mod:`regioncl.files`).

A checkpoint is written into a hidden temporary folder and renamed into place
only once every process has finished writing and ``trainer_state.json`` is on
disk, so a kill at any moment leaves the previous checkpoint intact and never
exposes a half-written one. Only folders holding ``trainer_state.json`` count.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from ..files import PREFIX, STATE_FILE, checkpoint_dir, list_checkpoints
from .config import PretrainConfig, may_change_on_resume


@dataclass
class RunState:
    """Progress saved in ``trainer_state.json``."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    step_in_epoch: int = 0  # steps done within `epoch`
    bad_images: int = 0  # unreadable images skipped so far (all processes)
    images_read: int = 0  # images decoded or attempted (all processes)
    # Streaming: positions each reader (process × worker, in rank order) has delivered in this epoch.
    stream_positions: list[int] = field(default_factory=list)

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> "RunState":
        return cls(**{k: saved[k] for k in vars(cls()) if k in saved})


def check_resumable(cfg: PretrainConfig, saved: dict[str, Any], path: Path) -> None:
    """Refuse to resume with settings that shape the computation otherwise than the checkpoint's
    (fields whose metadata says they may change are free)."""
    mine = cfg.leaves()
    flat = {f"{s}.{k}": v for s, values in saved.items() if isinstance(values, dict) for k, v in values.items()}
    if not flat:
        raise ValueError(
            f"checkpoint {path} was written by an earlier version of regioncl (a flat configuration); "
            "resume it with that version, or start the run again"
        )
    free = may_change_on_resume()
    differ = sorted(k for k in mine if k not in free and flat.get(k, mine[k]) != mine[k])
    if differ:
        detail = ", ".join(f"{k}={flat[k]!r} (now {mine[k]!r})" for k in differ)
        raise ValueError(f"checkpoint {path} was trained with {detail}; resume with the same settings")

def resolve_resume(resume: str, output_dir: str | os.PathLike) -> Path:
    """The checkpoint to resume from.

    Args:
        resume: ``"latest"`` (the newest in ``output_dir``), a checkpoint folder, or a
            run's output folder (its newest checkpoint).

    Raises:
        FileNotFoundError: when nothing resumable is there.
    """
    where = Path(output_dir) if resume == "latest" else Path(resume)
    if (where / STATE_FILE).is_file():
        return where
    found = list_checkpoints(where)
    if not found:
        raise FileNotFoundError(
            f"--resume {resume}: no complete checkpoint (a {PREFIX}* folder with {STATE_FILE}) "
            f"under {checkpoint_dir(where)} or in {where}"
        )
    return found[-1]


def _fsync_tree(path: Path) -> None:
    for file in sorted(path.rglob("*")):
        if file.is_file():
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())


def save_checkpoint(accelerator: Accelerator, output_dir: str | os.PathLike, state: dict[str, Any], keep: int) -> Path | None:
    """Save model, optimizer and RNG state of every process plus ``state`` atomically.

    Must be called on every process. Returns the final path (on the main process).
    """
    root = checkpoint_dir(output_dir)
    name = f"{PREFIX}{state['step']:08d}"
    tmp, final = root / f".tmp-{name}", root / name
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
        _fsync_tree(tmp)
        if final.exists():  # re-saving the same step after a resume: swap, then drop the old copy
            old = root / f".old-{name}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        for stale in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final if accelerator.is_main_process else None
