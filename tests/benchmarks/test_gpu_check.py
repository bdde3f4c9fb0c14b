"""The prepared GPU check, dry-run on the CPU so that it cannot rot: every stage runs and writes
its record; a stage that fails or runs out of time is recorded and the next one still runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check as gpu_check_module
from benchmarks.rehearsal import rehearse

ROOT = Path(__file__).resolve().parents[2]


def gpu_check(cwd: Path, *args: str) -> list[dict]:
    proc = subprocess.run(
        [str(ROOT / "scripts" / "gpu_check.sh"), str(cwd / "out"), "--dry-run", "--device", "cpu", *args],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads((cwd / "out" / "gpu_check.json").read_text())[1:]  # after the environment record


@pytest.mark.slow
def test_the_rehearsal_runs_every_stage_offline_from_the_bundle_alone(tmp_path):
    """The lent machine as far as this one allows: only the image's packages, no registry, the
    project as it travels with the bundle. Every stage ends ok, with the packages the image lacks
    loaded from the bundle's install and the others from the image."""
    result = rehearse(tmp_path, budget_s=900, log=lambda m: None)
    records = {r["stage"]: r for r in result["records"]}
    assert result["returncode"] == 0, result["output"][-3000:]
    assert list(records) == ["environment", "methods", "throughput", "pipeline", "fmnist"]
    assert all(r["status"] == "ok" for r in records.values()), {k: r.get("error") for k, r in records.items()}
    packages = records["environment"]["result"]["packages"]
    site, image = str(tmp_path / "site"), str(tmp_path / "image")
    for name in ("datasets", "jsonargparse", "docstring-parser", "lightly"):
        assert packages[name]["at"].startswith(site), (name, packages[name])
    for name in ("torch", "timm", "accelerate", "safetensors"):
        assert packages[name]["at"].startswith(image), (name, packages[name])
    assert records["environment"]["result"]["bundle"]["install_seconds"] > 0
    assert "Looking in indexes" not in result["output"] and "make venv" not in result["output"]
    methods = records["methods"]["result"]
    assert len(methods) == 14  # 7 methods, with and without the device augmentation
    for name, row in methods.items():
        assert row["finite"] and row["batch"] == 8 and row["host_reads_per_step"] == 0, name
    assert "regioncl_m" in records["throughput"]["result"]["eager"]
    assert (
        "lightly" in records["throughput"]["result"]
        and "not installed" not in records["throughput"]["result"]["lightly"]
    )
    assert records["pipeline"]["result"]["cpu_keeps_up"] in (True, False)
    assert set(records["fmnist"]["result"]) == {"regioncl_m", "mocov2"}


def test_a_stage_whose_packages_are_absent_is_recorded_without_running(tmp_path, monkeypatch):
    monkeypatch.setitem(gpu_check_module.NEEDS, "pipeline", ("timm", "no_such_module_here"))
    records = gpu_check_module.run_all(tmp_path, True, "cpu", ["pipeline"], {"pipeline": 60})
    assert [r["stage"] for r in records] == ["environment", "pipeline"]
    assert records[1]["status"] == "missing" and "no_such_module_here" in records[1]["error"]
    assert "timm" not in records[1]["error"] and not (tmp_path / "pipeline.json").exists()
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == json.loads(json.dumps(records, default=str))


@pytest.mark.slow
def test_a_stage_out_of_time_or_failing_is_recorded_and_the_next_still_runs(tmp_path):
    records = gpu_check(
        tmp_path,
        "--stages",
        "methods",
        "pipeline",
        "fmnist",
        "--budget",
        "methods=1",
        "--fmnist-data",
        str(tmp_path / "nowhere"),
    )
    status = {r["stage"]: r["status"] for r in records}
    assert status == {"methods": "timeout", "pipeline": "ok", "fmnist": "failed"}  # no data/fashion-mnist here
    fmnist = next(r for r in records if r["stage"] == "fmnist")
    assert "prepare_fashion_mnist" in fmnist["error"]
