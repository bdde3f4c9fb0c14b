"""The MoCo v2 augmentation (workers and device) against torchvision's, op by op and in distribution."""

import io
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import v2

from regioncl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, blur_kernel_size
from regioncl.data.views import BatchedMoCoV2, MoCoV2Views, _blur, _hue, crop_boxes, normalize, sample_params
from regioncl.data.images import load_rgb
from regioncl.data.twoview import _two_views
from benchmarks.pipeline import official_mocov2_views, pipeline_benchmark, synthetic_photo, write_jpegs

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


@pytest.mark.parametrize("force", ["random", "all", "all gray, some blurred"])
def test_batch_equals_torchvision_image_by_image(force):
    """Every image of the batch gets exactly torchvision's ops, in its own jitter order."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 20, 20), dtype=torch.uint8, generator=g)
    params = sample_params(len(images), g)
    if force == "all":  # every op on every image
        for key in ("jitter", "gray", "blur", "flip"):
            params[key] = torch.ones_like(params[key])
    if force == "all gray, some blurred":  # an op on every image, then one on some (writes into the first's result)
        params["gray"] = torch.ones_like(params["gray"])
        params["blur"] = torch.arange(len(images)) % 3 == 0
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
    # torchvision < 0.21 names it _get_params
    jitter_params, blur_params = (getattr(t, "make_params", None) or t._get_params for t in (jitter, blur))
    theirs = [jitter_params(dummy) for _ in range(n)]
    sigmas = torch.tensor([blur_params(dummy)["sigma"][0] for _ in range(n)])

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


def test_same_generator_state_same_views():
    batch = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    aug = BatchedMoCoV2(16)
    a = aug(batch, torch.Generator().manual_seed(5))
    b = aug(batch, torch.Generator().manual_seed(5))
    c = aug(batch, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    floats = batch.float() / 255
    kept = floats.clone()
    aug(floats, torch.Generator().manual_seed(5))
    assert torch.equal(floats, kept)  # the caller's tensor is not modified


def test_hue_equals_torchvision_on_ties_greys_and_extremes():
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    x[:, :, :4] = 0.4  # grey: no hue
    x[:, 0, 4:8] = x[:, 1, 4:8]  # red = green ties
    x[:, 2, 8:12] = x[:, 1, 8:12]  # green = blue ties
    x[:, :, 12:14] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)  # pure red
    x[:, :, 14:16] = 0.0
    x[:, :, 16:18] = 1.0
    quantised = torch.randint(0, 256, (1, 3, 24, 24), generator=torch.Generator().manual_seed(1)).float() / 255
    for image in (x, quantised):
        for shift in (-0.1, -0.03, 0.0, 0.05, 0.1, 0.5):
            assert torch.allclose(_hue(image.clone(), shift), TF.adjust_hue(image, shift), atol=1e-5)
    batch = torch.cat([x, quantised])
    shifts = torch.tensor([0.07, -0.09])
    expected = torch.cat([TF.adjust_hue(batch[i : i + 1], float(shifts[i])) for i in range(2)])
    assert torch.allclose(_hue(batch, shifts), expected, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_blur_equals_torchvision(batch):
    """Both strategies (one image on CPU: shifted sums; batches: convolutions), σ from tiny to the largest."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 30, 30, generator=g)
    for sigmas in ([0.1, 0.7, 2.0], [2.0, 0.1, 1.3], [0.4, 0.4, 0.4]):
        sigma = torch.tensor(sigmas[:batch])
        out = _blur(x.clone(), sigma, 23)
        for i in range(batch):
            s = float(sigma[i])
            assert torch.allclose(out[i], TF.gaussian_blur(x[i], [23, 23], [s, s]), atol=1e-5)


def _jpeg(width: int, height: int, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    synthetic_photo(np.random.default_rng(seed), width, height).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _reference_views(image: Image.Image, size: int, seed: int) -> list[torch.Tensor]:
    """The views MoCoV2Views should make of a decoded image, with torchvision's functional ops:
    the same draws (two crop boxes, then the parameters of both views) from the same generator."""
    g = torch.Generator().manual_seed(seed)
    boxes = crop_boxes(image.width, image.height, 2, g)
    params = sample_params(2, g)
    pixels = TF.pil_to_tensor(image)
    views = []
    for v, box in enumerate(boxes):
        crop = TF.resized_crop(pixels, *box, [size, size], antialias=True).float() / 255
        views.append(reference(crop, params, v, blur_kernel_size(size)))
    return views


@pytest.mark.parametrize("seed", range(6))
def test_views_equal_torchvision_ops(seed):
    """Each worker view is torchvision's resized crop + ops of its drawn parameters, to within
    the final rounding to uint8 (compared after normalisation)."""
    image = synthetic_photo(np.random.default_rng(seed), 90, 70)
    q, k = MoCoV2Views(32)(lambda draft: image, torch.Generator().manual_seed(seed))
    assert q.dtype == torch.uint8 and q.shape == (3, 32, 32) and k.shape == (3, 32, 32)
    for ours, expected in zip((q, k), _reference_views(image, 32, seed)):
        one_level = 1.0 / 255 / min(IMAGENET_STD) + 1e-4
        assert (normalize(ours[None])[0] - expected).abs().max() <= one_level


def test_draft_decodes_large_jpegs_smaller_with_the_same_crops():
    data = _jpeg(800, 600)
    asked = []

    def load(draft):
        def spy(size):
            wanted = draft(size)
            asked.append((size, wanted))
            return wanted
        image = load_rgb(data, "big.jpg", draft=spy)
        asked.append(image.size)
        return image

    drafted = MoCoV2Views(48)
    seen = 0
    for seed in range(8):
        q, k = drafted(load, torch.Generator().manual_seed(seed))
        (full, wanted), decoded = asked[-2], asked[-1]
        assert full == (800, 600)
        # Decoded no smaller than asked, so every crop still spans >= 48 pixels: the resize stays a downscale.
        assert decoded[0] >= wanted[0] and decoded[1] >= wanted[1]
        seen += decoded[0] < 800
        full_q, full_k = MoCoV2Views(48, draft=False)(lambda draft: load_rgb(data), torch.Generator().manual_seed(seed))
        for a, b in ((q, full_q), (k, full_k)):  # same boxes and parameters, another decoder scale
            a, b = a.float(), b.float()
            assert (a.mean((1, 2)) - b.mean((1, 2))).abs().max() < 1.5  # grey levels
            assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.95  # the same picture
    assert seen >= 6  # crops of >= 160 px of an 800x600 image: the decoder scales down almost always
    png = io.BytesIO()
    Image.open(io.BytesIO(data)).save(png, "PNG")
    assert load_rgb(png.getvalue(), draft=lambda size: (100, 75)).size == (800, 600)  # only JPEG drafts


def test_views_have_the_official_pipeline_statistics(tmp_path):
    """Output pixel statistics over many views of the same photos: ours and the official MoCo v2
    pipeline (torchvision + PIL blur) agree within their sampling error."""
    paths = write_jpegs(tmp_path, 2, 120, 90)
    official = official_mocov2_views(24)
    ours = MoCoV2Views(24)
    torch.manual_seed(0)
    stats = {"official": [], "ours": []}
    for path in paths:
        image = load_rgb(str(path))
        for rep in range(150):
            stats["official"].extend(official(str(path)))
            stats["ours"].extend(normalize(torch.stack(_two_views(lambda draft: image, ours, rep))))
    per_view = {
        "mean": lambda v: v.mean((1, 2)),  # per channel: brightness, jitter
        "std": lambda v: v.std((1, 2)),  # contrast
        "chroma": lambda v: (v.amax(0) - v.amin(0)).mean(),  # saturation, grayscale
        "edges": lambda v: (v[:, :, 1:] - v[:, :, :-1]).abs().mean(),  # blur, crop scale
    }
    for name, fn in per_view.items():
        a = torch.stack([torch.atleast_1d(fn(v)) for v in stats["official"]]).double()
        b = torch.stack([torch.atleast_1d(fn(v)) for v in stats["ours"]]).double()
        se = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
        assert ((a.mean(0) - b.mean(0)).abs() < 4 * se).all(), (name, a.mean(0), b.mean(0), se)
        assert ((a.std(0) / b.std(0)) - 1).abs().max() < 0.15, name


def test_pipeline_benchmark_runs(tmp_path):
    write_jpegs(tmp_path, 3, 64, 48)
    rows = pipeline_benchmark(tmp_path, image_size=32, rounds=1)
    assert [r.name.split()[0] for r in rows] == ["official", "regioncl", "regioncl"]
    assert rows[1].mean == rows[2].mean  # the same views, normalised for the statistics
    assert all(r.ms_per_image > 0 and r.images_per_s > 0 and math.isfinite(r.mean) for r in rows)


def test_crop_boxes_are_torchvisions_random_resized_crop():
    """The crop distribution is MoCo's (scale 0.2–1, ratio 3/4–4/3): torchvision's draws, same seed."""
    import torchvision.transforms as T

    g = torch.Generator().manual_seed(3)
    ours = crop_boxes(500, 375, 20, g)
    torch.manual_seed(3)
    theirs = [tuple(T.RandomResizedCrop.get_params(torch.empty(3, 375, 500), [0.2, 1.0], [3 / 4, 4 / 3]))
              for _ in range(20)]
    assert ours == theirs
    assert crop_boxes(500, 375, 20, g) != ours  # the generator moved on
