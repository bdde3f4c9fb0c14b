import pytest
import torch

from regioncl.swapping import (
    Box,
    default_region_cells,
    derangement,
    pairing_permutation,
    region_swap,
    sample_box,
)


def numbered_images(b, size):
    """Image j has every pixel equal to j + (pixel index)/1e6, so its content identifies it."""
    ramp = torch.arange(3 * size * size, dtype=torch.float64).reshape(3, size, size) / 1e6
    return torch.stack([j + ramp for j in range(b)])


@pytest.mark.parametrize("size,stride", [(64, 32), (96, 32), (224, 32), (32, 8), (48, 8), (64, 16)])
def test_composite_pixels_come_from_the_right_images(size, stride, gen):
    b = 5
    x = numbered_images(b, size)
    for _ in range(10):
        out = region_swap(x, stride, generator=gen)
        box, perm = out.box, out.perm
        g = size // stride
        assert box.grid == g
        assert 0 <= box.top and box.top + box.height <= g and 0 <= box.left and box.left + box.width <= g
        inside = torch.zeros(size, size, dtype=torch.bool)
        inside[box.pixel_slices(stride)] = True
        for i in range(b):
            assert torch.equal(out.composite[i][:, inside], x[perm[i]][:, inside])  # paste from π(i)
            assert torch.equal(out.composite[i][:, ~inside], x[i][:, ~inside])  # canvas from i
        # The pixel box is exactly the feature box upsampled by the stride.
        cell_mask = box.mask().bool()
        up = cell_mask.repeat_interleave(stride, 0).repeat_interleave(stride, 1)
        assert torch.equal(up, inside)
        # Cell-aligned: box edges in pixels are multiples of the stride.
        rows, cols = box.pixel_slices(stride)
        assert rows.start % stride == 0 and rows.stop % stride == 0 and cols.start % stride == 0


def test_input_is_not_modified(gen):
    x = numbered_images(4, 64)
    before = x.clone()
    region_swap(x, 32, generator=gen)
    assert torch.equal(x, before)


def test_derangement_has_no_fixed_point_and_is_a_permutation(gen):
    for n in [2, 3, 4, 7, 64]:
        for _ in range(50):
            p = derangement(n, gen)
            assert sorted(p.tolist()) == list(range(n))
            assert not (p == torch.arange(n)).any()


def test_derangement_is_not_always_the_same(gen):
    draws = {tuple(derangement(6, gen).tolist()) for _ in range(50)}
    assert len(draws) > 10


def test_reverse_pairing():
    assert pairing_permutation(4, "reverse").tolist() == [3, 2, 1, 0]
    with pytest.raises(ValueError, match="odd"):
        pairing_permutation(5, "reverse")


def test_batch_smaller_than_two_is_refused(gen):
    with pytest.raises(ValueError, match="at least 2"):
        region_swap(torch.zeros(1, 3, 64, 64), 32, generator=gen)


def test_size_not_multiple_of_stride_is_refused(gen):
    with pytest.raises(ValueError, match="multiple of the stride"):
        region_swap(torch.zeros(4, 3, 70, 70), 32, generator=gen)


def test_default_region_cells_scale_the_authors_range():
    assert default_region_cells(7) == (3, 5)  # 96–160 px at 224
    assert default_region_cells(14) == (6, 10)
    assert default_region_cells(4) == (2, 3)
    assert default_region_cells(2) == (1, 1)
    with pytest.raises(ValueError):
        default_region_cells(1)


def test_box_sides_cover_the_range_uniformly(gen):
    sides = torch.tensor([[b.height, b.width] for b in (sample_box(7, generator=gen) for _ in range(3000))])
    for v in (3, 4, 5):
        frac = (sides == v).float().mean().item()
        assert abs(frac - 1 / 3) < 0.04
    # The last row and column are reachable (the authors' clamp never pasted there).
    boxes = [sample_box(7, generator=gen) for _ in range(500)]
    assert any(b.top + b.height == 7 for b in boxes) and any(b.left + b.width == 7 for b in boxes)


def test_explicit_region_cells_are_validated(gen):
    with pytest.raises(ValueError, match="region_cells"):
        sample_box(4, (2, 4), gen)
    b = sample_box(4, (1, 1), gen)
    assert (b.height, b.width) == (1, 1)


def test_box_mask():
    m = Box(1, 2, 2, 1, 4).mask()
    expected = torch.zeros(4, 4)
    expected[1:3, 2:3] = 1
    assert torch.equal(m, expected)


def test_noswap_views(gen):
    from regioncl.swapping import noswap_views

    b, size, stride = 5, 64, 16
    x = numbered_images(b, size) + 1.0  # no pixel is 0
    for _ in range(5):
        v = noswap_views(x, stride, generator=gen)
        inside = torch.zeros(size, size, dtype=torch.bool)
        inside[v.box.pixel_slices(stride)] = True
        for i in range(b):
            assert torch.equal(v.paste[i][:, inside], x[v.perm[i]][:, inside])  # the source's region
            assert (v.paste[i][:, ~inside] == 0).all()  # on a zero image
            assert (v.canvas[i][:, inside] == 0).all()  # the region zeroed
            assert torch.equal(v.canvas[i][:, ~inside], x[i][:, ~inside])
        assert not (v.perm == torch.arange(b)).any()


def test_noswap_draws_the_same_box_and_pairing_as_swapping():
    from regioncl.swapping import noswap_views

    x = numbered_images(4, 64)
    a = region_swap(x, 16, generator=torch.Generator().manual_seed(5))
    b = noswap_views(x, 16, generator=torch.Generator().manual_seed(5))
    assert a.box == b.box and torch.equal(a.perm, b.perm)
