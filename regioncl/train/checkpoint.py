"""Atomic, verified, resumable checkpoints on top of ``accelerator.save_state`` (layout: :mod:`regioncl.files`).

A checkpoint is written into a hidden temporary folder and renamed into place
only once every process has finished writing and ``trainer_state.json`` is on
disk, so a kill at any moment leaves the previous checkpoint intact and never
exposes a half-written one. Only folders holding ``trainer_state.json`` count.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from ..errors import UserError, UserFileNotFoundError
from ..files import PREFIX, STATE_FILE, checkpoint_dir, checkpoint_problems, file_manifest, list_checkpoints, usual_mode
from .config import PretrainConfig, dotted, may_change_on_resume

logger = logging.getLogger("regioncl")


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
    # The weights the run started from (model.init, resolved: timm's tag, a path), or None: a random init.
    init_source: str | None = None

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> RunState:
        return cls(**{k: saved[k] for k in vars(cls()) if k in saved})


def check_resumable(cfg: PretrainConfig, saved: dict[str, Any], path: Path) -> None:
    """Refuse to resume with settings that shape the computation otherwise than the checkpoint's
    (fields whose metadata says they may change are free)."""
    mine = cfg.leaves()
    if not isinstance(saved.get("model"), dict):  # sections have a model section; a flat one a model name or none
        raise UserError(
            f"checkpoint {path} was written by an earlier version of regioncl (a flat configuration); "
            "resume it with that version, or start the run again"
        )
    flat = dotted(saved)
    free = may_change_on_resume()
    differ = sorted(k for k in mine if k not in free and flat.get(k, mine[k]) != mine[k])
    if differ:
        detail = ", ".join(f"{k}={flat[k]!r} (now {mine[k]!r})" for k in differ)
        raise UserError(f"checkpoint {path} was trained with {detail}; resume with the same settings")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read: the message says which file and what to do."""


def resolve_resume(resume: str, output_dir: str | os.PathLike) -> Path:
    """The checkpoint to resume from, verified against the file list it was written with.

    Args:
        resume: ``"latest"`` (the newest in ``output_dir`` that verifies; each newer one that
            does not is skipped with a warning naming what is wrong), a checkpoint folder (it must
            verify), or a run's output folder (its newest that verifies).

    Raises:
        FileNotFoundError: when there is no checkpoint at all.
        CheckpointError: a checkpoint folder given explicitly that does not verify, or none that does.
    """
    where = Path(output_dir) if resume == "latest" else Path(resume)
    if (where / STATE_FILE).is_file():
        problems = checkpoint_problems(where)
        if problems:
            raise CheckpointError(
                f"checkpoint {where} is damaged: {'; '.join(problems)}. Resume from another one "
                f"(--run.resume latest takes the newest that verifies)"
            )
        return where
    found = list_checkpoints(where)
    if not found:
        raise UserFileNotFoundError(
            f"--run.resume {resume}: no complete checkpoint (a {PREFIX}* folder with {STATE_FILE}) "
            f"under {checkpoint_dir(where)} or in {where}"
        )
    for candidate in reversed(found):
        problems = checkpoint_problems(candidate)
        if not problems:
            return candidate
        logger.warning("skipping damaged checkpoint %s: %s", candidate, "; ".join(problems))
    raise CheckpointError(
        f"no checkpoint under {checkpoint_dir(where)} verifies (all {len(found)} are damaged; see the warnings above)"
    )


def _fsync_tree(path: Path) -> None:
    for file in sorted(path.rglob("*")):
        if file.is_file():
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())


def _all_ok(accelerator: Accelerator, ok: bool) -> bool:
    """Whether ``ok`` holds on every process (a collective: every process must call it)."""
    if accelerator.num_processes == 1:
        return ok
    import torch

    flag = torch.tensor([0.0 if ok else 1.0], device=accelerator.device)
    return accelerator.reduce(flag, reduction="sum").item() == 0.0


def save_checkpoint(
    accelerator: Accelerator, output_dir: str | os.PathLike, state: dict[str, Any], keep: int
) -> Path | None:
    """Save model, optimizer and RNG state of every process plus ``state`` atomically.

    The files are written into a hidden folder; the main process then lists them with their
    sizes and checksums in ``trainer_state.json`` (written last), syncs them to disk and renames
    the folder into place. Only then are checkpoints beyond the ``keep`` newest deleted, so the
    newest verified one is never deleted for one that is not complete. Must be called on every
    process; returns the final path (on the main process).

    Raises:
        CheckpointError: on every process, when any process could not write its part (a full
            disk, a read-only folder...): the hidden folder is removed, earlier checkpoints are
            left as they were.
    """
    root = checkpoint_dir(output_dir)
    name = f"{PREFIX}{state['step']:08d}"
    tmp, final = root / f".tmp-{name}", root / name
    error: Exception | None = None

    def step(fn: Any, main_only: bool = False) -> None:
        nonlocal error
        if error is None and (accelerator.is_main_process or not main_only):
            try:
                fn()
            except Exception as e:  # a full disk is an OSError from os, a RuntimeError from torch.save,
                error = e  # a SafetensorError from safetensors: whatever it is, the save failed
        if not _all_ok(accelerator, error is None):
            if accelerator.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            previous = list_checkpoints(output_dir)
            why = f"{type(error).__name__}: {error}" if error else "another process failed to write its part"
            kept = f"the newest checkpoint, {previous[-1]}, is" if previous else "earlier checkpoints are"
            raise CheckpointError(
                f"could not write checkpoint {final} ({why}). Nothing of it was kept; {kept} intact. Free space "
                "under the output folder (or point run.output_dir elsewhere) and resume with --run.resume latest"
            )

    def prepare() -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)

    def finish() -> None:
        for file in tmp.rglob("*"):  # what Accelerate wrote (safetensors' 0600 files among them)
            if file.is_file():
                usual_mode(file)
        (tmp / STATE_FILE).write_text(json.dumps({**state, "files": file_manifest(tmp)}, indent=2, sort_keys=True))
        _fsync_tree(tmp)
        if final.exists():  # re-saving the same step after a resume: swap, then drop the old copy
            old = root / f".old-{name}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)

    step(prepare, main_only=True)
    accelerator.wait_for_everyone()
    step(lambda: accelerator.save_state(str(tmp)))
    step(finish, main_only=True)
    if accelerator.is_main_process and keep > 0:
        # Older than the one just written: never the one just written, nor the newer (damaged)
        # ones a resume skipped, which the run overwrites when it gets there again.
        older = [p for p in list_checkpoints(output_dir) if int(p.name[len(PREFIX) :]) <= state["step"]]
        for stale in older[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final if accelerator.is_main_process else None
