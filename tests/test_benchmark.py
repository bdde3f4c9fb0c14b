"""The benchmark's machinery: speed options never change the method; lightly's steps are real steps."""

import copy

import pytest
import torch

from regioncl import build_method, create_encoder
from regioncl.benchmark import compare_lightly, format_compare
from regioncl.compare_lightly import LIGHTLY_METHODS, lightly_step


def _needs_lightly():
    pytest.importorskip("lightly", reason="the lightly comparison needs regioncl[bench]")


@pytest.mark.parametrize("name", ["mocov2", "regioncl_m", "densecl", "simsiam"])
def test_channels_last_step_equals_the_plain_step(name):
    """Two SGD steps in channels_last (the fast layout) and in the contiguous one: the same
    losses (relative 1e-4) and the same parameters after (absolute 1e-5), momentum encoder,
    queue and BN statistics included."""
    torch.manual_seed(0)
    plain = build_method(name, create_encoder("resnet18", output_stride=8), queue_size=32, hidden_dim=64, dim=16,
                         pred_dim=16, bn_groups=1)
    fast = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    batches = [[torch.randn(4, 3, 32, 32, generator=g) for _ in range(2)] for _ in range(2)]
    losses = {}
    for label, model in (("plain", plain), ("fast", fast)):
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
        losses[label] = []
        for step, views in enumerate(batches):
            if label == "fast":
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            loss = model(*views, step=step)["loss"]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses[label].append(loss.item())
    assert losses["plain"] == pytest.approx(losses["fast"], rel=1e-4)
    fast_state = fast.state_dict()
    for key, value in plain.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, fast_state[key], atol=1e-5), key
        else:
            assert torch.equal(value, fast_state[key]), key


@pytest.mark.parametrize("method", LIGHTLY_METHODS)
def test_lightly_step_trains_and_updates_its_momentum_branch(method):
    """The comparison times real work: a finite loss, a gradient step that moves the online
    backbone, and (MoCo v2, DenseCL) the momentum backbone following it."""
    _needs_lightly()
    torch.manual_seed(0)
    model, loss_fn = lightly_step(method, "resnet18", {"output_stride": 8}, queue_size=32)
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(4, 3, 32, 32, generator=g) for _ in range(2)]
    online = [p.detach().clone() for p in model.backbone.parameters()]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        loss = loss_fn(*views)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert any(not torch.equal(a, b) for a, b in zip(online, model.backbone.parameters()))
    if method != "simsiam":
        momentum = list(model.backbone_momentum.parameters())
        assert all(not p.requires_grad for p in momentum)
        assert any(not torch.equal(a, b) for a, b in zip(online, momentum))


def test_compare_lightly_gives_a_row_per_method():
    _needs_lightly()
    rows = compare_lightly(["mocov2", "simsiam"], "resnet18", {"output_stride": 8}, image_size=32, batch_size=4,
                           steps=1, warmup=0, queue_size=16, lightly_channels_last=False)
    assert [r.method for r in rows] == ["mocov2", "simsiam"]
    assert all(r.ours_ms > 0 and r.lightly_ms > 0 and r.lightly_cl_ms is None for r in rows)
    assert format_compare(rows).count("\n") == 3
    with pytest.raises(ValueError, match="no lightly counterpart"):
        lightly_step("regioncl_m", "resnet18")


def test_counted_flops_match_the_backbone_pass_units():
    """Counted step FLOPs agree with FLOP_UNITS (MoCo v2: query forward + backward + key forward = 4
    forward passes; RegionCL-M 7; SimSiam 6), within what the heads and the first layer's missing
    input gradient move them, and the table reports them."""
    from torch.utils.flop_counter import FlopCounterMode

    from regioncl.benchmark import FLOP_UNITS, benchmark, format_table

    encoder = create_encoder("resnet18")
    with FlopCounterMode(display=False) as counter:
        encoder(torch.randn(4, 3, 64, 64))
    forward = counter.get_total_flops()
    rows = benchmark(["mocov2", "regioncl_m", "simsiam"], "resnet18", {}, image_size=64, batch_size=4, steps=1,
                     warmup=0, queue_size=16, matmul_peak=1e12)
    for row in rows:
        units = row.gflop_per_step * 1e9 / forward
        assert FLOP_UNITS[row.method] - 0.4 < units < FLOP_UNITS[row.method] + 0.3, (row.method, units)
        assert 0 < row.peak_fraction
    table = format_table(rows)
    assert "regioncl_m" in table and "of matmul peak" in table
