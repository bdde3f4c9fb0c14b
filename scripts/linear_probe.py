#!/usr/bin/env python
"""`regioncl probe` from a clone, without installing (see regioncl/cli/probe.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from regioncl.cli import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run("probe", sys.argv[1:]))
