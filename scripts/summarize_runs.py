#!/usr/bin/env python
"""A Markdown results table of pretraining runs (runs named NAME_s<seed> are averaged per NAME).

    python scripts/summarize_runs.py runs/fmnist/*_s[0-9]
    python scripts/summarize_runs.py runs/fmnist/*_s[0-9] --json runs/fmnist/summary.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regioncl.report import markdown_table, summarize_run  # noqa: E402


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="pretraining output folders")
    p.add_argument("--json", help="also write every run's summary (kNN per epoch included) here")
    a = p.parse_args(argv)
    table = markdown_table(a.runs)
    if a.json:
        Path(a.json).write_text(json.dumps([summarize_run(r) for r in a.runs], indent=1))
    print(table)
    return table


if __name__ == "__main__":
    main()
