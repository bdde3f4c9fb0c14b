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
    p.add_argument("--holdout", type=int, help="carve this many training images into holdoutN/val (the rest: holdoutN/train)")
    p.add_argument("--subset", type=int, help="write a class-balanced subset of this many training images to subsetN/train")
    p.add_argument("--holdout-subset", type=int,
                   help="with --holdout: write holdoutN/subsetM/train, a class-balanced M of holdoutN/train")
    p.add_argument("--seed", type=int, default=0, help="seed of the holdout and subset draws")
    a = p.parse_args(argv)
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
        data[split] = images, labels
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
