import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

from regioncl.data import build_source
from regioncl.data.idx import read_idx

ROOT = Path(__file__).resolve().parents[2]


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int32: 0x0C}[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def test_read_idx_plain_and_gzip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(images))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(images)))
    assert np.array_equal(read_idx(tmp_path / "a.idx"), images)
    assert np.array_equal(read_idx(tmp_path / "a.idx.gz"), images)
    ints = np.array([1, -2, 300], dtype=np.int32)
    (tmp_path / "b.idx").write_bytes(idx_bytes(ints))
    assert read_idx(tmp_path / "b.idx").tolist() == [1, -2, 300]  # big-endian decoded


def test_truncated_or_foreign_files_are_refused(tmp_path):
    data = idx_bytes(np.zeros((5, 2, 2), dtype=np.uint8))
    (tmp_path / "t.idx").write_bytes(data[:-3])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "t.idx")
    (tmp_path / "png.idx").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "png.idx")


def write_fake_fashion_mnist(src: Path, n_train: int, n_test: int) -> None:
    src.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (src / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (src / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))


def prepare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_fashion_mnist.py"), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_prepare_fashion_mnist_writes_class_folders(tmp_path):
    src = tmp_path / "src"
    write_fake_fashion_mnist(src, 12, 5)
    out = tmp_path / "fm"
    proc = prepare(str(out), "--source", str(src))
    assert proc.returncode == 0, proc.stderr
    train = build_source(str(out / "train"))
    assert len(train) == 12 and len(build_source(str(out / "test"))) == 5
    assert sorted(train.classes) == train.classes and len(train.classes) == 10
    img, label = train[0]
    assert img.size == (28, 28) and img.mode == "RGB" and 0 <= label < 10
    missing = prepare(str(out), "--source", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "dataset-fashion-mnist" in missing.stderr


def names(folder: Path) -> set[str]:
    return {f"{p.parent.name}/{p.name}" for p in folder.rglob("*.png")}


@pytest.mark.slow
def test_prepare_fashion_mnist_derived_sets(tmp_path):
    src = tmp_path / "src"
    write_fake_fashion_mnist(src, 100, 10)
    out = tmp_path / "fm"
    # A folder left half-written by a killed run is discarded, not kept as done.
    stale = out / "holdout20" / "val.partial" / "bag"
    stale.mkdir(parents=True)
    (stale / "stale.png").write_bytes(b"")
    proc = prepare(str(out), "--source", str(src), "--holdout", "20", "--subset", "20", "--holdout-subset", "30")
    assert proc.returncode == 0, proc.stderr
    val, rest = names(out / "holdout20" / "val"), names(out / "holdout20" / "train")
    small = names(out / "holdout20" / "subset30" / "train")
    assert len(val) == 20 and len(rest) == 80 and not val & rest and len(small) == 30
    assert small <= rest  # the small tuning set never contains a holdout image
    assert names(out / "subset20" / "train") == val  # same size and seed: the documented coincidence
    for folder, per_class in ((out / "holdout20" / "val", 2), (out / "holdout20" / "subset30" / "train", 3)):
        assert sorted(len(list(d.glob("*.png"))) for d in folder.iterdir()) == [per_class] * 10
    assert not list(out.rglob("*.partial")) and not list(out.rglob("stale.png"))
    alone = prepare(str(out), "--source", str(src), "--holdout-subset", "30")
    assert alone.returncode != 0 and "--holdout" in alone.stderr
    too_big = prepare(str(out), "--source", str(src), "--holdout", "20", "--holdout-subset", "80")
    assert too_big.returncode != 0 and "between 1 and 79" in too_big.stderr


@pytest.mark.slow
def test_prepare_fashion_mnist_frames_each_garment_small_and_centred(tmp_path):
    src = tmp_path / "src"
    write_fake_fashion_mnist(src, 10, 10)
    plain, framed = tmp_path / "fm", tmp_path / "fm-frame"
    assert prepare(str(plain), "--source", str(src)).returncode == 0
    proc = prepare(str(framed), "--source", str(src), "--frame", "0.25")
    assert proc.returncode == 0, proc.stderr
    for name in sorted(names(plain / "test")):
        before = np.asarray(Image.open(plain / "test" / name))
        after = np.asarray(Image.open(framed / "test" / name))
        assert after.shape == before.shape == (28, 28)
        # The garment is the central 14 × 14 (a quarter of the area), the box-filtered original; the rest is empty.
        assert after[7:21, 7:21].any() and not after[:7].any() and not after[21:].any()
        assert not after[:, :7].any() and not after[:, 21:].any()
        assert np.abs(after[7:21, 7:21].astype(float) - before.reshape(14, 2, 14, 2).mean((1, 3))).max() <= 1
    bad = prepare(str(tmp_path / "x"), "--source", str(src), "--frame", "1.5")
    assert bad.returncode != 0 and "--frame" in bad.stderr
