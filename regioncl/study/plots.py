"""Pictures of runs: loss and kNN curves, a batch of composites, a comparison across runs.

matplotlib is an optional dependency (``pip install regioncl[plots]``); it is imported
only here, with the non-interactive Agg backend.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..errors import MissingExtraError, UserFileNotFoundError
from ..swapping import SwapResult


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:  # a clear message instead of a bare ImportError deep in a script
        raise MissingExtraError("plots need matplotlib: pip install 'regioncl[plots]' (or matplotlib)") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _umap() -> Any:
    try:
        import umap
    except ImportError as e:
        raise MissingExtraError("--method umap needs umap-learn: pip install umap-learn (or use pca)") from e
    return umap


def check_plotting(method: str = "pca") -> None:
    """Raise :class:`~regioncl.errors.MissingExtraError` now, before any work, when a package the
    plots (and ``method``'s 2-D map) need is not installed."""
    _pyplot()
    if method == "umap":
        _umap()


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserFileNotFoundError(f"{path} does not exist: is {run_dir} a pretraining output folder?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _series(records: list[dict[str, Any]], key: str, x: str = "step") -> tuple[list[float], list[float]]:
    rows = [(r[x], r[key]) for r in records if key in r]
    return [a for a, _ in rows], [b for _, b in rows]


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike) -> Any:
    """Loss terms per step and, when logged, kNN top-1 per step; saved as a PNG. Returns the figure."""
    plt = _pyplot()
    records = read_metrics(run_dir)
    loss_keys = sorted({k for r in records for k in r if k.startswith("loss")})
    has_knn = any("knn_top1" in r for r in records)
    fig, axes = plt.subplots(1, 2 if has_knn else 1, figsize=(11 if has_knn else 6, 4), squeeze=False)
    ax = axes[0][0]
    for key in loss_keys:
        ax.plot(*_series(records, key), label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{Path(run_dir).name}: losses")
    ax.legend()
    if has_knn:
        steps, top1 = _series(records, "knn_top1")
        axes[0][1].plot(steps, [100 * v for v in top1], marker="o")
        axes[0][1].set_xlabel("step")
        axes[0][1].set_ylabel("kNN top-1 (%)")
        axes[0][1].set_title("kNN top-1")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return fig


def plot_compare(
    run_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    metric: str = "knn_top1",
    labels: Sequence[str] | None = None,
    references: dict[str, float] | None = None,
) -> Any:
    """One curve of ``metric`` per run against the epoch (kNN by default), saved as a PNG;
    ``references`` (label → value, same units as the metric) are drawn as dashed lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    scale = 100 if metric == "knn_top1" else 1
    for i, run in enumerate(run_dirs):
        records = read_metrics(run)
        # kNN records carry the epochs completed (0 before training).
        x, y = _series(records, metric, x="epoch")
        ax.plot(x, [scale * v for v in y], marker="o", label=labels[i] if labels else Path(run).name)
    for name, value in (references or {}).items():
        ax.axhline(scale * value, linestyle="--", color="grey", linewidth=1)
        ax.annotate(name, (0, scale * value), textcoords="offset points", xytext=(2, -10), fontsize=8, color="grey")
    ax.set_xlabel("epoch")
    ax.set_ylabel("kNN top-1 (%)" if metric == "knn_top1" else metric)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return fig


def plot_pair(
    runs: dict[str, Sequence[Sequence[tuple[float, float]]]],
    out: str | os.PathLike,
    title: str | None = None,
    references: dict[str, float] | None = None,
) -> Any:
    """kNN top-1 per epoch of two (or more) configurations, each given as one ``[(epoch, top1), ...]``
    curve per seed (a study row's ``knn_by_epoch``): each seed a thin line and the mean over seeds a
    thick one in the same colour; ``references`` as dashed lines. Saved as a PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for colour, (name, seed_curves) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], runs.items()):
        curves = [{float(e): v for e, v in curve} for curve in seed_curves]
        for curve in curves:
            ax.plot(list(curve), [100 * v for v in curve.values()], color=colour, alpha=0.35, linewidth=1)
        # The mean over the seeds at the epochs every seed evaluated.
        epochs = sorted(set.intersection(*(set(c) for c in curves)))
        mean = [100 * sum(c[e] for c in curves) / len(curves) for e in epochs]
        ax.plot(
            epochs,
            mean,
            color=colour,
            marker="o",
            linewidth=2,
            label=f"{name} ({len(curves)} seed{'' if len(curves) == 1 else 's'})",
        )
    for name, value in (references or {}).items():
        ax.axhline(100 * value, linestyle="--", color="grey", linewidth=1)
        ax.annotate(name, (0, 100 * value), textcoords="offset points", xytext=(2, -10), fontsize=8, color="grey")
    ax.set_xlabel("epoch")
    ax.set_ylabel("kNN top-1 (%)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return fig


def embedding_map(
    path: str | os.PathLike, method: str = "pca", max_points: int = 20000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D coordinates ``(N, 2)`` and labels ``(N,)`` (-1 without) of the embeddings in a Parquet
    file written by ``regioncl embed``: PCA (the top two principal components), or UMAP when
    ``umap-learn`` is installed; at most ``max_points`` rows, drawn at random."""
    import numpy as np
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    n = parquet.metadata.num_rows
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points].sort().values.numpy()
    vectors, labels, start = [], [], 0
    for g in range(parquet.num_row_groups):  # one row group in memory at a time
        group = parquet.read_row_group(g, columns=["embedding", "label"])
        rows = keep[(keep >= start) & (keep < start + group.num_rows)] - start
        start += group.num_rows
        if len(rows):
            picked = group.take(rows)
            dim = picked.column("embedding").type.list_size
            vectors.append(np.asarray(picked.column("embedding").combine_chunks().flatten()).reshape(-1, dim))
            labels += [-1 if v is None else v for v in picked.column("label").to_pylist()]
    vectors, labels = torch.from_numpy(np.concatenate(vectors)).float(), torch.tensor(labels)
    if method == "umap":
        return torch.from_numpy(_umap().UMAP(random_state=seed).fit_transform(vectors.numpy())), labels
    centred = vectors - vectors.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T, labels


def embedding_classes(path: str | os.PathLike) -> list[str]:
    """The class names of a ``regioncl embed`` file, in label order (its metadata; empty without)."""
    import json

    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).schema_arrow.metadata or {}
    return json.loads(metadata.get(b"regioncl.classes", b"[]"))


def plot_embeddings(path: str | os.PathLike, out: str | os.PathLike, method: str = "pca") -> Any:
    """A 2-D map of the embeddings in ``path`` (see :func:`embedding_map`), one colour per class,
    named in the legend (labels are categories: no colour bar that would order them); saved as a PNG."""
    plt = _pyplot()
    xy, labels = embedding_map(path, method)
    classes = embedding_classes(path)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    present = sorted(int(v) for v in labels.unique())
    palette = plt.get_cmap("tab10" if len(present) <= 10 else "tab20")
    for i, label in enumerate(present):
        mine = labels == label
        name = "no label" if label < 0 else (classes[label] if label < len(classes) else str(label))
        colour = "lightgrey" if label < 0 else palette(i % palette.N)
        ax.scatter(xy[mine, 0], xy[mine, 1], color=colour, s=4, alpha=0.7, label=name)
    if len(present) <= 20 and present != [-1]:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=3, frameon=False)
    ax.set_title(
        f"{Path(path).name}: {method.upper()} of {len(labels)} embeddings, {len(present)} classes", fontsize=10
    )
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return fig


def plot_composites(swap: SwapResult, stride: int, out: str | os.PathLike, max_images: int = 8) -> Any:
    """The first composites of a batch with the pasted box outlined and π(i) in the title."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    n = min(max_images, swap.composite.shape[0])
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    fig, axes = plt.subplots(1, n, figsize=(2 * n, 2.3), squeeze=False)
    rows, cols = swap.box.pixel_slices(stride)
    for i in range(n):
        img = (swap.composite[i].detach().float().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
        ax = axes[0][i]
        ax.imshow(img)
        ax.add_patch(
            Rectangle(
                (cols.start - 0.5, rows.start - 0.5),
                cols.stop - cols.start,
                rows.stop - rows.start,
                fill=False,
                edgecolor="red",
                linewidth=2,
            )
        )
        ax.set_title(f"{i} ← paste of {int(swap.perm[i])}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return fig
