"""The warning that RegionCL works against the instance objective (regioncl.train.region_check)."""

import json
import math

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
    if watched:
        chance = rc.region_check(method, model, 0.15, 1000, 100).chance
        assert chance == (pytest.approx(math.log(65)) if method == "regioncl_m" else 0.0)


def test_the_trainer_warns_once_in_the_log_and_in_the_metrics_and_not_again_on_resume(tmp_path, monkeypatch, caplog):
    """The wiring: each record's instance loss goes to the check; its warning goes to the log and
    to metrics.jsonl once, and a resumed run that replays it does not repeat it."""
    from regioncl.train.config import make_config
    from regioncl.train.trainer import Trainer

    seen = []

    def see(self, step, loss):  # a climb at step 4, whatever the tiny run's losses
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
    assert seen[:5] == [1, 2, 3, 4, 5] and seen[-1] == 6  # every record, and the resumed run's too
    assert (
        Trainer(
            make_config(overrides={**overrides, "method": "mocov2", "output_dir": str(tmp_path / "m")})
        ).region_check
        is None
    )


# A real run's records: RegionCL-M on Fashion-MNIST framed to half the image's area, 5,000 images,
# 285 steps, warm-up 190 (studies/fmnist_frame.yaml, regioncl_m_f50_5k seed 0, commit 50dcef8). Its
# instance loss dips, rises by 0.14 through the warm-up's end and falls as the lr decays: no climb.
REAL_STEPS = [19, 38, 57, 76, 85, 95, 114, 133, 152, 171, 190, 209, 228, 247, 266, 285]
REAL_LEVEL = [
    7.261,
    7.662,
    6.772,
    6.659,
    6.69,
    6.735,
    6.775,
    6.799,
    6.769,
    6.712,
    6.663,
    6.583,
    6.502,
    6.433,
    6.378,
    6.334,
]


def test_a_real_run_without_a_climb_is_not_warned_about():
    from regioncl.backbones import create_encoder
    from regioncl.methods import build_method

    model = build_method("regioncl_m", create_encoder("resnet10t", output_stride=8), queue_size=4096)
    c = rc.region_check("regioncl_m", model, 0.15, total_steps=285, warmup_steps=190)
    assert c.chance == pytest.approx(CHANCE) and c.start_step == 95
    assert not any(c.see(step, loss) for step, loss in zip(REAL_STEPS, REAL_LEVEL))
    # the same records with the held-out set's climb after step 95 are warned about
    c = rc.region_check("regioncl_m", model, 0.15, total_steps=285, warmup_steps=190)
    climbing = REAL_LEVEL[:6] + [6.735 + 0.08 * i for i in range(1, 11)]
    # lowest 6.735 at step 95 (the first counted); 6.735 + 0.15 · (log 4097 − 6.735) = 6.972, passed at
    # step 152; the third record above it, at step 190, warns
    assert [s for s, v in zip(REAL_STEPS, climbing) if c.see(s, v)] == [190]
