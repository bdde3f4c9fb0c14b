#!/usr/bin/env python
"""Run a study: its pretraining runs, kNN per epoch, linear probes, the table, the JSON and the plots.

    python scripts/study.py studies/fmnist.yaml                       # everything still missing, then the summary
    python scripts/study.py studies/fmnist.yaml --dry-run             # what would run
    python scripts/study.py studies/fmnist.yaml --only mocov2 regioncl_m
    python scripts/study.py studies/fmnist.yaml --summarize           # the table again, nothing trained
    # the same study at another scale, on a GPU, without editing a file:
    python scripts/study.py studies/fmnist.yaml --out runs/studies/fmnist64 --set image_size=64 epochs=10 \\
        --launcher "accelerate launch --num_processes 1 --mixed_precision bf16"

Killed or stopped, it picks up where it was: finished runs are skipped, a run with a checkpoint
is resumed, a run without its probe gets only the probe. The study file format is described in
regioncl/study.py.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from regioncl.study.runner import StudyError, StudyRunner, load_study, parse_assignments  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="the study's YAML file")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="pretraining fields for every run, over the study's (values read as YAML)")
    p.add_argument("--probe-set", nargs="+", default=[], metavar="OPTION=VALUE", help="linear-probe options for every probe")
    p.add_argument("--out", help="another output folder (required with --set, so runs of two scales never mix)")
    p.add_argument("--launcher", help='how to start the scripts, e.g. "accelerate launch --num_processes 8"')
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these configurations (the summary covers all)")
    p.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="run only these seeds (the summary covers all)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--summarize", action="store_true", help="only write the table, the JSON and the plots")
    a = p.parse_args(argv)
    if (a.set or a.probe_set) and not a.out:
        p.error("--set/--probe-set change the runs: give them their own --out")
    try:
        study = load_study(a.study, parse_assignments(a.set, "--set"), parse_assignments(a.probe_set, "--probe-set"), a.out)
    except (OSError, ValueError, TypeError) as e:
        p.error(str(e))
    if a.launcher:
        study.launcher = shlex.split(a.launcher)
    runner = StudyRunner(study, dry_run=a.dry_run)
    if a.only:
        unknown = sorted(set(a.only) - {r.name for r in study.runs})
        if unknown:
            p.error(f"--only: no run named {unknown}; runs: {[r.name for r in study.runs]}")
    try:
        return runner.summarize() if a.summarize else runner.run(a.only, a.seeds)
    except StudyError as e:
        sys.exit(f"study.py: error: {e}")


if __name__ == "__main__":
    main()
