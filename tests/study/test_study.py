import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from regioncl.study.report import configuration_summary, pair_difference, study_markdown, summarize_run
from regioncl.study.runner import StudyError, StudyRunner, load_study, option_flags, parse_assignments

ROOT = Path(__file__).resolve().parents[2]


def row(group: str, seed: int, **metrics) -> dict:
    base = {
        "group": group,
        "run": f"{group}_s{seed}",
        "method": group,
        "epochs": 3,
        "seed": seed,
        "knn_final": None,
        "knn_best": None,
        "linear_top1": None,
        "linear_top5": None,
        "train_minutes": None,
    }
    return {**base, **metrics}


def test_configuration_and_pair_arithmetic_on_synthetic_runs():
    rows = [
        row("a", 0, knn_final=0.80, linear_top1=0.90, train_minutes=10.0),
        row("a", 1, knn_final=0.82, linear_top1=0.86, train_minutes=12.0),
        row("a", 2, knn_final=0.84, linear_top1=0.88, train_minutes=11.0),
        row("b", 0, knn_final=0.70, linear_top1=0.85),
        row("b", 1, knn_final=0.74, linear_top1=0.87),
        row("c", 0, knn_final=0.5),
    ]
    a = configuration_summary(rows, "a")
    assert a["seeds"] == [0, 1, 2]
    assert a["knn_final"]["mean"] == pytest.approx(0.82) and a["knn_final"]["sd"] == pytest.approx(0.02)
    assert a["train_minutes"] == {"mean": pytest.approx(11.0), "sd": pytest.approx(1.0), "n": 3}
    assert a["linear_top5"] == {"mean": None, "sd": None, "n": 0}
    d = pair_difference(rows, "a", "b", "knn_final")
    # 0.82 − 0.72; SE = sqrt(0.02²/3 + 0.02828²/2) = sqrt(1.3333e-4 + 4e-4)
    assert d["diff"] == pytest.approx(0.10)
    assert d["se"] == pytest.approx(math.sqrt(0.02**2 / 3 + 0.0008 / 2))
    assert d["resolved_at"] == pytest.approx(0.10 / d["se"]) and d["n"] == [3, 2]
    lin = pair_difference(rows, "a", "b", "linear_top1")
    assert lin["diff"] == pytest.approx(0.02) and lin["se"] == pytest.approx(math.sqrt(0.0004 / 3 + 0.0002 / 2))
    # One seed on a side: a difference but no standard error; no value on a side: nothing.
    assert pair_difference(rows, "c", "b", "knn_final")["se"] is None
    assert pair_difference(rows, "c", "b", "linear_top1") is None
    table = study_markdown(
        [a, configuration_summary(rows, "c")],
        [
            {
                "pair": ["a", "b"],
                **{
                    m: pair_difference(rows, "a", "b", m)
                    for m in ("knn_final", "knn_best", "linear_top1", "linear_top5")
                },
            }
        ],
    )
    lines = table.splitlines()
    assert lines[2] == "| a | a | 3 | 0, 1, 2 | 82.00 ± 2.00 | – | 88.00 ± 2.00 | – | 11.00 ± 1.00 |"
    assert lines[3].startswith("| c | c | 3 | 0 | 50.00 | ")
    se = 100 * d["se"]
    assert lines[-1] == f"| a − b | +10.00 ± {se:.2f} | – | +2.00 ± {100 * lin['se']:.2f} | – |"


def test_a_run_is_summarised_from_its_folder_with_one_knn_score_per_epoch(tmp_path):
    run = tmp_path / "random_init_s0"
    run.mkdir()
    (run / "config.json").write_text(
        json.dumps({"model": {"method": "mocov2"}, "run": {"seed": 0}, "optim": {"epochs": 3, "batch_size": 8}})
    )
    records = [
        {"step": 0, "epoch": 0.0, "knn_top1": 0.75},
        {"step": 2, "epoch": 0.0, "images_per_s": 4.0},
        {"step": 4, "epoch": 0.0, "images_per_s": 8.0},
        {"step": 4, "epoch": 0.0, "knn_top1": 0.75},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    s = summarize_run(run)
    assert (s["group"], s["method"], s["epochs"], s["seed"]) == ("random_init", "mocov2", 3, 0)
    # A folder scored twice at one epoch (a run that took no step) gives one point, and no trained best.
    assert s["knn_by_epoch"] == [(0.0, 0.75)] and s["knn_before"] == s["knn_final"] == 0.75 and s["knn_best"] is None
    # 4 steps of 8 images at the median 6 images/s; no probe yet.
    assert s["train_minutes"] == pytest.approx(4 * 8 / 6.0 / 60) and s["linear_top1"] is None


def test_option_flags_and_assignments():
    assert option_flags(
        {
            "augment": False,
            "standardize": True,
            "lr": 0.1,
            "milestones": [6, 8],
            "x": None,
            "backbone_args": {"output_stride": 8},
        }
    ) == [
        "--augment",
        "false",
        "--standardize",
        "true",
        "--lr",
        "0.1",
        "--milestones",
        "[6, 8]",
        "--backbone_args",
        '{"output_stride": 8}',
    ]
    assert parse_assignments(["data.image_size=64", "method.region_cells=[1, 2]", "data=x:y"], "--set") == {
        "data.image_size": 64,
        "method.region_cells": [1, 2],
        "data": "x:y",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_assignments(["image_size"], "--set")


def write_study(tmp_path: Path, **extra) -> Path:
    study = {
        "name": "tiny",
        "out": str(tmp_path / "runs"),
        "seeds": [0],
        "options": {
            "batch_size": 8,
            "queue_size": 32,
            "max_steps": 4,
            "num_workers": 0,
            "checkpoint_every": 2,
            "log_every": 2,
            "data": "sample",
            "knn_train_data": "sample",
            "knn_val_data": "sample",
            "knn_k": 5,
            "channels_last": False,
        },
        "knn": {"every": 0},
        "probe": {
            "train_data": "sample",
            "val_data": "sample",
            "augment": False,
            "epochs": 2,
            "batch_size": 8,
            "lr": 0.1,
        },
        "runs": [
            {"name": "mocov2", "options": {"method": "mocov2"}},
            {"name": "regioncl_m", "options": {"method": "regioncl_m"}},
        ],
        "pairs": [["regioncl_m", "mocov2"]],
        **extra,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_run_may_give_its_own_probe_options_over_the_studys(tmp_path):
    path = write_study(
        tmp_path,
        runs=[
            {"name": "mocov2", "options": {"method": "mocov2"}},
            {"name": "small", "options": {"method": "mocov2"}, "probe": {"train_data": "/small", "lr": 0.5}},
            {"name": "unprobed", "options": {"method": "mocov2"}, "probe": False},
        ],
        pairs=[],
    )
    study = load_study(path, probe_overrides={"epochs": 3})
    assert study.spec("mocov2").probe_options == {**study.probe, "epochs": 3}
    small = study.spec("small").probe_options
    assert small["train_data"] == "/small" and small["lr"] == 0.5 and small["val_data"] == "sample"
    assert small["epochs"] == 3 and study.spec("small").probe and not study.spec("unprobed").probe
    runner = StudyRunner(study, dry_run=True, echo=lambda line: None)
    commands = []
    runner._call = lambda command, stdout_to=None: commands.append(command)
    runner.probe(study.spec("small"), 0)
    flags = commands[0]
    assert flags[flags.index("--train_data") + 1] == "/small" and flags[flags.index("--lr") + 1] == "0.5"
    # The digest of a row follows its own probe options: a row made with the study's is not reused.
    assert runner._digest(study.spec("small")) != runner._digest(study.spec("mocov2"))


def test_study_file_errors_name_the_place(tmp_path):
    path = write_study(tmp_path)
    study = load_study(path, {"data.image_size": 64}, {"epochs": 3})
    assert study.spec("mocov2").options["data"]["image_size"] == 64 and study.spec("mocov2").image_size == 64
    assert study.probe["epochs"] == 3
    assert study.spec("regioncl_m").options["model"]["method"] == "regioncl_m" and study.spec("mocov2").seeds == [0]
    with pytest.raises(ValueError, match="'image_sise' is not a section"):
        load_study(path, {"image_sise": 64})
    bad = yaml.safe_load(path.read_text())
    bad["runs"][0]["options"]["lr"] = -1
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="optim.lr must be positive"):
        load_study(path)
    bad["runs"][0]["options"]["lr"] = 0.1
    bad["pairs"] = [["regioncl_m", "moco"]]
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"names no run \['moco'\]"):
        load_study(path)


def fake_finished(run: Path, method: str, seed: int, knn: float, linear: float) -> None:
    """A finished run folder as the trainer and the probe leave it (no training)."""
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"method": method, "epochs": 3, "seed": seed, "batch_size": 8}))
    records = [
        {"step": 0, "epoch": 0, "knn_top1": 0.1},
        {"step": 4, "epoch": 0, "loss": 1.0, "images_per_s": 10.0},
        {"step": 4, "epoch": 1.0, "knn_top1": knn},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "linear.json").write_text(json.dumps({"top1": linear, "top5": 1.0}))
    (run / "encoder.safetensors").write_bytes(b"")
    (run / "result.json").write_text("{}")


def test_an_unresolved_pair_earns_a_seed_each_side_and_a_resolved_one_does_not(tmp_path):
    path = write_study(tmp_path, seeds=[0, 1], extra_seeds={"max": 3, "within": 2.0})
    runner = StudyRunner(load_study(path), echo=lambda line: None)
    for name, values in {"regioncl_m": [(0.80, 0.90), (0.82, 0.91)], "mocov2": [(0.79, 0.89), (0.83, 0.90)]}.items():
        for seed, (knn, linear) in enumerate(values):
            fake_finished(tmp_path / "runs" / f"{name}_s{seed}", name, seed, knn, linear)
    # kNN: 0.81 vs 0.81, within 2 SE → seed 2 for both.
    assert runner.extra_seeds() == {"regioncl_m": {2}, "mocov2": {2}}
    runner._extra = {"regioncl_m": {2}, "mocov2": {2}}
    assert runner.extra_seeds() == {}  # seed 2 not finished yet: no decision on partial evidence
    fake_finished(tmp_path / "runs" / "regioncl_m_s2", "regioncl_m", 2, 0.81, 0.9)
    fake_finished(tmp_path / "runs" / "mocov2_s2", "mocov2", 2, 0.81, 0.9)
    assert runner.extra_seeds() == {}  # three seeds: the cap
    # Far apart on every metric with two seeds: resolved, nothing added.
    for run in (tmp_path / "runs").iterdir():
        if run.name.startswith("mocov2"):
            (run / "metrics.jsonl").write_text(json.dumps({"step": 4, "epoch": 1.0, "knn_top1": 0.5}) + "\n")
            (run / "linear.json").write_text(json.dumps({"top1": 0.5 + 0.001 * int(run.name[-1]), "top5": 1.0}))
    fresh = StudyRunner(load_study(path), echo=lambda line: None)
    assert fresh.extra_seeds() == {}
    summary = fresh.summarize()
    assert [r["run"] for r in summary["runs"]] == [
        "mocov2_s0",
        "mocov2_s1",
        "mocov2_s2",
        "regioncl_m_s0",
        "regioncl_m_s1",
        "regioncl_m_s2",
    ]


def test_a_seed_the_study_never_plans_is_refused_not_silently_skipped(tmp_path):
    path = write_study(tmp_path, seeds=[0, 1], extra_seeds={"max": 3, "within": 2.0})
    for name, values in {
        "regioncl_m": [(0.80, 0.90), (0.82, 0.91), (0.81, 0.90)],
        "mocov2": [(0.79, 0.89), (0.83, 0.90), (0.81, 0.90)],
    }.items():
        for seed, (knn, linear) in enumerate(values):
            fake_finished(tmp_path / "runs" / f"{name}_s{seed}", name, seed, knn, linear)
    # Seed 2 is planned by the extra_seeds rule (the pair is within 2 SE on two seeds), seed 3 by
    # nothing (the rule stops at 3): every run is finished, so nothing trains either way.
    StudyRunner(load_study(path), echo=lambda line: None).run(seeds=[2])
    with pytest.raises(StudyError, match=r"--seeds \[3\]: not a seed of \['regioncl_m'\] \(they run \[0, 1, 2\]\)"):
        StudyRunner(load_study(path), echo=lambda line: None).run(only=["regioncl_m"], seeds=[2, 3])


@pytest.mark.slow
def test_recorded_rows_stand_for_runs_whose_folders_are_gone(tmp_path):
    """Rows of the committed results whose folders are gone (another machine, a wiped scratch disk)
    count as done, stay in the table and the plots and weigh in the extra-seed rule; a folder here
    wins over its row; a row made with other options is refused."""
    path = write_study(tmp_path, seeds=[0, 1], results=str(tmp_path / "docs"), extra_seeds={"max": 3, "within": 2.0})
    study = load_study(path)
    runs = tmp_path / "runs"
    for name, values in {"regioncl_m": [(0.80, 0.90), (0.82, 0.91)], "mocov2": [(0.79, 0.89), (0.83, 0.90)]}.items():
        for seed, (knn, linear) in enumerate(values):
            fake_finished(runs / f"{name}_s{seed}", name, seed, knn, linear)
            (runs / f"{name}_s{seed}" / "recipe.yaml").write_text(yaml.safe_dump(study.spec(name).options))
    first = StudyRunner(study, echo=lambda line: None).summarize()
    assert all(r["options_digest"] for r in first["runs"])
    shutil.rmtree(runs)

    # A dry run lists what a real run would start: nothing, neither a pretraining nor a probe.
    planned = []
    StudyRunner(load_study(path), dry_run=True, echo=planned.append).run()
    assert not [line for line in planned if "pretrain" in line or "linear probe" in line], planned
    listed = subprocess.run(
        [sys.executable, "-m", "regioncl", "study", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert listed.returncode == 0 and "== " not in listed.stdout.replace("== recorded", ""), listed.stdout

    lines = []
    runner = StudyRunner(load_study(path), echo=lines.append)
    assert sorted(runner.recorded()) == ["mocov2_s0", "mocov2_s1", "regioncl_m_s0", "regioncl_m_s1"]
    assert runner.done("mocov2", 1) and not runner.done("mocov2", 2)
    assert runner.pretrain(runner.study.spec("mocov2"), 0) is False and not (runs / "mocov2_s0").exists()
    assert runner.extra_seeds() == {"regioncl_m": {2}, "mocov2": {2}}  # decided on the recorded evidence
    again = runner.summarize()
    assert again["runs"] == json.loads(json.dumps(first["runs"])) and again["pairs"] == first["pairs"]
    assert any("no run folder here" in line and "mocov2_s0" in line for line in lines)
    pytest.importorskip("matplotlib")
    assert (runs / "knn_regioncl_m_vs_mocov2.png").is_file()

    # A finished folder here is the truth for its run, over the row.
    fake_finished(runs / "mocov2_s0", "mocov2", 0, 0.5, 0.5)
    rows = {r["run"]: r for r in StudyRunner(load_study(path), echo=lambda line: None).summarize()["runs"]}
    assert rows["mocov2_s0"]["knn_final"] == 0.5 and rows["mocov2_s1"]["knn_final"] == 0.83
    shutil.rmtree(runs / "mocov2_s0")

    # The study now gives other options: a recorded row made with the old ones is not reused.
    changed = StudyRunner(load_study(path, {"optim.lr": 0.5}), echo=lambda line: None)
    with pytest.raises(StudyError, match="row mocov2_s1 of .* other options"):
        changed.pretrain(changed.study.spec("mocov2"), 1)


def _drive(study: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "study.py"), str(study), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_study_runner_trains_probes_summarises_skips_and_resumes(tmp_path):
    """The runner on a tiny stand-in study (two methods, one seed, a few steps on the sample set):
    it trains and probes both, writes the table, the JSON and the pair plot; a second call
    starts nothing; a run killed after a checkpoint is resumed from it; a run missing only its
    probe gets only the probe; a run made with other options is refused."""
    study = write_study(tmp_path, results=str(tmp_path / "docs"))
    out = _drive(study)
    assert out.count("== pretrain") == 2 and out.count("== linear probe") == 2
    runs = tmp_path / "runs"
    results = json.loads((runs / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [("mocov2", 0), ("regioncl_m", 0)]
    for r in results["runs"]:
        assert 0.0 <= r["linear_top1"] <= 1.0 and 0.0 <= r["knn_final"] <= 1.0 and r["commits"]
        assert r["knn_top1"] == r["knn_final"] == r["knn_by_epoch"][-1][1] and r["epochs"] >= 1
    assert results["pairs"][0]["pair"] == ["regioncl_m", "mocov2"]
    assert results["pairs"][0]["linear_top1"]["diff"] == pytest.approx(
        results["runs"][1]["linear_top1"] - results["runs"][0]["linear_top1"]
    )
    assert "| regioncl_m − mocov2 |" in (runs / "summary.md").read_text()
    assert (runs / "knn_regioncl_m_vs_mocov2.png").is_file()
    assert {p.name for p in (tmp_path / "docs").iterdir()} == {
        "results.json",
        "summary.md",
        "knn_regioncl_m_vs_mocov2.png",
    }

    assert "== pretrain" not in _drive(study) and "== linear" not in _drive(study)

    # Missing its probe: only the probe runs again.
    (runs / "mocov2_s0" / "linear.json").unlink()
    out = _drive(study)
    assert "== pretrain" not in out and out.count("== linear probe mocov2 seed 0") == 1

    # Killed mid-run: the next call resumes from the last checkpoint and finishes it.
    longer = yaml.safe_load(study.read_text())
    longer["options"].update(max_steps=100, checkpoint_every=5)
    longer["out"] = str(tmp_path / "runs_long")
    # Its own results too: the committed rows of the first study were made with other options and
    # would be refused as recorded runs of this one.
    longer["results"] = str(tmp_path / "docs_long")
    study.write_text(yaml.safe_dump(longer))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "study.py"), str(study), "--only", "mocov2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ckpts = tmp_path / "runs_long" / "mocov2_s0" / "checkpoints"
    deadline = time.time() + 600
    while not (ckpts.is_dir() and any(ckpts.glob("step_*"))) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(ckpts.glob("step_*")) and not (tmp_path / "runs_long" / "mocov2_s0" / "encoder.safetensors").exists()
    out = _drive(study, "--only", "mocov2")
    assert "== pretrain mocov2 seed 0" in out and "(resumed)" in out and "--run.resume latest" in out
    assert json.loads((tmp_path / "runs_long" / "mocov2_s0" / "result.json").read_text())["step"] == 100
    metrics = [
        json.loads(line) for line in (tmp_path / "runs_long" / "mocov2_s0" / "metrics.jsonl").read_text().splitlines()
    ]
    steps = [r["step"] for r in metrics if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 100  # no step logged twice across the kill

    # The study now asks for other options than a finished run was made with: refused, not mixed in.
    longer["options"]["lr"] = 0.5
    study.write_text(yaml.safe_dump(longer))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "study.py"), str(study), "--only", "mocov2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "made with other options" in proc.stderr and "optim.lr: 0.03 → 0.5" in proc.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.stem)
@pytest.mark.slow
def test_shipped_studies_load_and_never_score_on_their_pretraining_images(path):
    study = load_study(path)  # every run's recipe resolves to a valid config
    for spec in study.runs:
        source = spec.options["data"]["source"]
        scored_on = {spec.options["knn"].get("val_data"), spec.probe_options.get("val_data")} - {None}
        assert source not in scored_on, f"{spec.name} is scored on the images it pretrains on"
