#!/usr/bin/env python
"""`regioncl study` from a clone, without installing (see regioncl/cli/study.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from regioncl.cli import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run("study", sys.argv[1:]))
