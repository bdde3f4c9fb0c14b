"""The benchmark's machinery: speed options never change the method; lightly's steps are real steps."""

import copy
from pathlib import Path

import pytest
import torch

from benchmarks.against_lightly import LIGHTLY_METHODS, lightly_step
from benchmarks.steps import Setup, compare_lightly, format_compare
from regioncl import build_method, create_encoder

ROOT = Path(__file__).resolve().parents[2]


def _needs_lightly():
    pytest.importorskip("lightly", reason="the lightly comparison needs regioncl[bench]")


def _two_steps(model: torch.nn.Module, channels_last: bool) -> list[float]:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    losses = []
    for step in range(2):
        views = [torch.randn(4, 3, 32, 32, generator=g) for _ in range(2)]
        if channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        loss = model(*views, step=step)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def _assert_same_updates(before: dict, a: torch.nn.Module, b: torch.nn.Module, tol: float) -> None:
    """Same state keys; every float tensor moved by the same update to within ``tol`` of that
    tensor's largest update and a few ulps (floating-point reordering is all that may differ);
    the rest equal."""
    theirs = b.state_dict()
    assert list(theirs) == list(a.state_dict())  # compile in place keeps the keys
    for key, value in a.state_dict().items():
        if value.is_floating_point():
            ours_update, their_update = value - before[key], theirs[key] - before[key]
            # plus a few float32 ulps of the values (an update near an ulp rounds either way) and
            # 1e-7 (a BN running mean of zero-mean inputs is rounding noise of that size)
            allowed = tol * ours_update.abs().max() + 8 * torch.finfo(value.dtype).eps * value.abs().max() + 1e-7
            assert (ours_update - their_update).abs().max() <= allowed, key
        else:
            assert torch.equal(value, theirs[key]), key


def _small(name: str, backbone: str = "resnet18") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_method(
        name, create_encoder(backbone, output_stride=8), queue_size=32, hidden_dim=64, dim=16, pred_dim=16, bn_groups=1
    )


@pytest.mark.parametrize("name", ["mocov2", "regioncl_m", "densecl", "simsiam"])
@pytest.mark.slow
def test_channels_last_step_equals_the_plain_step(name):
    """Two SGD steps in channels_last (the fast layout) and in the contiguous one: the same
    losses (relative 1e-4, or 1e-5 absolute: SimSiam's loss, a mean of cosines, can be near 0,
    where a rounding difference of a few 1e-6 is far larger than 1e-4 of it) and the same updates
    of every parameter and buffer (to 10 % of the tensor's largest update: SimSiam's batch-of-4 BN
    amplifies summation-order differences to 2.5 % in its deepest layers, 5.3 % in its first with
    torch 2.4's kernels; a real difference is of the order of the update itself), momentum
    encoder, queue and BN statistics included."""
    plain = _small(name)
    fast = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    before = copy.deepcopy(plain.state_dict())
    assert _two_steps(plain, False) == pytest.approx(_two_steps(fast, True), rel=1e-4, abs=1e-5)
    _assert_same_updates(before, plain, fast, tol=1e-1)


@pytest.mark.slow
def test_compiled_step_equals_the_eager_step():
    """``--compile`` (the encoders compiled in place) gives RegionCL-M the eager losses (relative
    1e-4) and updates (to 1 % of each tensor's largest) over two steps; the composite pass and
    the key encoder go through the compiled encoders too."""
    from regioncl.backbones import compile_encoders

    eager = _small("regioncl_m", "resnet10t")
    compiled = copy.deepcopy(eager)
    before = copy.deepcopy(eager.state_dict())
    assert compile_encoders(compiled) == 2  # online and key encoder
    assert _two_steps(eager, False) == pytest.approx(_two_steps(compiled, False), rel=1e-4)
    _assert_same_updates(before, eager, compiled, tol=1e-2)


@pytest.mark.parametrize("method", LIGHTLY_METHODS)
@pytest.mark.slow
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
        banks = [b for name, b in model.named_buffers() if "criterion" in name]
        assert banks  # the memory banks are the model's: they follow it to the device
        momentum = list(model.backbone_momentum.parameters())
        assert all(not p.requires_grad for p in momentum)
        assert any(not torch.equal(a, b) for a, b in zip(online, momentum))


@pytest.mark.slow
def test_compare_lightly_gives_a_row_per_method():
    _needs_lightly()
    setup = Setup("resnet18", {"output_stride": 8}, image_size=32, batch_size=4, steps=1, warmup=0, queue_size=16)
    rows = compare_lightly(["mocov2", "simsiam"], setup, sides=["lightly"])
    assert [r.method for r in rows] == ["mocov2", "simsiam"]
    assert all(set(r.timings) == {"ours", "lightly"} and r.ms("ours") > 0 and r.ms("lightly") > 0 for r in rows)
    assert all(len(t.seconds) == len(t.faults) == 1 for r in rows for t in r.timings.values())
    assert format_compare(rows).count("\n") == 3
    with pytest.raises(ValueError, match="no lightly counterpart"):
        lightly_step("regioncl_m", "resnet18")
    with pytest.raises(ValueError, match="a process of its own"):
        compare_lightly(["mocov2"], setup, sides=["ours_glibc"])


@pytest.mark.slow
def test_compare_lightly_in_processes_runs_every_side():
    """Each side in a child process of its own (its allocator setting there): every side's
    steps come back, a repeated side is run once."""
    _needs_lightly()
    setup = Setup("resnet10t", {}, image_size=32, batch_size=4, steps=2, warmup=1, queue_size=16)
    rows = compare_lightly(["mocov2"], setup, sides=["lightly", "ours_glibc", "lightly"], processes=1)
    assert [r.method for r in rows] == ["mocov2"]
    assert list(rows[0].timings) == ["ours", "lightly", "ours_glibc"]
    assert all(len(t.seconds) == len(t.faults) == 2 and min(t.seconds) > 0 for t in rows[0].timings.values())
    assert "regioncl, glibc defaults ms / step" in format_compare(rows)


@pytest.mark.slow
def test_compare_layouts_times_both():
    from benchmarks.steps import compare_layouts

    setup = Setup("resnet18", {"output_stride": 8}, image_size=32, batch_size=4, steps=1, warmup=0, queue_size=16)
    rows = compare_layouts(["mocov2"], setup)
    assert len(rows) == 1 and rows[0][0] == "mocov2" and rows[0][1] > 0 and rows[0][2] > 0


@pytest.mark.slow
def test_counted_flops_match_the_backbone_pass_units():
    """Counted step FLOPs agree with FLOP_UNITS (MoCo v2: query forward + backward + key forward = 4
    forward passes; RegionCL-M 7; SimSiam 6), within what the heads and the first layer's missing
    input gradient move them, and the table reports them."""
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.steps import FLOP_UNITS, benchmark, format_table

    encoder = create_encoder("resnet18")
    with FlopCounterMode(display=False) as counter:
        encoder(torch.randn(4, 3, 64, 64))
    forward = counter.get_total_flops()
    setup = Setup("resnet18", {}, image_size=64, batch_size=4, steps=1, warmup=0, queue_size=16)
    rows = benchmark(["mocov2", "regioncl_m", "simsiam"], setup, matmul_peak=1e12)
    # SimSiam's 2048-wide projector and predictor weigh about half a pass at this size.
    heads = {"mocov2": 0.3, "regioncl_m": 0.3, "simsiam": 1.0}
    for row in rows:
        units = row.gflop_per_step * 1e9 / forward
        assert FLOP_UNITS[row.method] - 0.4 < units < FLOP_UNITS[row.method] + heads[row.method], (row.method, units)
        assert 0 < row.peak_fraction
    table = format_table(rows)
    assert "regioncl_m" in table and "of matmul peak" in table


def test_startup_benchmark_times_each_command_from_each_copy(tmp_path):
    from benchmarks.startup import format_startup_table, startup_times

    times = startup_times([str(ROOT)], commands=[("--help",), ("knn", "--help")], rounds=2)
    assert sorted(times) == [(str(ROOT), ("--help",)), (str(ROOT), ("knn", "--help"))]
    assert all(len(t) == 2 and all(0 < s < 60 for s in t) for t in times.values())
    table = format_startup_table(times)
    assert "`regioncl knn --help`" in table and table.count("\n") == 3
