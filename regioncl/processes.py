"""Starting a ``regioncl`` command in a process of its own (studies, fault injection).

``python -m regioncl COMMAND`` (or ``LAUNCHER -m regioncl COMMAND``, e.g. ``accelerate launch``)
with this copy of the package first on the path, so that a clone works without installing and
an installed wheel works without a clone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

#: the folder holding this copy of the package.
PACKAGE_PARENT = Path(__file__).resolve().parents[1]


def regioncl_command(command: str, launcher: Sequence[str] | None = None) -> list[str]:
    """``[*launcher, "-m", "regioncl", command]``; the default launcher is this Python."""
    return [*(launcher or [sys.executable]), "-m", "regioncl", command]


def regioncl_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with this copy of regioncl first on ``PYTHONPATH``."""
    path = os.pathsep.join(p for p in (str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}
