"""The prepared GPU check, dry-run on the CPU so that it cannot rot: every stage runs and writes
its record; a stage that fails or runs out of time is recorded and the next one still runs."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def fake_fashion_mnist(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        for i in range(n):
            folder = root / "data" / "fashion-mnist" / split / f"c{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), mode="L").save(folder / f"{i}.png")


def gpu_check(cwd: Path, *args: str) -> list[dict]:
    proc = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), str(cwd / "out"), "--dry-run", "--device", "cpu",
                           *args], capture_output=True, text=True, timeout=1200, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads((cwd / "out" / "gpu_check.json").read_text())


@pytest.mark.slow
def test_every_stage_of_the_dry_run_writes_its_record(tmp_path):
    fake_fashion_mnist(tmp_path)
    records = {r["stage"]: r for r in gpu_check(tmp_path, "--budget", "methods=600", "throughput=600",
                                                "pipeline=600", "fmnist=600", "--fmnist-data",
                                                str(tmp_path / "data" / "fashion-mnist"))}
    assert list(records) == ["methods", "throughput", "pipeline", "fmnist"]
    assert all(r["status"] == "ok" for r in records.values()), {k: r.get("error") for k, r in records.items()}
    methods = records["methods"]["result"]
    assert len(methods) == 14  # 7 methods, with and without the device augmentation
    for name, row in methods.items():
        assert row["finite"] and row["batch"] == 8 and row["host_reads_per_step"] == 0, name
    assert "regioncl_m" in records["throughput"]["result"]["eager"]
    assert records["pipeline"]["result"]["cpu_keeps_up"] in (True, False)
    assert set(records["fmnist"]["result"]) == {"regioncl_m", "mocov2"}


def test_a_stage_out_of_time_or_failing_is_recorded_and_the_next_still_runs(tmp_path):
    records = gpu_check(tmp_path, "--stages", "methods", "pipeline", "fmnist", "--budget", "methods=1",
                        "--fmnist-data", str(tmp_path / "nowhere"))
    status = {r["stage"]: r["status"] for r in records}
    assert status == {"methods": "timeout", "pipeline": "ok", "fmnist": "failed"}  # no data/fashion-mnist here
    fmnist = next(r for r in records if r["stage"] == "fmnist")
    assert "prepare_fashion_mnist" in fmnist["error"]
