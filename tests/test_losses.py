import math

import pytest
import torch
import torch.nn.functional as F

from regioncl.losses import info_nce
from regioncl.region import RegionCL
from regioncl.swapping import region_swap


def unit(*shape):
    return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


def reference_info_nce(q, k, queue, t, extra=None):
    """Row by row, straight from the formula: -log exp(q·k/t) / Σ exp(logits/t)."""
    total = 0.0
    for i in range(q.shape[0]):
        logits = [q[i] @ k[i]] + ([q[i] @ extra[i]] if extra is not None else []) + [q[i] @ n for n in queue]
        logits = torch.stack(logits) / t
        total = total - (logits[0] - torch.logsumexp(logits, 0))
    return total / q.shape[0]


@pytest.mark.parametrize("with_extra", [False, True])
def test_info_nce_matches_reference(with_extra):
    torch.manual_seed(0)
    q, k, queue, extra = unit(6, 8), unit(6, 8), unit(10, 8), unit(6, 8)
    got = info_nce(q, k, queue, 0.2, extra if with_extra else None)
    want = reference_info_nce(q.float(), k.float(), queue.float(), 0.2, extra.float() if with_extra else None)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_info_nce_of_uninformative_logits_is_log_of_count():
    q = torch.zeros(3, 4)
    assert info_nce(q, q, torch.zeros(7, 4), 0.2).item() == pytest.approx(math.log(8), rel=1e-6)


def region_loss_reference(c, p, k, perm, queue, t):
    """SPEC §3 by hand: canvas row i → k_i with sg(p_i); paste row i → k_π(i) with sg(c_i); mean of 2B rows."""
    rows = []
    for i in range(c.shape[0]):
        rows.append(reference_info_nce(c[i : i + 1], k[i : i + 1], queue, t, p[i : i + 1].detach()))
        rows.append(reference_info_nce(p[i : i + 1], k[perm[i] : perm[i] + 1], queue, t, c[i : i + 1].detach()))
    return torch.stack(rows).mean()


def region_loss(c, p, k, perm, queue, t=0.2):
    return RegionCL.loss(lambda r, pos, ex: info_nce(r, pos, queue, t, ex), c, p, k, perm)


def test_region_loss_matches_reference_values_and_gradients():
    torch.manual_seed(1)
    b = 5
    perm = torch.tensor([1, 2, 3, 4, 0])  # a 5-cycle: applying it the wrong way round gives other rows
    k, queue = unit(b, 8), unit(12, 8)
    c1, p1 = unit(b, 8).requires_grad_(), unit(b, 8).requires_grad_()
    c2, p2 = c1.detach().clone().requires_grad_(), p1.detach().clone().requires_grad_()
    got = region_loss(c1, p1, k, perm, queue)
    want = region_loss_reference(c2, p2, k, perm, queue, 0.2)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    got.backward()
    want.backward()
    assert torch.allclose(c1.grad, c2.grad, atol=1e-6) and torch.allclose(p1.grad, p2.grad, atol=1e-6)
    # The stop-gradient matters: without it the gradients differ.
    c3, p3 = c1.detach().clone().requires_grad_(), p1.detach().clone().requires_grad_()
    no_sg = info_nce(torch.cat([c3, p3]), torch.cat([k, k[perm]]), queue, 0.2, torch.cat([p3, c3]))
    no_sg.backward()
    assert not torch.allclose(c3.grad, c1.grad, atol=1e-6)


def test_wrong_pairing_direction_gives_a_different_loss():
    torch.manual_seed(2)
    b = 4
    perm = torch.tensor([1, 2, 3, 0])
    inverse = torch.argsort(perm)
    c, p, k, queue = unit(b, 8), unit(b, 8), unit(b, 8), unit(16, 8)
    assert region_loss(c, p, k, perm, queue).item() != pytest.approx(region_loss(c, p, k, inverse, queue).item())


def test_paste_row_positive_is_the_key_of_the_source_image(gen):
    """End to end through the swap: the paste row of composite i is paired with the key
    of the image whose pixels were pasted into composite i."""
    b, size, stride = 6, 64, 16
    images = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, size, size).contiguous()
    swap = region_swap(images, stride, generator=gen)
    rows, cols = swap.box.pixel_slices(stride)
    source_of_paste = swap.composite[:, 0, rows, cols].flatten(1)[:, 0].long()  # pixel value = image id
    keys = torch.eye(b, dtype=torch.float64)  # key j identifies image j
    seen = {}

    def spy(rows_, positives, extra):
        seen["pos"] = positives
        return rows_.sum()

    RegionCL.loss(spy, keys.clone(), keys.clone(), keys, swap.perm)
    paste_positives = seen["pos"][b:].argmax(1)
    canvas_positives = seen["pos"][:b].argmax(1)
    assert torch.equal(paste_positives, source_of_paste)
    assert torch.equal(canvas_positives, torch.arange(b))


# ---------------------------------------------------------------- DenseCL


def test_dense_correspondence_recovers_a_known_spatial_permutation():
    torch.manual_seed(3)
    b, c, n = 3, 32, 16
    q = torch.randn(b, c, n)
    perms = torch.stack([torch.randperm(n) for _ in range(b)])
    # key cell j holds query cell perms[:, j] (scaled and noised a little: cosine ignores scale)
    k = torch.stack([q[i][:, perms[i]] for i in range(b)]) * 3.0 + 0.01 * torch.randn(b, c, n)
    from regioncl.losses import dense_correspondence

    match = dense_correspondence(q, k)
    # query cell i is found at key cell j with perms[j] = i, i.e. the inverse permutation.
    assert torch.equal(match, torch.argsort(perms, dim=1))


def test_dense_loss_matches_reference():
    from regioncl.losses import dense_info_nce

    torch.manual_seed(4)
    b, d, n = 2, 8, 4
    qg = F.normalize(torch.randn(b, d, n, dtype=torch.float64), dim=1)
    kg = F.normalize(torch.randn(b, d, n, dtype=torch.float64), dim=1)
    match = torch.randint(0, n, (b, n))
    queue = unit(10, d)
    got = dense_info_nce(qg, kg, match, queue, 0.2)
    rows, pos = [], []
    for i in range(b):
        for cell in range(n):
            rows.append(qg[i, :, cell])
            pos.append(kg[i, :, match[i, cell]])
    want = reference_info_nce(torch.stack(rows).float(), torch.stack(pos).float(), queue.float(), 0.2)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


# ---------------------------------------------------------------- SimSiam


def test_negative_cosine_of_identical_inputs_is_minus_one():
    from regioncl.losses import negative_cosine

    x = torch.randn(5, 7)
    assert negative_cosine(x, x).item() == pytest.approx(-1.0, abs=1e-6)
    assert negative_cosine(x, 3 * x).item() == pytest.approx(-1.0, abs=1e-6)
    assert negative_cosine(x, -x).item() == pytest.approx(1.0, abs=1e-6)


def test_negative_cosine_stops_the_gradient_of_the_target():
    from regioncl.losses import negative_cosine

    p, z = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    negative_cosine(p, z).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None


def test_info_nce_stays_fp32_under_bf16_autocast():
    torch.manual_seed(5)
    q, k, queue = (F.normalize(torch.randn(*shape), dim=1) for shape in [(16, 128), (16, 128), (4096, 128)])
    reference = info_nce(q, k, queue, 0.2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = info_nce(q.bfloat16().float(), k.bfloat16().float(), queue, 0.2)
    assert got.dtype == torch.float32
    # bf16 logits would be off by ~1e-3 here; fp32 logits of bf16-rounded inputs by far less.
    assert abs(got.item() - info_nce(q.bfloat16().float(), k.bfloat16().float(), queue, 0.2).item()) < 1e-6
    assert abs(got.item() - reference.item()) < 1e-2
