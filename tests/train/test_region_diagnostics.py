"""run.diagnose_every: what the region task does to the encoder, measured without changing the run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_run import TINY as TINY_RUN

from regioncl.errors import UserError
from regioncl.region import content_mask, row_content
from regioncl.train.region_diagnostics import EMPTY_BELOW


def object_on_plain_ground(size: int = 16, top: int = 4, left: int = 6, side: int = 4, ground: float = -1.0):
    """One (3, S, S) image: a plain background with a textured square object."""
    img = torch.full((3, size, size), ground)
    img[:, top : top + side, left : left + side] = torch.linspace(0.5, 2.0, side * side).view(1, side, side)
    return img


def test_content_is_the_object_and_a_flat_image_has_none():
    images = torch.stack([object_on_plain_ground(), torch.full((3, 16, 16), 0.7)])
    mask = content_mask(images)
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[4:8, 6:10] = True
    assert torch.equal(mask[0], expected)
    assert not mask[1].any()


def test_row_content_reads_the_canvas_of_image_i_and_the_paste_of_image_perm_i():
    # image 0: object inside the box; image 1: object outside it; image 2: nothing
    box = (slice(0, 8), slice(0, 8))
    images = torch.stack(
        [object_on_plain_ground(top=2, left=2), object_on_plain_ground(top=10, left=10), torch.zeros(3, 16, 16)]
    )
    perm = torch.tensor([1, 2, 0])
    content = row_content(images, box, perm)
    canvas, paste = content[:3], content[3:]
    outside, inside = 16 * 16 - 64, 64
    assert canvas.tolist() == pytest.approx([0.0, 16 / outside, 0.0])
    assert paste.tolist() == pytest.approx([0.0, 0.0, 16 / inside])  # the boxes of images 1, 2 and 0
    assert (content < EMPTY_BELOW).tolist() == [True, False, True, True, True, False]


TINY = dict(TINY_RUN, backbone_args={"output_stride": 8}, image_size=32, checkpoint_every=100, max_steps=4, seed=0)


def _run(tmp_path, name, **kw):
    from safetensors.torch import load_file

    from regioncl.train.config import make_config
    from regioncl.train.trainer import Trainer

    out = tmp_path / name
    Trainer(make_config(overrides={**TINY, "output_dir": str(out), **kw})).train()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return records, load_file(str(out / "encoder.safetensors"))


REMEDIES = {"region_min_content": 0.3, "region_warmup": True}


@pytest.mark.parametrize("method, options", [("regioncl_m", {}), ("regioncl_d", {}), ("regioncl_m", REMEDIES)])
@pytest.mark.slow
def test_diagnostics_measure_the_step_they_precede_and_change_nothing(tmp_path, method, options):
    plain, plain_weights = _run(tmp_path, "plain", method=method, **options)
    seen, seen_weights = _run(tmp_path, "seen", method=method, diagnose_every=2, **options)
    losses = {r["step"]: r for r in seen if "loss" in r}

    def loss_records(records):  # the records also hold timings, which differ
        return [{k: v for k, v in r.items() if k.startswith("loss") or k == "step"} for r in records if "loss" in r]

    assert loss_records(plain) == loss_records(seen) and len(loss_records(plain)) == 4
    assert plain_weights.keys() == seen_weights.keys()
    assert all(torch.equal(plain_weights[k], seen_weights[k]) for k in plain_weights)

    diagnostics = [r for r in seen if "diag_grad_ins" in r]
    assert [r["step"] for r in diagnostics] == [2, 4]
    for d in diagnostics:
        step = losses[d["step"]]
        # the step's own forward pass: the losses it logged for that step (DenseCL's global term)
        assert d["diag_loss_ins"] == pytest.approx(step["loss_ins"], rel=1e-5)
        assert d["diag_loss_reg"] == pytest.approx(step["loss_reg"], rel=1e-5)
        # the region weight ramps as the lr does (all four steps are in the warm-up)
        ramp = step["lr"] / TINY["lr"] if options.get("region_warmup") else 1.0
        assert d["diag_region_weight"] == pytest.approx(ramp * (0.5 if method == "regioncl_d" else 1.0), rel=1e-6)
        assert (d["diag_kept"] < 1.0) == ("region_min_content" in options)
        assert d["diag_chance"] == pytest.approx(math.log(32 + 2))
        assert d["diag_grad_ins"] > 0 and d["diag_grad_reg"] > 0
        assert -1.0 <= d["diag_grad_cos"] <= 1.0
        assert math.isfinite(d["diag_bn_gap"]) and d["diag_bn_gap"] > 0  # composites are other images
        assert 0.0 <= d["diag_empty_paste"] <= 1.0 and 0.0 <= d["diag_empty_canvas"] <= 1.0
        rows = [v for v in (d["diag_loss_reg_empty"], d["diag_loss_reg_content"]) if v is not None]
        if "region_min_content" not in options:  # L_reg is then the mean of the two groups' rows
            assert rows and min(rows) <= d["diag_loss_reg"] + 1e-5 and max(rows) >= d["diag_loss_reg"] - 1e-5


def test_batch_stats_gap_is_the_shift_of_the_means_in_units_of_the_first_calls_std():
    from regioncl.train.region_diagnostics import BatchStats

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3))
    stats = BatchStats(net)
    x = torch.randn(64, 3, 8, 8)
    net(x)
    assert stats.gap() is None  # one call: nothing to compare
    net(x)
    assert stats.gap() == pytest.approx(0.0, abs=1e-6)  # the same batch: the same statistics
    # a batch shifted by two of its standard deviations, in every channel: the first layer sees a gap
    # of 2; the second, after a 1x1 convolution of normalised inputs, exactly 0 (the first layer
    # normalises the shift away), so the mean over the layers is 1, and over the two later calls 0.5
    sd = x.var((0, 2, 3), unbiased=False).sqrt().view(1, 3, 1, 1)
    net(x + 2 * sd)
    assert stats.gap() == pytest.approx(0.5, rel=1e-3)
    stats.remove()
    net(x)
    assert len(stats.calls) == 3  # removed: no longer recorded


def test_diagnostics_are_refused_for_a_method_without_a_region_loss(tmp_path):
    from regioncl.train.config import make_config
    from regioncl.train.trainer import Trainer

    for method in ("mocov2", "regioncl_s"):
        cfg = make_config(
            overrides={**TINY, "output_dir": str(tmp_path / method), "method": method, "diagnose_every": 2}
        )
        with pytest.raises(UserError, match="run.diagnose_every measures the region loss of RegionCL-M and -D"):
            Trainer(cfg)
        assert not (tmp_path / method).exists()
    with pytest.raises(UserError, match="run.diagnose_every must be >= 0"):
        make_config(overrides={**TINY, "method": "regioncl_m", "diagnose_every": -1})
