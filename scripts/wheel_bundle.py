#!/usr/bin/env python
"""Wheels for the lent GPU machine, which reaches no registry (see benchmarks/bundle.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bundle import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
