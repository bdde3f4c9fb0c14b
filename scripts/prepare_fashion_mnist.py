#!/usr/bin/env python
"""Write Fashion-MNIST as image folders (train/ and test/, one subfolder per class) for regioncl.

    apt-get install dataset-fashion-mnist          # Debian's package: the IDX files, no download at run time
    python scripts/prepare_fashion_mnist.py data/fashion-mnist
    python scripts/pretrain.py --config fmnist_regioncl_m --seed 0

Reads /usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz (or --source DIR). Derived sets, all
carved from the *training* images only (the official test split stays for final numbers):

    --holdout 5000   also writes holdout5000/train (55,000) and holdout5000/val (5,000, class-stratified):
                     choose hyperparameters there, never on test/
    --subset 5000    also writes subset5000/train: a class-balanced random 5,000 of train/
    --holdout 5000 --holdout-subset 5000
                     also writes holdout5000/subset5000/train: a class-balanced 5,000 of holdout5000/train,
                     the small set on which to choose small-set settings, scored on holdout5000/val

With the same size and seed, subsetN/train and holdoutN/val are the same images (one draw from the
same labels): never score a model pretrained on subsetN/train on holdoutN/val.

    --frame 0.25     every image (all the folders above) shrunk so that the garment's 28 × 28 frame
                     covers this fraction of the image's area, centred on an empty (black) 28 × 28
                     canvas: small centred objects at the same input size. Give it its own OUT.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from regioncl.data.idx import read_idx  # noqa: E402

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
SPLITS = {"train": "train", "test": "t10k"}


def stratified_pick(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` items, the same share of every class (±1), drawn with ``seed``; sorted."""
    if not 0 < n < len(labels):
        raise ValueError(f"cannot pick {n} of {len(labels)} images")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = [np.flatnonzero(labels == c) for c in classes]
    # Largest remainder: class shares proportional to the class sizes, summing to n exactly.
    quota = np.array([len(ix) for ix in per_class]) * n / len(labels)
    take = np.floor(quota).astype(int)
    take[np.argsort(take - quota)[: n - take.sum()]] += 1
    return np.sort(np.concatenate([rng.choice(ix, k, replace=False) for ix, k in zip(per_class, take)]))


def frame(images: np.ndarray, area: float) -> np.ndarray:
    """``images`` ``(N, H, W)`` shrunk to cover ``area`` of their own size (box filter, the side
    rounded to a pixel), centred on a black canvas of the original size."""
    n, h, w = images.shape
    side_h, side_w = round(h * area**0.5), round(w * area**0.5)
    top, left = (h - side_h) // 2, (w - side_w) // 2
    out = np.zeros_like(images)
    for i in range(n):
        small = Image.fromarray(images[i], mode="L").resize((side_w, side_h), Image.Resampling.BOX)
        out[i, top : top + side_h, left : left + side_w] = np.asarray(small)
    return out


def write_folder(out: Path, images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
    """One PNG per image, named by its index in the official split, under ``out/CLASS/``.

    Written beside ``out`` and renamed into place at the end, because an existing ``out`` counts as
    done: a run killed midway must not leave a partial folder that the next run would keep.
    """
    if out.is_dir():
        return
    part = out.with_name(out.name + ".partial")
    shutil.rmtree(part, ignore_errors=True)
    for name in CLASSES:
        (part / name).mkdir(parents=True)
    for i in indices:
        Image.fromarray(images[i], mode="L").save(part / CLASSES[int(labels[i])] / f"{i:05d}.png")
    part.rename(out)
    print(f"{len(indices)} images → {out}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument(
        "--holdout", type=int, help="carve this many training images into holdoutN/val (the rest: holdoutN/train)"
    )
    p.add_argument(
        "--subset", type=int, help="write a class-balanced subset of this many training images to subsetN/train"
    )
    p.add_argument(
        "--holdout-subset",
        type=int,
        help="with --holdout: write holdoutN/subsetM/train, a class-balanced M of holdoutN/train",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the holdout and subset draws")
    p.add_argument(
        "--frame",
        type=float,
        default=1.0,
        help="area fraction the garment covers, centred on an empty canvas of the same size (default 1)",
    )
    a = p.parse_args(argv)
    if not 0 < a.frame <= 1:
        p.error(f"--frame is a fraction of the image's area in (0, 1], got {a.frame}")
    if a.holdout_subset is not None and a.holdout is None:
        p.error("--holdout-subset draws from holdoutN/train: give --holdout N too")
    data = {}
    for split, prefix in SPLITS.items():
        files = [a.source / f"{prefix}-{kind}-ubyte.gz" for kind in ("images-idx3", "labels-idx1")]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            p.error(f"missing {missing}: install Debian's dataset-fashion-mnist or pass --source")
        images, labels = (read_idx(f) for f in files)
        if len(images) != len(labels):
            p.error(f"{split}: {len(images)} images but {len(labels)} labels")
        data[split] = (frame(images, a.frame) if a.frame < 1 else images), labels
    images, labels = data["train"]
    for n in (a.holdout, a.subset):
        if n is not None and not 0 < n < len(labels):
            p.error(f"--holdout and --subset must be between 1 and {len(labels) - 1}, got {n}")
    if a.holdout_subset is not None and not 0 < a.holdout_subset < len(labels) - a.holdout:
        p.error(f"--holdout-subset must be between 1 and {len(labels) - a.holdout - 1}, got {a.holdout_subset}")
    for split, (split_images, split_labels) in data.items():
        write_folder(a.out / split, split_images, split_labels, np.arange(len(split_images)))
    if a.holdout:
        val = stratified_pick(labels, a.holdout, a.seed)
        rest = np.setdiff1d(np.arange(len(labels)), val)
        holdout = a.out / f"holdout{a.holdout}"
        write_folder(holdout / "val", images, labels, val)
        write_folder(holdout / "train", images, labels, rest)
        if a.holdout_subset:
            pick = rest[stratified_pick(labels[rest], a.holdout_subset, a.seed)]
            write_folder(holdout / f"subset{a.holdout_subset}" / "train", images, labels, pick)
    if a.subset:
        write_folder(a.out / f"subset{a.subset}" / "train", images, labels, stratified_pick(labels, a.subset, a.seed))


if __name__ == "__main__":
    main()
