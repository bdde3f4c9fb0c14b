import pytest
import torch

from regioncl import build_method, create_encoder


def small(name="regioncl_m", **kw):
    torch.manual_seed(0)
    args = dict(queue_size=32, hidden_dim=64, dim=16, momentum=0.9, bn_groups=2)
    args.update(kw)
    return build_method(name, create_encoder("resnet18", output_stride=8), **args)


def views(b=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, size, size, generator=g), torch.randn(b, 3, size, size, generator=g)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown method 'byol'"):
        build_method("byol", create_encoder("resnet18"))


def test_mocov2_has_no_region_loss_and_regioncl_m_has_one():
    xq, xk = views()
    assert "loss_reg" not in small("mocov2")(xq, xk)
    out = small("regioncl_m")(xq, xk)
    assert torch.allclose(out["loss"], out["loss_ins"] + out["loss_reg"])


def test_gradients_reach_the_online_branch_only():
    m = small()
    queue_before = m.queue.keys.clone()
    xq, xk = views()
    out = m(xq, xk)
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.projector.parameters())
    assert m.encoder.model.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.key_encoder.parameters())
    assert all(p.grad is None for p in m.key_projector.parameters())
    assert not m.queue.keys.requires_grad
    # The queue now holds this step's keys, in place, and backward still worked on the snapshot.
    assert not torch.equal(m.queue.keys[:4], queue_before[:4])
    assert torch.equal(m.queue.keys[4:], queue_before[4:])


def test_region_loss_gradient_reaches_the_composite_pass():
    """L_reg alone must train the encoder through the composite forward (paste and canvas)."""
    m = small()
    xq, xk = views()
    m(xq, xk, step=0)["loss_reg"].backward()
    assert m.encoder.model.conv1.weight.grad.abs().sum() > 0


def test_enqueued_keys_are_the_momentum_keys():
    m = small("mocov2")
    xq, xk = views()
    m(xq, xk, step=5)
    # Recompute the keys of step 5 with the same shuffle: they are what was enqueued.
    with torch.no_grad():
        k = m.keys(xk, step=5)
    assert torch.allclose(m.queue.keys[:4], k, atol=1e-6)


def test_momentum_update_moves_keys_towards_online():
    m = small(momentum=0.5)
    with torch.no_grad():
        for p in m.projector.parameters():
            p.add_(1.0)
    before = [p.clone() for p in m.key_projector.parameters()]
    m.momentum_update()
    for b, k, o in zip(before, m.key_projector.parameters(), m.projector.parameters()):
        assert torch.allclose(k, 0.5 * b + 0.5 * o)


def test_same_step_same_result_and_different_steps_differ():
    xq, xk = views()
    a = small()(xq, xk, step=3)["loss"]
    b = small()(xq, xk, step=3)["loss"]
    c = small()(xq, xk, step=4)["loss"]
    assert a.item() == b.item()
    assert a.item() != c.item()


def test_bn_groups_give_keys_their_own_statistics():
    """With bn_groups=2 each half of the shuffled key batch is normalised on its own."""
    xq, xk = views(b=8)
    one = small("mocov2", bn_groups=1).keys(xk, step=0)
    two = small("mocov2", bn_groups=2).keys(xk, step=0)
    assert one.shape == two.shape == (8, 16)
    assert not torch.allclose(one, two, atol=1e-4)


def test_checks_refuse_bad_settings_before_compute():
    m = small()
    with pytest.raises(ValueError, match="multiple of the output stride"):
        m.check(30, 4, 1)
    with pytest.raises(ValueError, match="at least 2 images per process"):
        m.check(32, 1, 1)
    with pytest.raises(ValueError, match="not a multiple of the global batch"):
        m.check(32, 6, 1)
    with pytest.raises(ValueError, match="bn_groups"):
        small(bn_groups=4, queue_size=36).check(32, 6, 1)
    with pytest.raises(ValueError, match="2×2 cells"):
        small().check(8, 4, 1)
