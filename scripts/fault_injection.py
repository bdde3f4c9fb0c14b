#!/usr/bin/env python
"""Kill a pretraining run at random moments, resume it each time, and check that it ends exactly
where an uninterrupted run ends (the same per-step losses and final encoder weights).

    python scripts/fault_injection.py --kills 20                      # the sample recipe, a short run
    python scripts/fault_injection.py --kills 5 -- --model.method densecl --optim.max_steps 40

Options after ``--`` go to ``regioncl pretrain`` (the default run: the sample recipe for 30 steps,
a checkpoint every 2 steps, kNN off). Exit status 1 when a loss or a weight differs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from regioncl.processes import regioncl_command, regioncl_env  # noqa: E402
from regioncl.train.fault_injection import kill_and_resume, step_losses  # noqa: E402

DEFAULT = [
    "--optim.max_steps",
    "30",
    "--run.checkpoint_every",
    "2",
    "--run.log_every",
    "1",
    "--knn.enabled",
    "false",
    "--optim.batch_size",
    "16",
    "--method.queue_size",
    "64",
    "--data.num_workers",
    "1",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--max-delay", type=float, default=1.5, help="seconds after progress within which a kill lands")
    p.add_argument("--out", help="folder for the two runs (default: a temporary one)")
    p.add_argument("pretrain_args", nargs="*", help="options for scripts/pretrain.py (after --)")
    a = p.parse_args(argv)
    args = [*DEFAULT, *a.pretrain_args]
    root = Path(a.out or tempfile.mkdtemp(prefix="regioncl-faults-"))
    import subprocess

    subprocess.run(
        [*regioncl_command("pretrain"), *args, "--run.output_dir", str(root / "reference")],
        check=True,
        stdout=subprocess.DEVNULL,
        env=regioncl_env(),
    )
    report = kill_and_resume(args, root / "killed", a.kills, seed=a.seed, max_delay=a.max_delay)
    expected, got = step_losses(root / "reference"), step_losses(root / "killed")
    differ = [
        s
        for s in expected
        if s not in got or any(abs(got[s][k] - v) > 1e-5 * max(1.0, abs(v)) for k, v in expected[s].items())
    ]
    ref, end = (load_file(str(root / r / "encoder.safetensors")) for r in ("reference", "killed"))
    weights = [k for k in ref if not torch.allclose(ref[k].float(), end[k].float(), rtol=1e-4, atol=1e-6)]
    print(
        f"{report['kills']} kills (after steps {report['killed_after_steps']}; {report['mid_checkpoint']} "
        f"in the middle of a checkpoint); steps with other losses: {differ or 'none'}; "
        f"weights that differ: {weights or 'none'}  ({root})"
    )
    return 1 if differ or weights or set(got) != set(expected) else 0


if __name__ == "__main__":
    sys.exit(main())
