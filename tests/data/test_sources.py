"""Tests of regioncl.data: sources, decoding, augmentation, two-view datasets, sampler.

Everything is offline, small and CPU-only.
"""

from __future__ import annotations

import io
import logging
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from regioncl.data import (
    IMAGENET_MEAN,
    BadImageError,
    EpochSampler,
    HFSource,
    ImageFolderSource,
    MoCoV2Views,
    SampleShapes,
    StreamingTwoViewDataset,
    TwoViewDataset,
    blur_kernel_size,
    build_source,
    eval_transform,
    load_rgb,
    shape_mask,
    to_rgb,
)
from regioncl.data.sources import _parse_hf_spec

# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """Deterministic stand-in transform: the raw pixels as a (3, H, W) uint8 tensor."""
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


class _BadAt(torch.utils.data.Dataset):
    """Wraps a source and raises BadImageError for the given indices."""

    def __init__(self, source, bad: set[int]):
        self.source, self.bad = source, bad

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        if index in self.bad:
            raise BadImageError(f"img{index}", "corrupt for the test")
        return self.source[index]


def _solid(colour, size=(8, 8), mode="RGB") -> Image.Image:
    return Image.new(mode, size, colour)


# --------------------------------------------------------------------------- #
# SampleShapes
# --------------------------------------------------------------------------- #


def test_sample_shapes_deterministic_rgb_and_split_disjoint():
    a, b = SampleShapes("train", size=48), SampleShapes("train", size=48)
    img, label = a[7]
    assert img.mode == "RGB" and img.size == (48, 48)
    assert np.array_equal(_pixels(img), _pixels(b[7][0])) and label == b[7][1]
    assert not np.array_equal(_pixels(img), _pixels(a[8][0]))
    val = SampleShapes("val", size=48)
    assert all(not np.array_equal(_pixels(a[i][0]), _pixels(val[i][0])) for i in range(10))
    assert not np.array_equal(_pixels(img), _pixels(SampleShapes("train", size=48, seed=1)[7][0]))


def test_sample_shapes_lengths_and_balanced_labels():
    train, val = SampleShapes("train"), SampleShapes("val")
    n_cls = len(train.classes)
    assert n_cls >= 10 and len(set(train.classes)) == n_cls
    assert len(train) == 500 * n_cls and len(val) == 100 * n_cls
    small = SampleShapes("train", num_per_class=3)
    labels = [small[i][1] for i in range(len(small))]
    assert np.bincount(labels).tolist() == [3] * n_cls
    # Any prefix of a multiple of n_cls is balanced.
    assert sorted(labels[:n_cls]) == list(range(n_cls))
    with pytest.raises(ValueError, match="split"):
        SampleShapes("bogus")


def test_sample_shape_classes_are_distinct_silhouettes():
    n_cls = len(SampleShapes().classes)
    for angle in (0.0, 0.7):
        masks = [shape_mask(k, 64, angle) for k in range(n_cls)]
        for k, m in enumerate(masks):
            assert 0.03 < m.mean() < 0.6, f"class {k} silhouette is empty or fills the image"
        for i in range(n_cls):
            for j in range(i + 1, n_cls):
                diff = np.mean(masks[i] != masks[j])
                assert diff > 0.03, f"classes {i} and {j} look alike (diff {diff:.3f})"


def test_sample_shapes_colour_does_not_predict_class():
    train = SampleShapes("train", size=32, num_per_class=40)
    val = SampleShapes("val", size=32, num_per_class=20)
    n_cls = len(train.classes)

    def feats(ds):
        x = np.stack([_pixels(ds[i][0]).reshape(-1, 3).mean(0) for i in range(len(ds))])
        y = np.array([i % n_cls for i in range(len(ds))])
        return x, y

    xt, yt = feats(train)
    xv, yv = feats(val)
    centroids = np.stack([xt[yt == k].mean(0) for k in range(n_cls)])
    pred = np.argmin(((xv[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    accuracy = float((pred == yv).mean())
    # Chance is 0.1; a colour that depended on the class would score far above.
    assert accuracy < 0.25, accuracy


# --------------------------------------------------------------------------- #
# Decoding and ImageFolderSource
# --------------------------------------------------------------------------- #


def test_folder_with_class_subfolders(tmp_path):
    (tmp_path / "dog" / "sub").mkdir(parents=True)
    (tmp_path / "cat").mkdir()
    _solid((255, 0, 0)).save(tmp_path / "dog" / "b.png")
    _solid((0, 255, 0)).save(tmp_path / "dog" / "sub" / "c.PNG")
    _solid((0, 0, 255)).save(tmp_path / "cat" / "a.png")
    _solid((9, 9, 9)).save(tmp_path / "cat" / ".hidden.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")

    src = ImageFolderSource(tmp_path)
    assert src.classes == ["cat", "dog"]
    assert len(src) == 3
    items = [src[i] for i in range(3)]
    assert [label for _, label in items] == [0, 1, 1]
    assert [img.getpixel((0, 0)) for img, _ in items] == [(0, 0, 255), (255, 0, 0), (0, 255, 0)]
    assert isinstance(build_source(str(tmp_path)), ImageFolderSource)


def test_folder_without_class_subfolders(tmp_path):
    (tmp_path / "sub").mkdir()
    _solid((1, 2, 3)).save(tmp_path / "top.png")
    _solid((4, 5, 6)).save(tmp_path / "sub" / "inner.png")
    src = ImageFolderSource(tmp_path)
    assert src.classes == []
    assert [src[i][1] for i in range(len(src))] == [-1, -1]


def test_folder_missing_or_empty_root(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        ImageFolderSource(missing)
    with pytest.raises(FileNotFoundError, match="nope"):
        build_source(str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="empty"):
        ImageFolderSource(empty)


def test_modes_are_converted_to_rgb_with_correct_colours(tmp_path):
    gray = _solid(100, mode="L")
    gray.save(tmp_path / "gray.png")

    gray16 = Image.fromarray(np.full((8, 8), 30000, dtype=np.uint16))
    gray16.save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")

    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    pal.putpixel((1, 1), 1)
    pal.info["transparency"] = 1
    pal.save(tmp_path / "pal.png", transparency=1)

    rgba = Image.new("RGBA", (8, 8), (0, 0, 255, 255))
    rgba.putpixel((1, 1), (255, 0, 0, 0))
    rgba.putpixel((2, 2), (0, 0, 0, 128))
    rgba.save(tmp_path / "rgba.png")

    la = Image.new("LA", (8, 8), (50, 255))
    la.putpixel((1, 1), (0, 0))
    la.save(tmp_path / "la.png")

    _solid((0, 255, 255, 0), mode="CMYK").save(tmp_path / "cmyk.tif")

    src = ImageFolderSource(tmp_path)
    by_name = {src.path(i).rsplit("/", 1)[-1]: src[i][0] for i in range(len(src))}
    assert all(img.mode == "RGB" for img in by_name.values())
    assert by_name["gray.png"].getpixel((0, 0)) == (100, 100, 100)
    # 30000 / 65535 * 255 = 116.7; clipping would give 255.
    assert by_name["gray16.png"].getpixel((0, 0)) == (117, 117, 117)
    assert by_name["pal.png"].getpixel((0, 0)) == (255, 0, 0)
    assert by_name["pal.png"].getpixel((1, 1)) == (255, 255, 255)  # transparent -> white background
    assert by_name["rgba.png"].getpixel((0, 0)) == (0, 0, 255)
    assert by_name["rgba.png"].getpixel((1, 1)) == (255, 255, 255)
    assert all(abs(v - 127) <= 1 for v in by_name["rgba.png"].getpixel((2, 2)))  # half black over white
    assert by_name["la.png"].getpixel((0, 0)) == (50, 50, 50)
    assert by_name["la.png"].getpixel((1, 1)) == (255, 255, 255)
    assert by_name["cmyk.tif"].getpixel((0, 0)) == (255, 0, 0)


def test_to_rgb_scales_int_and_float_grayscale():
    as_float = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), "F")
    assert to_rgb(as_float).getpixel((0, 0)) == (128, 128, 128)
    as_int32 = Image.fromarray(np.full((4, 4), 65535, dtype=np.int32), "I")
    assert to_rgb(as_int32).getpixel((0, 0)) == (255, 255, 255)
    small_int32 = Image.fromarray(np.full((4, 4), 40, dtype=np.int32), "I")
    assert to_rgb(small_int32).getpixel((0, 0)) == (40, 40, 40)


def test_load_rgb_accepts_bytes_dicts_and_pil_images():
    buf = io.BytesIO()
    _solid((10, 20, 30)).save(buf, format="PNG")
    raw = buf.getvalue()
    for value in (raw, {"bytes": raw, "path": "x.png"}, Image.open(io.BytesIO(raw))):
        img = load_rgb(value, "id")
        assert img.mode == "RGB" and img.getpixel((0, 0)) == (10, 20, 30)
    with pytest.raises(BadImageError):
        load_rgb({"bytes": None, "path": None}, "empty-dict")


def test_truncated_empty_and_garbage_files_raise_bad_image_error(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "garbage.png").write_bytes(b"this is not a png at all")
    src = ImageFolderSource(tmp_path)
    assert len(src) == 3
    for i in range(3):
        with pytest.raises(BadImageError) as info:
            src[i]
        assert info.value.image_id == src.path(i)
        assert isinstance(info.value, ValueError)


def test_decompression_bomb_is_bad_image(tmp_path, monkeypatch):
    _solid((1, 1, 1), size=(20, 20)).save(tmp_path / "huge.png")  # 400 px > 2 * limit: PIL error
    _solid((1, 1, 1), size=(12, 12)).save(tmp_path / "big.png")  # 144 px > limit: PIL warning
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for name in ("huge.png", "big.png"):
        with pytest.raises(BadImageError, match="DecompressionBomb"):
            load_rgb(tmp_path / name)


def test_bad_image_error_survives_pickling():
    err = pickle.loads(pickle.dumps(BadImageError("a/b.jpg", "truncated")))
    assert (err.image_id, err.reason) == ("a/b.jpg", "truncated")
    assert "a/b.jpg" in str(err)


# --------------------------------------------------------------------------- #
# Augmentation
# --------------------------------------------------------------------------- #


def test_eval_transform():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    ev = eval_transform(32)
    a, b = ev(img), ev(img)
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    # A constant image at the normalisation mean maps to ~0.
    mean_img = _solid(tuple(round(255 * m) for m in IMAGENET_MEAN), size=(40, 40))
    assert eval_transform(16)(mean_img).abs().max() < 0.02
    assert [blur_kernel_size(s) for s in (16, 64, 224)] == [3, 7, 23]


# --------------------------------------------------------------------------- #
# EpochSampler
# --------------------------------------------------------------------------- #


def test_epoch_sampler_orders_and_skip():
    s = EpochSampler(50, seed=3)
    s.set_epoch(0)
    e0 = list(s)
    assert all(epoch == 0 for epoch, _ in e0)
    order0 = [i for _, i in e0]
    assert sorted(order0) == list(range(50)) and order0 != list(range(50))
    assert [i for _, i in EpochSampler(50, seed=3)] == order0
    s.set_epoch(1)
    order1 = [i for _, i in s]
    assert sorted(order1) == list(range(50)) and order1 != order0
    assert [i for _, i in EpochSampler(50, seed=4)] != order0
    s.set_epoch(0, skip=17)
    assert len(s) == 33
    assert [i for _, i in s] == order0[17:]
    s.set_epoch(2)
    assert len(s) == 50  # skip applies to one epoch only
    unshuffled = EpochSampler(5, shuffle=False)
    unshuffled.set_epoch(4)
    assert list(unshuffled) == [(4, i) for i in range(5)]
    with pytest.raises(ValueError):
        s.set_epoch(0, skip=51)


# --------------------------------------------------------------------------- #
# TwoViewDataset
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def twoview():
    return TwoViewDataset(SampleShapes("train", size=32, num_per_class=1), MoCoV2Views(24), seed=5)


def test_twoview_item_contents_and_determinism(twoview):
    item = twoview[(0, 3)]
    assert set(item) == {"view_q", "view_k", "index", "label", "bad", "reader"}
    assert item["reader"] == -1  # a map-style item has no stream reader
    assert item["view_q"].shape == (3, 24, 24) and item["view_q"].dtype == torch.uint8
    assert (item["index"], item["label"], item["bad"]) == (3, 3, 0)
    assert not torch.equal(item["view_q"], item["view_k"])
    twoview[(0, 7)]  # other calls in between must not matter
    again = twoview[(0, 3)]
    assert torch.equal(item["view_q"], again["view_q"]) and torch.equal(item["view_k"], again["view_k"])
    other_epoch = twoview[(1, 3)]
    assert not torch.equal(item["view_q"], other_epoch["view_q"])
    other_seed = TwoViewDataset(twoview.source, twoview.transform, seed=6)[(0, 3)]
    assert not torch.equal(item["view_q"], other_seed["view_q"])


def test_twoview_leaves_global_rng_untouched(twoview):
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    twoview[(2, 1)]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(5), expected)


def _collect(loader) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    out = {}
    for batch in loader:
        for j, idx in enumerate(batch["index"].tolist()):
            out[idx] = (batch["view_q"][j], batch["view_k"][j])
    return out


def test_twoview_same_views_with_and_without_workers(twoview):
    sampler = EpochSampler(len(twoview), seed=1)
    sampler.set_epoch(2)
    serial = _collect(DataLoader(twoview, batch_size=3, sampler=sampler, num_workers=0))
    parallel = _collect(DataLoader(twoview, batch_size=3, sampler=sampler, num_workers=2))
    assert sorted(serial) == list(range(len(twoview)))
    assert sorted(parallel) == sorted(serial)
    for idx in serial:
        assert torch.equal(serial[idx][0], parallel[idx][0]) and torch.equal(serial[idx][1], parallel[idx][1])

    # Resuming mid-epoch reproduces exactly the remaining samples.
    sampler.set_epoch(2, skip=4)
    resumed = _collect(DataLoader(twoview, batch_size=3, sampler=sampler, num_workers=0))
    consumed = sampler.order(2)[:4].tolist()
    assert sorted(resumed) == sorted(set(serial) - set(consumed))
    for idx in resumed:
        assert torch.equal(resumed[idx][0], serial[idx][0])


def test_twoview_skips_bad_image_and_logs(caplog):
    base = SampleShapes("train", size=16, num_per_class=1)
    ds = TwoViewDataset(_BadAt(base, {2}), _to_tensor, seed=0)
    with caplog.at_level(logging.WARNING, logger="regioncl.data"):
        item = ds[(0, 2)]
    assert item["bad"] == 1 and item["index"] == 3 and item["label"] == base[3][1]
    assert torch.equal(item["view_q"], _to_tensor(base[3][0]))
    assert any("img2" in r.getMessage() and "corrupt for the test" in r.getMessage() for r in caplog.records)
    assert ds[(0, 1)]["bad"] == 0
    wrapped = TwoViewDataset(_BadAt(base, {len(base) - 1}), _to_tensor)[(0, len(base) - 1)]
    assert wrapped["index"] == 0 and wrapped["bad"] == 1


@pytest.fixture(autouse=True)
def _no_bad_image_named_yet(monkeypatch):
    """Each test starts as a fresh process does: no bad image named by an earlier test."""
    from regioncl.data import images

    monkeypatch.setattr(images, "_warned", set())


def test_a_bad_image_is_named_once_and_counted_on_every_pass(caplog):
    """Each epoch skips and counts the broken file again; its warning is not repeated each epoch."""
    ds = TwoViewDataset(_BadAt(SampleShapes("train", size=16, num_per_class=1), {1}), _to_tensor)
    with caplog.at_level(logging.DEBUG, logger="regioncl.data"):
        counts = [ds[(epoch, 1)]["bad"] for epoch in range(3)]
    assert counts == [1, 1, 1]
    named = [(r.levelno, r.getMessage()) for r in caplog.records if "img1" in r.getMessage()]
    assert [level for level, _ in named] == [logging.WARNING, logging.DEBUG, logging.DEBUG], named
    assert "corrupt for the test" in named[0][1] and "named before" in named[1][1]


def test_twoview_gives_up_after_max_retries():
    base = SampleShapes("train", size=16, num_per_class=1)
    assert TwoViewDataset(_BadAt(base, {1, 2, 3}), _to_tensor, max_retries=3)[(0, 1)]["bad"] == 3
    with pytest.raises(RuntimeError, match="bad images"):
        TwoViewDataset(_BadAt(base, {1, 2, 3}), _to_tensor, max_retries=2)[(0, 1)]
    with pytest.raises(RuntimeError):
        TwoViewDataset(_BadAt(base, set(range(len(base)))), _to_tensor)[(0, 0)]


# --------------------------------------------------------------------------- #
# Hugging Face sources (local parquet, offline)
# --------------------------------------------------------------------------- #

_HF_COLOURS = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]


@pytest.fixture()
def offline(monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    # datasets waits 5 s after interleaving parquet shards with threads (an arrow shutdown
    # issue); tiny local files do not need it.
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    return datasets


def _write_parquet(datasets, folder, n=6, bad_position=None):
    """Writes n images (colour encodes label) into two parquet files; returns labels."""
    folder.mkdir()
    labels = [i % 3 for i in range(n)]
    images = []
    for i, label in enumerate(labels):
        buf = io.BytesIO()
        _solid(_HF_COLOURS[label]).save(buf, format="PNG")
        images.append({"bytes": buf.getvalue() if i != bad_position else b"not an image", "path": f"im{i}.png"})
    ds = datasets.Dataset.from_dict({"image": images, "label": labels, "extra": list(range(n))})
    ds = ds.cast_column("image", datasets.Image())
    half = n // 2
    ds.select(range(half)).to_parquet(str(folder / "part-0.parquet"))
    ds.select(range(half, n)).to_parquet(str(folder / "part-1.parquet"))
    return labels


def test_hf_streaming_and_map_style(tmp_path, offline):
    labels = _write_parquet(offline, tmp_path / "pq")
    spec = "hf:" + str(tmp_path / "pq")

    stream = build_source(spec, streaming=True)
    assert isinstance(stream, HFSource) and stream.is_streaming
    seen = list(stream.iterate(seed=0, epoch=0, shuffle_buffer=4))
    assert len(seen) == len(labels)
    assert sorted(label for _, _, label in seen) == sorted(labels)
    for _, img, label in seen:
        assert img.mode == "RGB" and img.getpixel((0, 0)) == _HF_COLOURS[label]
    again = [key for key, _, _ in stream.iterate(seed=0, epoch=0, shuffle_buffer=4)]
    assert again == [key for key, _, _ in seen]
    assert len({key for key, _, _ in seen}) == len(labels)

    mapped = build_source(spec + ":train", cache_dir=tmp_path / "cache")
    assert not mapped.is_streaming and len(mapped) == len(labels)
    for i in range(len(mapped)):
        img, label = mapped[i]
        assert label == labels[i] and img.mode == "RGB" and img.getpixel((0, 0)) == _HF_COLOURS[label]


def test_hf_missing_columns_listed(tmp_path, offline):
    _write_parquet(offline, tmp_path / "pq")
    with pytest.raises(ValueError, match="available columns") as info:
        HFSource(str(tmp_path / "pq"), streaming=True, image_column="picture")
    assert "image" in str(info.value) and "label" in str(info.value)
    with pytest.raises(ValueError, match="nolabel"):
        HFSource(str(tmp_path / "pq"), streaming=True, label_column="nolabel")
    with pytest.raises(ValueError, match="does-not-exist"):
        HFSource(str(tmp_path / "does-not-exist"), streaming=True)


def _write_shards(folder, sizes, row_group_size, bad_ids=()):
    """Parquet files of the given sizes, labels = unique example ids 0, 1, ...; returns the ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    buf = io.BytesIO()
    _solid((90, 120, 150)).save(buf, format="PNG")
    start = 0
    for f, n in enumerate(sizes):
        ids = list(range(start, start + n))
        images = [{"bytes": b"not an image" if i in bad_ids else buf.getvalue(), "path": f"im{i}.png"} for i in ids]
        pq.write_table(pa.table({"image": images, "label": ids}), folder / f"train-{f:05d}.parquet",
                       row_group_size=row_group_size)
        start += n
    return list(range(start))


@pytest.mark.parametrize("readers", [2, 3])
def test_streaming_readers_get_disjoint_balanced_shards(tmp_path, offline, readers):
    """Three files of 6 rows in row groups of 2: 9 shards. Any reader count gets disjoint
    parts whose union is the stream, sizes within one row group of each other."""
    ids = _write_shards(tmp_path / "pq", [6] * 3, row_group_size=2)
    source = HFSource(str(tmp_path / "pq"), streaming=True)
    assert source.num_shards == 9
    parts = [[label for _, _, label in source.iterate(0, 1, 8, decode=False, shard=(r, readers))]
             for r in range(readers)]
    flat = [i for part in parts for i in part]
    assert sorted(flat) == ids  # every example once
    assert max(map(len, parts)) - min(map(len, parts)) <= 2
    again = [[label for _, _, label in source.iterate(0, 1, 8, decode=False, shard=(r, readers))] for r in range(readers)]
    assert again == parts  # a pure function of (seed, epoch, readers)
    other_epoch = [label for _, _, label in source.iterate(0, 2, 8, decode=False, shard=(0, readers))]
    assert other_epoch != parts[0]
    with pytest.raises(ValueError, match="fewer than the 10 readers"):
        next(source.iterate(0, 1, 8, decode=False, shard=(0, 10)))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_streaming_twoview_covers_the_stream_and_counts_bad(tmp_path, offline, num_workers):
    ids = _write_shards(tmp_path / "pq", [6, 6], row_group_size=3, bad_ids={4})
    source = HFSource(str(tmp_path / "pq"), streaming=True)
    ds = StreamingTwoViewDataset(source, MoCoV2Views(16), seed=0, shuffle_buffer=4)
    ds.set_epoch(0)

    def run():
        return list(DataLoader(ds, batch_size=None, num_workers=num_workers))

    items = run()
    assert sorted(int(b["label"]) for b in items) == [i for i in ids if i != 4]
    # The bad image is counted once, with its reader's next good image (or its last, if it ends the stream).
    readers = max(1, num_workers)
    streams = [[label for _, _, label in source.iterate(0, 0, 4, decode=False, shard=(r, readers))] for r in range(readers)]
    assert sum(int(b["bad"]) for b in items) == 1
    bad_reader = next(r for r, st in enumerate(streams) if 4 in st)
    carrier = [b for b in items if int(b["bad"])][0]
    assert int(carrier["reader"]) == bad_reader
    assert {int(b["reader"]) for b in items} == set(range(max(1, num_workers)))
    again = run()
    assert all(torch.equal(a["view_q"], b["view_q"]) and int(a["label"]) == int(b["label"]) for a, b in zip(items, again))
    assert not torch.equal(items[0]["view_q"], items[0]["view_k"])


def test_streaming_skip_resumes_each_reader_exactly(tmp_path, offline):
    """Stop after some batches, tell each reader how far it got: the rest of the epoch is
    exactly the uninterrupted epoch's remainder, with the same views."""
    _write_shards(tmp_path / "pq", [8, 8, 8], row_group_size=2, bad_ids={5})
    source = HFSource(str(tmp_path / "pq"), streaming=True)
    ds = StreamingTwoViewDataset(source, MoCoV2Views(16), seed=3, shuffle_buffer=3)

    def batches(skip=None, rotate=0):
        ds.set_epoch(1, skip=skip, rotate=rotate)
        return list(DataLoader(ds, batch_size=3, num_workers=2))

    full = batches()
    done = 3
    positions = [0, 0]
    for batch in full[:done]:  # what the trainer records: each batch comes from one reader
        positions[int(batch["reader"][0])] = int(batch["index"].max()) + 1
    rest = batches(skip=positions, rotate=done)  # the loader's next batch was reader 1's
    assert len(full) - done == len(rest)
    for a, b in zip(full[done:], rest):
        assert torch.equal(a["label"], b["label"]) and torch.equal(a["view_k"], b["view_k"])
    with pytest.raises(ValueError, match="for 3 readers"):
        ds.set_epoch(1, skip=[0, 0, 0])
        list(DataLoader(ds, batch_size=3, num_workers=2))


def test_hf_split_suffix_parsing():
    assert _parse_hf_spec("user/data:validation", "train") == ("user/data", "validation")
    assert _parse_hf_spec("mnist:train[:10%]", "val") == ("mnist", "train[:10%]")
    assert _parse_hf_spec("user/data", "test") == ("user/data", "test")
    assert _parse_hf_spec("C:data", "train") == ("C:data", "train")
    assert _parse_hf_spec("C:\\data\\x", "train") == ("C:\\data\\x", "train")


def test_build_source_sample():
    src = build_source("sample", "val", image_size=24, seed=2)
    assert isinstance(src, SampleShapes) and src.split == "val" and src[0][0].size == (24, 24)
    assert np.array_equal(_pixels(src[0][0]), _pixels(SampleShapes("val", size=24, seed=2)[0][0]))


@pytest.mark.slow
def test_streaming_image_folder_splits_into_shards(tmp_path, offline):
    """``hf:FOLDER`` streams a local image folder through the same path as parquet: shards of
    files that readers split disjointly, labels from class folders, the split's files only,
    a corrupt file skipped and counted."""
    root = tmp_path / "imgs"
    expected = {}
    for split, n in (("train", 5), ("val", 2)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                path = root / split / cls / f"{i}.jpg"
                _solid((i * 40, 90, 30), size=(20, 16)).save(path)
                if split == "train":
                    expected[str(path)] = ["cat", "dog"].index(cls)
    (root / "train" / "dog" / "bad.jpg").write_bytes(b"not a jpeg")
    source = build_source(f"hf:{root}", "train", streaming=True)
    assert source.num_shards == 11 and source.classes == ["cat", "dog"]
    seen = []
    for r in range(2):
        seen += [(raw["path"], label) for _, raw, label in source.iterate(0, 0, 4, decode=False, shard=(r, 2))]
    assert sorted(seen) == sorted([*expected.items(), (str(root / "train" / "dog" / "bad.jpg"), 1)])
    ds = StreamingTwoViewDataset(source, MoCoV2Views(16), seed=0, shuffle_buffer=4)
    ds.set_epoch(0)
    items = list(DataLoader(ds, batch_size=None, num_workers=2))
    assert len(items) == 10 and sum(int(b["bad"]) for b in items) == 1
    assert sorted(int(b["label"]) for b in items) == sorted(expected.values())
    assert len(list(build_source(f"hf:{root}:val", streaming=True).iterate(0, 0, 4, decode=False))) == 4
