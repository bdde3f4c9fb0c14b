"""Training-step throughput of the methods side by side, the lightly comparison, the data pipeline.

    regioncl benchmark --backbone resnet18 --image-size 64 --batch-size 32
    regioncl benchmark --compare lightly --methods mocov2 densecl simsiam --backbone resnet50 --backbone-args '{}' --image-size 128 --batch-size 16
    regioncl benchmark --pipeline --image-size 224 --num-images 200

The benchmarks live beside the package, in the repository's ``benchmarks/`` folder (as timm keeps
its benchmark script beside its library), so this command runs from a clone (an editable install
or ``python scripts/benchmark.py``), not from a wheel.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "steps.py").is_file():
        raise UserError(
            "the benchmarks are not in the installed package: run `regioncl benchmark` (or "
            "scripts/benchmark.py) from a clone of the repository, installed with pip install -e ."
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.cli import main as benchmark_main

    benchmark_main(argv, prog)
