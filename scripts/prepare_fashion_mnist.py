#!/usr/bin/env python
"""Write Fashion-MNIST as image folders (train/ and test/, one subfolder per class) for regioncl.

    apt-get install dataset-fashion-mnist          # Debian's package: the IDX files, no download at run time
    python scripts/prepare_fashion_mnist.py data/fashion-mnist
    python scripts/pretrain.py --config fmnist_regioncl_m --seed 0

Reads /usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz (or --source DIR).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from regioncl.data.idx import read_idx  # noqa: E402

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
SPLITS = {"train": "train", "test": "t10k"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    a = p.parse_args(argv)
    for split, prefix in SPLITS.items():
        files = [a.source / f"{prefix}-{kind}-ubyte.gz" for kind in ("images-idx3", "labels-idx1")]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            p.error(f"missing {missing}: install Debian's dataset-fashion-mnist or pass --source")
        images, labels = (read_idx(f) for f in files)
        if len(images) != len(labels):
            p.error(f"{split}: {len(images)} images but {len(labels)} labels")
        for name in CLASSES:
            (a.out / split / name).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(images, labels)):
            Image.fromarray(img, mode="L").save(a.out / split / CLASSES[int(label)] / f"{i:05d}.png")
        print(f"{split}: {len(images)} images → {a.out / split}")


if __name__ == "__main__":
    main()
