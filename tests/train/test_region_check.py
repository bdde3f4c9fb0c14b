"""The warning that RegionCL works against the instance objective (regioncl.train.region_check)."""

import json
import math
from pathlib import Path

import pytest
from tiny_run import TINY

from regioncl.train import region_check as rc
from regioncl.train.region_check import WARNING, RegionCheck

CHANCE = math.log(4096 + 1)  # the fmnist recipes' queue

# Instance loss per record (15 steps each, 234 steps, warm-up 150) shaped as the held-out set's
# runs were: RegionCL-M falls to 7.08 at step 75 and climbs to 7.41 by step 225; MoCo v2 falls to
# 6.84 and ends at 6.90, a small rise that is no reason to warn.
CLIMB = [7.9, 7.5, 7.3, 7.15, 7.08, 7.10, 7.12, 7.18, 7.22, 7.28, 7.33, 7.36, 7.38, 7.40, 7.41]
LEVEL = [7.7, 7.3, 7.0, 6.9, 6.86, 6.84, 6.85, 6.86, 6.84, 6.87, 6.88, 6.86, 6.89, 6.90, 6.90]
STEPS = [15 * (i + 1) for i in range(len(CLIMB))]


def check(**kw) -> RegionCheck:
    return RegionCheck("regioncl_m", "mocov2", CHANCE, start_step=75, span=234 // 20, **kw)


def test_a_climbing_instance_loss_is_warned_about_once():
    c = check()
    said = [(step, c.see(step, loss)) for step, loss in zip(STEPS, CLIMB)]
    warnings = [(step, text) for step, text in said if text]
    # 7.08 + 0.15 · (log 4097 − 7.08) = 7.27: above it from step 150; three records and 12 steps later, warned.
    assert [step for step, _ in warnings] == [180]
    text = warnings[0][1]
    assert "7.080 (step 75)" in text and "7.360 (step 180)" in text and "--model.method mocov2" in text


def test_a_level_instance_loss_and_the_early_phase_are_not():
    c = check()
    assert not any(c.see(step, loss) for step, loss in zip(STEPS, LEVEL))
    # Before start_step the loss may do anything (the queue fills, the lr warms up).
    c = check()
    assert not any(c.see(step, loss) for step, loss in [(15, 5.0), (30, 7.9), (45, 8.0), (60, 8.1)])


def test_a_rise_must_last_three_records_and_a_span():
    c = check()
    for step, loss in [(75, 7.0), (90, 7.5), (105, 7.5), (120, 6.9), (135, 7.5), (150, 7.5)]:
        assert c.see(step, loss) is None  # two above, a new lowest, two above
    c = RegionCheck("regioncl_m", "mocov2", CHANCE, start_step=0, span=100)
    assert not any(c.see(step, loss) for step, loss in [(10, 7.0), (20, 7.5), (30, 7.5), (40, 7.5)])
    assert c.see(120, 7.5) is not None


def test_a_resumed_run_replays_its_records(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "loss_ins": v, "loss": v} for s, v in zip(STEPS, CLIMB)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines[:10]))
    c = check()
    assert c.replay(metrics) is None and c.above == [150]  # the climb has begun
    assert [s for s, v in zip(STEPS[10:], CLIMB[10:]) if c.see(s, v)] == [180]
    # The warning was due in the records but not written (a run from before the check): say it now.
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert "7.080 (step 75)" in check().replay(metrics)
    # Written already: never again.
    with open(metrics, "a") as fh:
        fh.write(json.dumps({"step": 180, "warning": WARNING, "message": "..."}) + "\n")
    c = check()
    assert c.replay(metrics) is None and c.warned


@pytest.mark.parametrize(
    "method, watched", [("regioncl_m", True), ("regioncl_s", True), ("mocov2", False), ("simsiam", False)]
)
def test_only_region_methods_long_enough_are_watched(method, watched):
    from regioncl.backbones import create_encoder
    from regioncl.methods import build_method

    model = build_method(method, create_encoder("resnet10t", output_stride=8), queue_size=64)
    assert (rc.region_check(method, model, 0.15, 1000, 100) is not None) == watched
    assert rc.region_check(method, model, None, 1000, 100) is None
    assert rc.region_check(method, model, 0.15, rc.MIN_STEPS - 1, 0) is None
    if watched:  # each term against its own chance: the region row's InfoNCE also has its partner
        checks = rc.region_check(method, model, 0.15, 1000, 100).checks
        assert [c.term for c in checks] == ["loss_ins", "loss_reg"]
        expected = [math.log(65), math.log(66)] if method == "regioncl_m" else [0.0, 0.0]
        assert [c.chance for c in checks] == pytest.approx(expected)


def test_the_trainer_warns_once_in_the_log_and_in_the_metrics_and_not_again_on_resume(tmp_path, monkeypatch, caplog):
    """The wiring: each record's instance loss goes to the check; its warning goes to the log and
    to metrics.jsonl once, and a resumed run that replays it does not repeat it."""
    from regioncl.train.config import make_config
    from regioncl.train.trainer import Trainer

    seen = []

    def see(self, step, loss):  # a climb of the instance loss at step 4, whatever the tiny run's losses
        if self.term != "loss_ins":
            return None
        seen.append(step)
        if step >= 4 and not self.warned:
            self.warned = True
            return "climbing"
        return None

    monkeypatch.setattr(rc, "MIN_STEPS", 1)
    monkeypatch.setattr(RegionCheck, "see", see)
    overrides = dict(
        TINY,
        method="regioncl_m",
        max_steps=6,
        output_dir=str(tmp_path / "run"),
    )
    Trainer(make_config(overrides={**overrides, "stop_at_step": 5})).train()
    Trainer(make_config(overrides={**overrides, "resume": "latest"})).train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["message"]) for r in records if r.get("warning") == WARNING] == [(4, "climbing")]
    assert [m for m in caplog.messages if m == "climbing"] == ["climbing"]
    # every record up to the warning; the resumed run replays those and, warned already, sees no more
    assert seen == [1, 2, 3, 4, 1, 2, 3, 4]
    assert (
        Trainer(
            make_config(overrides={**overrides, "method": "mocov2", "output_dir": str(tmp_path / "m")})
        ).region_check
        is None
    )


# Real runs' records, from the studies' committed rows (each row's ``losses``: step, loss, loss_ins,
# loss_reg per logged window, and the commit that ran it): the run, its steps and warm-up, and the
# step and term of the warning it must get (None: none). RegionCL-M on the 5,000-image regime:
# Fashion-MNIST framed to half the image's area (trails MoCo v2 by 1.8 kNN points, level on the
# probe: both losses dip through the warm-up's end and fall as the lr decays) and to a quarter
# (trails by 3.8: its region loss climbs from step 95 to 152 and stays high).
REAL_RUNS = [
    # half the area: 2.09 kNN points behind MoCo v2, yet the losses dip and fall within what level
    # runs show; not warned about (the limit the method guide states)
    ("fmnist_frame", "regioncl_m_f50_5k_s0", 285, 190, None),
    ("fmnist_frame", "regioncl_m_f50_5k_s1", 285, 190, None),
    ("fmnist_frame", "regioncl_m_f25_5k_s0", 285, 190, (171, "loss_reg")),
    ("fmnist_frame", "regioncl_m_f25_5k_s1", 285, 190, (171, "loss_reg")),
    # the ramp on the same test split, every seed level with MoCo v2: not warned about
    ("fmnist_frame", "regioncl_m_ramp_f25_5k_s0", 285, 190, None),
    ("fmnist_frame", "regioncl_m_ramp_f25_5k_s1", 285, 190, None),
    ("fmnist_frame", "regioncl_m_ramp_f25_5k_s2", 285, 190, None),
    ("fmnist_frame", "regioncl_m_ramp_f50_5k_s0", 285, 190, None),
    ("fmnist_frame", "regioncl_m_ramp_f50_5k_s1", 285, 190, None),
    ("fmnist_frame", "regioncl_m_ramp_f50_5k_s2", 285, 190, None),
    # the same regime at a quarter of the area, on the holdout split: the paper's RegionCL-M and the
    # one without empty rows trail MoCo v2 by 4.2 and 4.7 kNN points and are warned about; with the
    # region weight ramped over the warm-up it is level with MoCo v2, and its region loss stays level
    ("fmnist_frame_tune", "regioncl_m_s0", 285, 190, (171, "loss_reg")),
    ("fmnist_frame_tune", "regioncl_m_content_s0", 285, 190, (171, "loss_reg")),
    ("fmnist_frame_tune", "regioncl_m_ramp_s0", 285, 190, None),
    # smaller boxes (3.8 kNN points behind MoCo v2) and the weight halved for the whole run (1.9
    # behind): the region loss still climbs, and both are warned about
    ("fmnist_frame_tune", "regioncl_m_box12_s0", 285, 190, (171, "loss_reg")),
    ("fmnist_frame_tune", "regioncl_m_weight05_s0", 285, 190, (171, "loss_reg")),
    # the ramp on plain Fashion-MNIST's small set (5,000 images, warm-up 10 epochs), ahead of MoCo v2 on
    # kNN and the probe: not warned about
    ("fmnist_5k", "regioncl_m_ramp_warmup10_s0", 285, 190, None),
    ("fmnist_5k", "regioncl_m_ramp_warmup10_s1", 285, 190, None),
    ("fmnist_5k", "regioncl_m_ramp_warmup10_s2", 285, 190, None),
    # all 60,000 images framed to a quarter of the area, 1.31 kNN points ahead of MoCo v2: both losses
    # climb in the warm-up and fall for the rest of the run; not warned about
    ("fmnist_frame", "regioncl_m_f25_s0", 702, 234, None),
    ("fmnist_frame", "regioncl_m_f25_s1", 702, 234, None),
    # the same at half the area, 1.48 kNN points ahead: the same early climb, smaller; not warned about
    ("fmnist_frame", "regioncl_m_f50_s0", 702, 234, None),
    ("fmnist_frame", "regioncl_m_f50_s1", 702, 234, None),
    # the ramp on the same 60,000 at a quarter of the area, 1.81 kNN points ahead: not warned about
    ("fmnist_frame", "regioncl_m_ramp_f25_s0", 702, 234, None),
    ("fmnist_frame", "regioncl_m_ramp_f25_s1", 702, 234, None),
    # and at half the area, 2.54 kNN points ahead: not warned about
    ("fmnist_frame", "regioncl_m_ramp_f50_s0", 702, 234, None),
    ("fmnist_frame", "regioncl_m_ramp_f50_s1", 702, 234, None),
    # the ramp on plain Fashion-MNIST's 60,000 images, 1.55 kNN points ahead of MoCo v2: not warned about
    ("fmnist", "regioncl_m_ramp_s0", 702, 234, None),
    ("fmnist", "regioncl_m_ramp_s1", 702, 234, None),
    ("fmnist", "regioncl_m_ramp_s2", 702, 234, None),
]


def study_row(study: str, run: str) -> dict:
    rows = json.loads((Path(__file__).parents[2] / "docs" / "studies" / study / "results.json").read_text())["runs"]
    return next(r for r in rows if r["run"] == run)


@pytest.mark.parametrize("study, run, steps, warmup, expected", REAL_RUNS)
def test_real_runs_are_warned_about_when_their_losses_climb(study, run, steps, warmup, expected):
    from regioncl.backbones import create_encoder
    from regioncl.methods import build_method

    row = study_row(study, run)
    assert row["steps"] == steps and len(row["losses"]) >= 15
    model = build_method("regioncl_m", create_encoder("resnet10t", output_stride=8), queue_size=4096)
    watch = rc.region_check("regioncl_m", model, 0.15, total_steps=steps, warmup_steps=warmup)
    said = []
    for step, _, loss_ins, loss_reg in row["losses"]:
        message = watch.see({"step": step, "loss_ins": loss_ins, "loss_reg": loss_reg})
        if message:
            said.append((step, message))
    if expected is None:
        assert said == []
    else:
        step, term = expected
        assert [s for s, _ in said] == [step] and rc.TERMS[term][0] in said[0][1]


def test_the_instance_term_alone_warns_on_a_grafted_climb():
    """A real run's instance loss (framed to half the area), with the held-out set's climb grafted on
    after step 95: the instance term warns, on its own records."""
    row = study_row("fmnist_frame", "regioncl_m_f50_5k_s0")
    steps = [r[0] for r in row["losses"]]
    level = [r[2] for r in row["losses"]]
    climbing = level[:6] + [level[5] + 0.08 * i for i in range(1, 11)]
    assert steps[5] == 95
    check = RegionCheck("regioncl_m", "mocov2", CHANCE, start_step=95, span=285 // 20)
    # lowest 6.7354 at step 95 (the first counted); 6.7354 + 0.15 · (log 4097 − 6.7354) = 6.973, passed
    # at step 152; the third record above it, at step 190, warns
    assert [s for s, v in zip(steps, climbing) if check.see(s, v)] == [190]
