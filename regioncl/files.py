"""The files of a run folder, as the trainer writes them and everything else reads them.

Layout::

    OUTPUT_DIR/checkpoints/step_00000200/   model.safetensors, optimizer.bin, random_states_*.pkl,
                                            trainer_state.json (written last)
    OUTPUT_DIR/checkpoints/.tmp-step_00000400/   a save in progress (ignored)

Only checkpoint folders holding ``trainer_state.json`` count as complete. That file also lists
every other file of the checkpoint with its size and SHA-256 (``files``), so that a checkpoint
damaged after it was written (truncated, a file deleted) is recognised before anything loads it
(:func:`checkpoint_problems`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"
PREFIX = "step_"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a file beside ``path``, then rename it onto ``path``: a kill
    mid-write leaves the old file (or none), never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def _umask() -> int:
    """The process's umask, read without changing it (os.umask sets one to read it, a race with
    other threads creating files), where /proc says it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def usual_mode(path: str | os.PathLike) -> None:
    """Give a file the permissions ``open()`` would have given it (0666 less the umask). safetensors
    writes 0600 files: on a shared file system a colleague could not load the weights."""
    os.chmod(path, 0o666 & ~_umask())


def save_safetensors(tensors: dict[str, Any], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """``tensors`` written atomically to ``path`` as safetensors, readable as every other file of the run."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=metadata)
        usual_mode(tmp)

    return atomic_write(path, write)


def checkpoint_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    done = [p for p in root.glob(f"{PREFIX}*") if (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX) :]))


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(path) / STATE_FILE).read_text())


def sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_manifest(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` of every file under ``folder`` but the state file."""
    folder = Path(folder)
    return {
        str(f.relative_to(folder)): {"size": f.stat().st_size, "sha256": sha256(f)}
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.name != STATE_FILE
    }


def checkpoint_problems(folder: str | os.PathLike) -> list[str]:
    """What is wrong with a checkpoint folder, file by file (empty when it verifies): a missing,
    truncated or altered file, against the list its state file keeps. A checkpoint of an earlier
    version, without that list, is taken as it is."""
    folder = Path(folder)
    try:
        listed = read_state(folder).get("files")
    except (OSError, ValueError) as e:
        return [f"{folder / STATE_FILE}: unreadable ({e})"]
    problems = []
    for name, expected in (listed or {}).items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != expected["size"]:
            problems.append(f"{path}: {path.stat().st_size} bytes, {expected['size']} written")
        elif sha256(path) != expected["sha256"]:
            problems.append(f"{path}: its content changed since it was written (SHA-256 differs)")
    return problems


def legacy_name(dotted: str) -> str:
    """The flat name that configurations written before the sections gave a field: ``optim.lr`` →
    ``lr``, ``data.source`` → ``data``, ``knn.every`` → ``knn_every``."""
    section, name = dotted.split(".", 1)
    renamed = {"data.source": "data", "optim.momentum": "sgd_momentum", "knn.enabled": "knn"}
    return renamed.get(dotted) or (f"knn_{name}" if section == "knn" else name)


def config_value(config: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """A field of a saved configuration (a run's ``config.json``, a checkpoint's state), by its
    dotted name (``"model.backbone"``), in sections or in the flat layout of earlier versions."""
    section, name = dotted.split(".", 1)
    if isinstance(config.get(section), dict):
        return config[section].get(name, default)
    return config.get(legacy_name(dotted), default)
