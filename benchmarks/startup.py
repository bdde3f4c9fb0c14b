"""How long a command takes to answer ``--help``: what a user waits for before anything happens.

Each command line runs as ``python -m regioncl ...`` in a fresh process, with one copy of the
package or another first on the path (``roots``: a clone, an older checkout of it), the copies
taking turns round by round so that a slow moment of the machine falls on all of them alike.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

COMMANDS = (("--help",), ("pretrain", "--help"), ("knn", "--help"), ("probe", "--help"))


def startup_times(
    roots: Sequence[str | os.PathLike], commands: Sequence[Sequence[str]] = COMMANDS, rounds: int = 5
) -> dict[tuple[str, tuple[str, ...]], list[float]]:
    """Wall seconds of ``python -m regioncl COMMAND`` for each root and command, ``rounds`` times each."""
    times: dict[tuple[str, tuple[str, ...]], list[float]] = {}
    for _ in range(rounds):
        for root in roots:
            env = {**os.environ, "PYTHONPATH": str(Path(root).resolve())}
            for command in commands:
                began = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-m", "regioncl", *command], env=env, cwd=root, capture_output=True, text=True
                )
                elapsed = time.perf_counter() - began
                if proc.returncode != 0:
                    raise RuntimeError(f"regioncl {' '.join(command)} from {root} failed: {proc.stderr[-2000:]}")
                times.setdefault((str(root), tuple(command)), []).append(elapsed)
    return times


def format_startup_table(times: dict[tuple[str, tuple[str, ...]], list[float]]) -> str:
    roots = list(dict.fromkeys(root for root, _ in times))
    commands = list(dict.fromkeys(command for _, command in times))
    lines = [
        "| command | " + " | ".join(f"{root}: median s (min–max)" for root in roots) + " |",
        "|---|" + "---|" * len(roots),
    ]
    for command in commands:
        cells = [times[(root, command)] for root in roots]
        lines.append(
            f"| `regioncl {' '.join(command)}` | "
            + " | ".join(f"{statistics.median(t):.2f} ({min(t):.2f}–{max(t):.2f})" for t in cells)
            + " |"
        )
    return "\n".join(lines)
