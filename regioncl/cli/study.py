"""Run a study: its pretraining runs, kNN per epoch, linear probes, the table, the JSON and the plots.

    regioncl study studies/fmnist.yaml                       # everything still missing, then the summary
    regioncl study studies/fmnist.yaml --dry-run             # what would run
    regioncl study studies/fmnist.yaml --only mocov2 regioncl_m
    regioncl study studies/fmnist.yaml --summarize           # the table again, nothing trained
    # the same study at another scale, on a GPU, without editing a file:
    regioncl study studies/fmnist.yaml --out runs/studies/fmnist64 --set image_size=64 epochs=10 \\
        --launcher "accelerate launch --num_processes 1 --mixed_precision bf16"

Killed or stopped, it picks up where it was: finished runs are skipped, a run with a checkpoint
is resumed, a run without its probe gets only the probe. The study file format is described in
regioncl/study/runner.py.
"""

from __future__ import annotations

import shlex

from .common import parser


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    p = parser(__doc__, prog)
    p.add_argument("study", help="the study's YAML file")
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="FIELD=VALUE",
        help="pretraining fields for every run, over the study's (values read as YAML)",
    )
    p.add_argument(
        "--probe-set", nargs="+", default=[], metavar="OPTION=VALUE", help="linear-probe options for every probe"
    )
    p.add_argument("--out", help="another output folder (required with --set, so runs of two scales never mix)")
    p.add_argument("--launcher", help='how to start the scripts, e.g. "accelerate launch --num_processes 8"')
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these configurations (the summary covers all)")
    p.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="run only these seeds (the summary covers all)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--summarize", action="store_true", help="only write the table, the JSON and the plots")
    a = p.parse_args(argv)
    from ..study.runner import StudyRunner, load_study, parse_assignments

    if (a.set or a.probe_set) and not a.out:
        p.error("--set/--probe-set change the runs: give them their own --out")
    try:
        study = load_study(
            a.study, parse_assignments(a.set, "--set"), parse_assignments(a.probe_set, "--probe-set"), a.out
        )
    except (OSError, ValueError, TypeError) as e:
        p.error(str(e))
    if a.launcher:
        study.launcher = shlex.split(a.launcher)
    runner = StudyRunner(study, dry_run=a.dry_run)
    if a.only:
        unknown = sorted(set(a.only) - {r.name for r in study.runs})
        if unknown:
            p.error(f"--only: no run named {unknown}; runs: {[r.name for r in study.runs]}")
    return runner.summarize() if a.summarize else runner.run(a.only, a.seeds)  # a StudyError is a UserError
