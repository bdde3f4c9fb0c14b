import json
from pathlib import Path

import pytest

from regioncl.study.report import run_group, summarize_run


def fake_run(path: Path, method: str, seed: int, knn: list[float], ips: float, linear: float | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps({"method": method, "epochs": len(knn) - 1, "seed": seed, "batch_size": 10})
    )
    records = [{"step": 0, "epoch": 0, "knn_top1": knn[0]}]
    for epoch, top1 in enumerate(knn[1:], 1):
        records += [
            {"step": 6 * epoch - 3, "epoch": epoch - 1, "loss": 1.0, "images_per_s": ips},
            {"step": 6 * epoch, "epoch": epoch - 1, "loss": 1.0, "images_per_s": ips},
            {"step": 6 * epoch, "epoch": float(epoch), "knn_top1": top1},
        ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if linear is not None:
        (path / "linear.json").write_text(json.dumps({"top1": linear, "top5": 1.0}))
    return path


def test_runs_are_summarised(tmp_path):
    a0 = fake_run(tmp_path / "a_s0", "mocov2", 0, [0.1, 0.5, 0.4], ips=20.0, linear=0.6)
    a1 = fake_run(tmp_path / "a_s1", "mocov2", 1, [0.1, 0.6, 0.7], ips=30.0, linear=0.8)
    b0 = fake_run(tmp_path / "b_s0", "regioncl_m", 0, [0.3, 0.2], ips=10.0)
    assert run_group(a1) == "a" and run_group(tmp_path / "plain") == "plain"
    s = summarize_run(a0)
    assert (s["knn_before"], s["knn_final"], s["knn_best"], s["steps"]) == (0.1, 0.4, 0.5, 12)
    assert s["knn_by_epoch"] == [(0, 0.1), (1.0, 0.5), (2.0, 0.4)]
    assert s["train_minutes"] == pytest.approx(12 * 10 / 20.0 / 60)
    assert (s["linear_top1"], s["linear_top5"], s["images_per_s"]) == (0.6, 1.0, 20.0)
    # b has no probe, and its best is after training (20), not the random init (30).
    b = summarize_run(b0)
    assert (b["knn_before"], b["knn_final"], b["knn_best"], b["linear_top1"]) == (0.3, 0.2, 0.2, None)
    assert (b["group"], b["method"], b["seed"]) == ("b", "regioncl_m", 0)


def test_a_row_keeps_the_loss_terms_and_the_diagnostics(tmp_path):
    run = fake_run(tmp_path / "r_s0", "regioncl_m", 0, [0.1, 0.5], ips=20.0)
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 9, "epoch": 1.5, "loss": 14.123456, "loss_ins": 7.0, "loss_reg": 7.123456}) + "\n")
        f.write(json.dumps({"step": 9, "diag_grad_cos": -0.123456789, "diag_loss_reg_empty": None}) + "\n")
    s = summarize_run(run)
    # the base-style windows have no terms; the RegionCL window has both, to five significant digits
    assert s["losses"] == [[3, 1.0, None, None], [6, 1.0, None, None], [9, 14.123, 7.0, 7.1235]]
    assert s["diagnostics"] == [{"step": 9, "diag_grad_cos": -0.12346, "diag_loss_reg_empty": None}]
    assert summarize_run(fake_run(tmp_path / "m_s0", "mocov2", 0, [0.1, 0.5], ips=20.0))["diagnostics"] == []
