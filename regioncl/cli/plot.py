"""Pictures of pretraining runs.

regioncl plot runs/default --out plots/                     # loss and kNN curves of a run
regioncl plot runs/moco runs/regioncl --out plots/          # + kNN per epoch, compared
regioncl plot runs/default --out plots/ --composites        # + a batch of composites, boxes outlined
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import parser


def main(argv: list[str] | None = None, prog: str | None = None) -> list[Path]:
    p = parser(__doc__, prog)
    p.add_argument("runs", nargs="*", help="pretraining output folders (with metrics.jsonl)")
    p.add_argument("--embeddings", help="a Parquet file of `regioncl embed`: draw its 2-D map, coloured by class")
    p.add_argument(
        "--method", choices=["pca", "umap"], default="pca", help="for --embeddings (umap: pip install umap-learn)"
    )
    p.add_argument("--out", default="plots")
    p.add_argument("--composites", action="store_true", help="also draw composites of the sample set")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if not a.runs and not a.embeddings:
        p.error("give run folders, or --embeddings FILE")
    import torch

    from ..backbones import create_encoder
    from ..data import build_source, eval_transform
    from ..errors import UserFileNotFoundError
    from ..files import config_value
    from ..study.plots import check_plotting, plot_compare, plot_composites, plot_embeddings, plot_run, read_metrics
    from ..swapping import region_swap

    # every input checked before the output folder is made
    check_plotting(a.method if a.embeddings else "pca")
    if a.embeddings and not Path(a.embeddings).is_file():
        raise UserFileNotFoundError(f"--embeddings {a.embeddings}: no such file (write one with regioncl embed)")
    for run in a.runs:
        read_metrics(run)
    if a.composites and a.runs and not (Path(a.runs[0]) / "config.json").is_file():
        raise UserFileNotFoundError(f"--composites: {a.runs[0]} has no config.json (the run's settings)")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if a.embeddings:
        written.append(out / f"{Path(a.embeddings).stem}_{a.method}.png")
        plot_embeddings(a.embeddings, written[-1], a.method)
    for run in a.runs:
        written.append(out / f"{Path(run).name}_curves.png")
        plot_run(run, written[-1])
    if len(a.runs) > 1:
        written.append(out / "compare_knn.png")
        plot_compare(a.runs, written[-1])
    if a.composites and a.runs:
        cfg = json.loads((Path(a.runs[0]) / "config.json").read_text())
        with torch.device("meta"):  # only the stride is needed
            stride = create_encoder(
                config_value(cfg, "model.backbone"), **config_value(cfg, "model.backbone_args", {})
            ).stride
        size = config_value(cfg, "data.image_size")
        source = build_source("sample", "val", image_size=size)
        tf = eval_transform(size, crop_pct=1.0)
        batch = torch.stack([tf(source[i][0]) for i in range(8)])
        swap = region_swap(
            batch,
            stride,
            config_value(cfg, "method.region_cells"),
            config_value(cfg, "method.pairing", "derangement"),
            torch.Generator().manual_seed(a.seed),
        )
        written.append(out / "composites.png")
        plot_composites(swap, stride, written[-1])
    for path in written:
        print(path)
    return written
