"""The device-side MoCo v2 augmentation against torchvision's, op by op and in distribution."""

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import v2

from regioncl.data.augment import IMAGENET_MEAN, IMAGENET_STD, blur_kernel_size
from regioncl.data.gpu_augment import BatchedMoCoV2, mocov2_crop_transform, sample_params

ADJUST = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]


def reference(image: torch.Tensor, p: dict, i: int, kernel: int) -> torch.Tensor:
    """One image through torchvision's functional ops with image i's parameters."""
    x = image
    if p["jitter"][i]:
        factors = [p["brightness"][i], p["contrast"][i], p["saturation"][i], p["hue"][i]]
        for op in p["order"][i].tolist():
            x = ADJUST[op](x, float(factors[op]))
    if p["gray"][i]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if p["blur"][i]:
        s = float(p["sigma"][i])
        x = TF.gaussian_blur(x, [kernel, kernel], [s, s])
    if p["flip"][i]:
        x = TF.horizontal_flip(x)
    return TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))


@pytest.mark.parametrize("force", ["random", "all"])
def test_batch_equals_torchvision_image_by_image(force):
    """Every image of the batch gets exactly torchvision's ops, in its own jitter order."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 20, 20), dtype=torch.uint8, generator=g)
    params = sample_params(len(images), g)
    if force == "all":  # every op on every image
        for key in ("jitter", "gray", "blur", "flip"):
            params[key] = torch.ones_like(params[key])
    aug = BatchedMoCoV2(20)
    out = aug.apply(images, params)
    kernel = blur_kernel_size(20)
    for i in range(len(images)):
        expected = reference(images[i].float() / 255, params, i, kernel)
        assert torch.allclose(out[i], expected, atol=1e-4), (i, (out[i] - expected).abs().max())


def test_parameters_follow_torchvision_distributions():
    """Means and variances of the sampled parameters match torchvision's MoCo v2 transforms."""
    n = 4000
    ours = sample_params(n, torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    jitter, blur = v2.ColorJitter(0.4, 0.4, 0.4, 0.1), v2.GaussianBlur(5, sigma=(0.1, 2.0))
    dummy = [torch.zeros(3, 4, 4)]
    theirs = [jitter.make_params(dummy) for _ in range(n)]
    sigmas = torch.tensor([blur.make_params(dummy)["sigma"][0] for _ in range(n)])

    def close(a: torch.Tensor, b: torch.Tensor) -> None:
        a, b = a.double(), b.double()
        se = math.sqrt(a.var() / n + b.var() / n)
        assert abs(a.mean() - b.mean()) < 5 * se + 1e-9
        assert abs(a.var() - b.var()) < 0.1 * b.var()

    for key in ("brightness", "contrast", "saturation", "hue"):
        close(ours[key], torch.tensor([float(t[f"{key}_factor"]) for t in theirs]))
    close(ours["sigma"], sigmas)
    # Each op equally likely in each of the four slots.
    their_order = torch.stack([t["fn_idx"] for t in theirs])
    for slot in range(4):
        for op in range(4):
            close((ours["order"][:, slot] == op).float(), (their_order[:, slot] == op).float())
    # RandomApply(p=0.8) / RandomGrayscale(p=0.2) / RandomApply(blur, p=0.5) / flip(p=0.5) rates.
    for key, p in (("jitter", 0.8), ("gray", 0.2), ("blur", 0.5), ("flip", 0.5)):
        assert abs(ours[key].float().mean() - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_same_generator_state_same_views_and_crop_is_uint8():
    from PIL import Image

    crop = mocov2_crop_transform(16)(Image.new("RGB", (40, 30), (10, 200, 30)))
    assert crop.dtype == torch.uint8 and crop.shape == (3, 16, 16)
    batch = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    aug = BatchedMoCoV2(16)
    a = aug(batch, torch.Generator().manual_seed(5))
    b = aug(batch, torch.Generator().manual_seed(5))
    c = aug(batch, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
