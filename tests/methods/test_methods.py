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


@pytest.mark.slow
def test_mocov2_has_no_region_loss_and_regioncl_m_has_one():
    xq, xk = views()
    assert "loss_reg" not in small("mocov2")(xq, xk)
    out = small("regioncl_m")(xq, xk)
    assert torch.allclose(out["loss"], out["loss_ins"] + out["loss_reg"])


@pytest.mark.slow
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


@pytest.mark.slow
def test_region_loss_gradient_reaches_the_composite_pass():
    """L_reg alone must train the encoder through the composite forward (paste and canvas)."""
    m = small()
    xq, xk = views()
    m(xq, xk, step=0)["loss_reg"].backward()
    assert m.encoder.model.conv1.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_enqueued_keys_are_the_momentum_keys():
    m = small("mocov2")
    xq, xk = views()
    m(xq, xk, step=5)
    # Recompute the keys of step 5 with the same shuffle: they are what was enqueued.
    with torch.no_grad():
        k = m.keys(xk, step=5)["k"]
    assert torch.allclose(m.queue.keys[:4], k, atol=1e-6)


@pytest.mark.parametrize(
    "name,online,key",
    [
        ("regioncl_m", "projector", "key_projector"),
        ("regioncl_m", "encoder", "key_encoder"),
        ("densecl", "dense_projector", "key_dense_projector"),
    ],
)
@pytest.mark.slow
def test_momentum_update_moves_keys_towards_online(name, online, key):
    m = small(name, momentum=0.5)
    with torch.no_grad():
        for p in getattr(m, online).parameters():
            p.add_(1.0)
    before = [p.clone() for p in getattr(m, key).parameters()]
    m.momentum_update()
    for b, k, o in zip(before, getattr(m, key).parameters(), getattr(m, online).parameters()):
        assert torch.allclose(k, 0.5 * b + 0.5 * o)


@pytest.mark.slow
def test_same_step_same_result_and_different_steps_differ():
    xq, xk = views()
    a = small()(xq, xk, step=3)["loss"]
    b = small()(xq, xk, step=3)["loss"]
    c = small()(xq, xk, step=4)["loss"]
    assert a.item() == b.item()
    assert a.item() != c.item()


@pytest.mark.slow
def test_bn_groups_give_keys_their_own_statistics():
    """With bn_groups=2 each half of the shuffled key batch is normalised on its own."""
    xq, xk = views(b=8)
    one = small("mocov2", bn_groups=1).keys(xk, step=0)["k"]
    two = small("mocov2", bn_groups=2).keys(xk, step=0)["k"]
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


# ---------------------------------------------------------------- every method

from regioncl.methods import METHODS  # noqa: E402


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.slow
def test_every_method_backpropagates_to_the_online_encoder_only(name):
    m = small(name, pred_dim=8)
    xq, xk = views()
    out = m(xq, xk, step=1)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert m.encoder.model.conv1.weight.grad.abs().sum() > 0
    for module_name in ("key_encoder", "key_projector", "key_dense_projector"):
        if hasattr(m, module_name):
            assert all(p.grad is None for p in getattr(m, module_name).parameters()), module_name
    assert ("loss_reg" in out) == (m.region is not None)


def test_region_weights_default_per_method_and_can_be_set():
    assert small("regioncl_m").region_weight == 1.0
    assert small("regioncl_d").region_weight == 0.5  # 1 − λ, our choice (SPEC §4)
    assert small("regioncl_d", dense_weight=0.3).region_weight == pytest.approx(0.7)
    assert small("regioncl_s", pred_dim=8).region_weight == 1.0
    assert build_method("regioncl_d", create_encoder("resnet18"), region_weight=2.0, queue_size=32).region_weight == 2.0


@pytest.mark.slow
def test_densecl_loss_is_the_weighted_sum_and_both_queues_fill():
    m = small("regioncl_d")
    dense_before = m.dense_queue.keys.clone()
    out = m(*views(), step=0)
    assert torch.allclose(out["loss"], 0.5 * out["loss_ins"] + 0.5 * out["loss_dense"] + 0.5 * out["loss_reg"])
    assert int(m.queue.ptr) == 4 and int(m.dense_queue.ptr) == 4
    assert not torch.equal(m.dense_queue.keys[:4], dense_before[:4])
    assert torch.allclose(m.dense_queue.keys[:4].norm(dim=1), torch.ones(4), atol=1e-5)


def test_simsiam_loss_of_identical_branches_is_minus_one_and_z_std_is_reported():
    m = small("simsiam", pred_dim=8)
    # An identity predictor and the same view twice: D(z, sg(z)) = -1 exactly.
    m.predictor = torch.nn.Identity()
    x, _ = views()
    out = m(x, x)
    assert out["loss_ins"].item() == pytest.approx(-1.0, abs=1e-5)
    assert 0 < out["z_std"].item() <= 1


def test_simsiam_predictor_is_its_own_param_group():
    m = small("regioncl_s", pred_dim=8)
    groups = m.param_groups(fix_predictor_lr=True)
    assert groups[1]["fix_lr"] is True
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in m.predictor.parameters()}
    assert sum(len(g["params"]) for g in groups) == len([p for p in m.parameters() if p.requires_grad])


@pytest.mark.slow
def test_noswap_paste_feature_does_not_see_the_canvas_image():
    """Without swapping, paste row i is encoded on a zero image: changing image i (its canvas
    source) leaves it unchanged. With swapping the composite's receptive fields mix both."""
    xq, _ = views()
    for name, independent in (("regioncl_m_noswap", True), ("regioncl_m", False)):
        m = small(name).eval()  # eval: BN does not couple the images of the batch
        a = m.region.features(m.encoder, xq, m.step_generator(0, "swap"))
        changed = xq.clone()
        changed[0] += 5.0  # image 0 is composite 0's canvas, never its paste source
        b = m.region.features(m.encoder, changed, m.step_generator(0, "swap"))
        assert torch.allclose(a.paste[0], b.paste[0], atol=1e-5) == independent, name
        assert not torch.allclose(a.canvas[0], b.canvas[0], atol=1e-5)


def test_keys_equal_the_key_branch_applied_image_by_image():
    """With BN in eval mode the key of image i must be the key branch of image i alone:
    catches a shuffle that is not undone, or undone with the wrong permutation."""
    m = small("mocov2", bn_groups=2)
    m.key_encoder.eval()
    _, xk = views(b=8)
    keys = m.keys(xk, step=3)["k"]
    with torch.no_grad():
        direct = torch.nn.functional.normalize(m.key_projector(m.key_encoder(xk).mean((2, 3))), dim=1)
    assert torch.allclose(keys, direct, atol=1e-5)


def test_misspelled_method_argument_is_refused():
    with pytest.raises(TypeError, match="queue_sise"):
        build_method("mocov2", create_encoder("resnet18"), queue_sise=32)


def test_region_weight_ramps_over_the_warm_up_like_the_learning_rate():
    m = small("regioncl_m")
    assert [m.region_weight_at(s) for s in range(3)] == [1.0, 1.0, 1.0]  # the paper's: no ramp
    m.region_ramp_steps = 4
    assert [m.region_weight_at(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    d = small("regioncl_d")
    d.region_ramp_steps = 2
    assert [d.region_weight_at(s) for s in range(3)] == [0.25, 0.5, 0.5]  # of RegionCL-D's 1 − λ
    m.region_ramp_steps = 4
    out = m(*views(), step=1)
    assert torch.allclose(out["loss"], out["loss_ins"] + 0.5 * out["loss_reg"])


def test_region_rows_without_content_are_left_out_of_the_region_loss():
    from regioncl.region import RegionCL

    g = torch.Generator().manual_seed(0)
    canvas, paste, targets = (torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=1) for _ in range(3))
    canvas.requires_grad_(True)
    perm = torch.tensor([1, 2, 0])

    def per_row_loss(rows, positives, partners):  # a stand-in pair loss whose rows are told apart
        return (rows * positives).sum(1).mean() + 0.0 * partners.sum()

    keep = torch.tensor([True, False, True, False, False, True])
    got = RegionCL.loss(per_row_loss, canvas, paste, targets, perm, keep)
    rows, positives, _ = RegionCL.rows(canvas, paste, targets, perm)
    assert torch.allclose(got, (rows * positives).sum(1)[keep].mean())
    assert torch.allclose(RegionCL.loss(per_row_loss, canvas, paste, targets, perm), (rows * positives).sum(1).mean())
    nothing = RegionCL.loss(per_row_loss, canvas, paste, targets, perm, torch.zeros(6, dtype=torch.bool))
    nothing.backward()
    assert float(nothing.detach()) == 0.0 and torch.equal(canvas.grad, torch.zeros_like(canvas))


@pytest.mark.slow
def test_min_content_keeps_the_rows_whose_pixels_hold_content():
    """Four plain images and four with an object: every row of a plain image is left out, and with
    a threshold of 0 (the paper's) every row stays."""
    from regioncl.region import row_content

    xq, xk = views(b=8)
    xq[:4] = -1.0  # flat: no content anywhere
    m = small("regioncl_m", region_min_content=0.01)
    _, _, region = m.online_features(xq, step=0)
    content = row_content(xq, region.box.pixel_slices(m.encoder.stride), region.perm)
    assert torch.equal(region.keep, content >= 0.01)
    assert not region.keep[:4].any() and region.keep[4:8].all()  # canvases: plain images, then noise
    assert torch.equal(region.keep[8:], region.perm >= 4)  # pastes come from image π(i)
    assert small("regioncl_m").online_features(xq, step=0)[2].keep is None
    with pytest.raises(ValueError, match=r"method.region_min_content must be in \[0, 1\)"):
        small("regioncl_m", region_min_content=1.0)
