import pytest
import torch

from regioncl.pooling import mask_pool, paste_canvas_pool
from regioncl.swapping import Box


def test_full_mask_is_global_average_pooling():
    f = torch.randn(3, 5, 4, 4)
    assert torch.allclose(mask_pool(f, torch.ones(4, 4)), f.mean((2, 3)), atol=1e-6)


def test_partial_mask_by_hand():
    f = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)
    box = Box(top=0, left=1, height=2, width=2, grid=3)
    paste, canvas = paste_canvas_pool(f, box)
    # image 0 is 0..8 laid out row-major: box cells (0,1),(0,2),(1,1),(1,2) = 1,2,4,5
    assert paste[0, 0].item() == pytest.approx((1 + 2 + 4 + 5) / 4)
    assert canvas[0, 0].item() == pytest.approx((0 + 3 + 6 + 7 + 8) / 5)
    assert paste[1, 0].item() == pytest.approx((10 + 11 + 13 + 14) / 4)
    # paste and canvas together average to the global mean, weighted by area.
    assert torch.allclose((4 * paste + 5 * canvas) / 9, f.mean((2, 3)))


def test_empty_mask_is_refused():
    with pytest.raises(ValueError, match="empty"):
        mask_pool(torch.randn(1, 2, 3, 3), torch.zeros(3, 3))


def test_grid_mismatch_is_refused():
    with pytest.raises(ValueError, match="grid"):
        paste_canvas_pool(torch.randn(1, 2, 4, 4), Box(0, 0, 1, 1, 7))
