import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from regioncl.report import markdown_table, run_group, summarize_run

ROOT = Path(__file__).resolve().parent.parent


def fake_run(path: Path, method: str, seed: int, knn: list[float], ips: float, linear: float | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"method": method, "epochs": len(knn) - 1, "seed": seed, "batch_size": 10}))
    records = [{"step": 0, "epoch": 0, "knn_top1": knn[0]}]
    for epoch, top1 in enumerate(knn[1:], 1):
        records += [{"step": 6 * epoch - 3, "epoch": epoch - 1, "loss": 1.0, "images_per_s": ips},
                    {"step": 6 * epoch, "epoch": epoch - 1, "loss": 1.0, "images_per_s": ips},
                    {"step": 6 * epoch, "epoch": float(epoch), "knn_top1": top1}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if linear is not None:
        (path / "linear.json").write_text(json.dumps({"top1": linear, "top5": 1.0}))
    return path


def test_runs_are_summarised_and_seeds_averaged(tmp_path):
    a0 = fake_run(tmp_path / "a_s0", "mocov2", 0, [0.1, 0.5, 0.4], ips=20.0, linear=0.6)
    a1 = fake_run(tmp_path / "a_s1", "mocov2", 1, [0.1, 0.6, 0.7], ips=30.0, linear=0.8)
    b0 = fake_run(tmp_path / "b_s0", "regioncl_m", 0, [0.3, 0.2], ips=10.0)
    assert run_group(a1) == "a" and run_group(tmp_path / "plain") == "plain"
    s = summarize_run(a0)
    assert (s["knn_before"], s["knn_final"], s["knn_best"], s["steps"]) == (0.1, 0.4, 0.5, 12)
    assert s["knn_by_epoch"] == [(0, 0.1), (1.0, 0.5), (2.0, 0.4)]
    assert s["train_minutes"] == pytest.approx(12 * 10 / 20.0 / 60)
    table = markdown_table([a0, a1, b0]).splitlines()
    # final kNN 40 and 70 → 55 ± 21.21 (sample s.d.); linear 60 and 80 → 70 ± 14.14; b has no probe,
    # and its best is after training (20), not the random init (30).
    assert table[2].startswith("| a | mocov2 | 2 | 0, 1 | 55.00 ± 21.21 | 60.00 ± 14.14 | 70.00 ± 14.14 | 100.00 ± 0.00 | 25.00 ± 7.07 |")
    assert table[3].startswith("| b | regioncl_m | 1 | 0 | 20.00 | 20.00 | – | – | 10.00 |")
    assert sum(line.startswith("| a_s") or line.startswith("| b_s") for line in table) == 3


@pytest.mark.slow
def test_reproduction_driver_runs_probes_summarises_and_skips_or_resumes(tmp_path):
    """scripts/reproduce_fmnist.sh end to end on a tiny stand-in for Fashion-MNIST: two recipes,
    a linear probe each, the plot and the table; a second call redoes nothing, and a run whose
    result is missing is resumed from its checkpoint rather than started again."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        for i in range(n):
            d = tmp_path / "data" / split / str(i % 2)
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), mode="L").save(d / f"{i}.png")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "runs"), "DATA": str(tmp_path / "data"),
           "RECIPES": "fmnist_regioncl_m fmnist_mocov2",
           "PRETRAIN_ARGS": "--batch-size 8 --queue-size 32 --max-steps 4 --num-workers 0 --knn-k 5 --checkpoint-every 2",
           "PROBE_ARGS": "--no-augment --image-size 32 --crop-pct 1.0 --epochs 2 --batch-size 8 --lr 0.1"}
    script = [str(ROOT / "scripts" / "reproduce_fmnist.sh"), "0"]

    def drive() -> str:
        proc = subprocess.run(script, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc.stdout

    out = drive()
    assert out.count("== pretrain") == 2 and out.count("== linear probe") == 2
    runs = tmp_path / "runs"
    for name in ("regioncl_m_s0", "mocov2_s0"):
        assert json.loads((runs / name / "result.json").read_text())["step"] == 4
        assert 0.0 <= json.loads((runs / name / "linear.json").read_text())["top1"] <= 1.0
    assert (runs / "plots" / "compare_knn.png").is_file()
    summary = (runs / "summary.md").read_text()
    assert "| regioncl_m | regioncl_m | 3 | 0 |" in summary and "| mocov2 | mocov2 | 3 | 0 |" in summary

    assert "== pretrain" not in drive()  # everything is done
    (runs / "mocov2_s0" / "result.json").unlink()
    out = drive()
    assert "== pretrain fmnist_mocov2 seed 0" in out and "--resume latest" in out and "linear probe" not in out
    assert json.loads((runs / "mocov2_s0" / "result.json").read_text())["step"] == 4
