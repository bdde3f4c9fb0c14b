#!/usr/bin/env python
"""Pictures of pretraining runs.

    python scripts/plot.py runs/default --out plots/                     # loss and kNN curves of a run
    python scripts/plot.py runs/moco runs/regioncl --out plots/          # + kNN per epoch, compared
    python scripts/plot.py runs/default --out plots/ --composites        # + a batch of composites, boxes outlined
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from regioncl.backbones import create_encoder  # noqa: E402
from regioncl.data import build_source, eval_transform  # noqa: E402
from regioncl.files import config_value  # noqa: E402
from regioncl.study.plots import plot_compare, plot_composites, plot_run  # noqa: E402
from regioncl.swapping import region_swap  # noqa: E402


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="pretraining output folders (with metrics.jsonl)")
    p.add_argument("--out", default="plots")
    p.add_argument("--composites", action="store_true", help="also draw composites of the sample set")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for run in a.runs:
        written.append(out / f"{Path(run).name}_curves.png")
        plot_run(run, written[-1])
    if len(a.runs) > 1:
        written.append(out / "compare_knn.png")
        plot_compare(a.runs, written[-1])
    if a.composites:
        cfg = json.loads((Path(a.runs[0]) / "config.json").read_text())
        with torch.device("meta"):  # only the stride is needed
            stride = create_encoder(config_value(cfg, "model.backbone"), **config_value(cfg, "model.backbone_args", {})).stride
        size = config_value(cfg, "data.image_size")
        source = build_source("sample", "val", image_size=size)
        tf = eval_transform(size, crop_pct=1.0)
        batch = torch.stack([tf(source[i][0]) for i in range(8)])
        swap = region_swap(batch, stride, config_value(cfg, "method.region_cells"),
                           config_value(cfg, "method.pairing", "derangement"),
                           torch.Generator().manual_seed(a.seed))
        written.append(out / "composites.png")
        plot_composites(swap, stride, written[-1])
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
