"""A results table across pretraining runs (seeds of one recipe averaged), as Markdown.

A run folder is summarised from its ``metrics.jsonl`` (kNN per epoch, throughput), its
``config.json`` and, when present, the ``linear.json`` a linear probe left there. Runs named
``NAME_s<seed>`` are grouped by ``NAME``.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from pathlib import Path
from typing import Any, Sequence

from .plots import read_metrics


def run_group(run_dir: str | os.PathLike) -> str:
    """``regioncl_m_s1`` → ``regioncl_m``: the recipe a seeded run belongs to."""
    return re.sub(r"_s\d+$", "", Path(run_dir).name)


def summarize_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """kNN top-1 before training, at the end and the best after an epoch, linear top-1/top-5 (None when not probed), median images/s,
    steps and the pretraining minutes those imply (kNN evaluations excluded)."""
    run = Path(run_dir)
    records = read_metrics(run)
    cfg = json.loads((run / "config.json").read_text())
    knn = [(r["epoch"], r["knn_top1"]) for r in records if "knn_top1" in r]
    ips = [r["images_per_s"] for r in records if "images_per_s" in r]
    steps = max((r["step"] for r in records), default=0)
    linear = json.loads((run / "linear.json").read_text()) if (run / "linear.json").is_file() else {}
    median_ips = statistics.median(ips) if ips else None
    return {
        "run": run.name, "group": run_group(run), "method": cfg["method"], "epochs": cfg["epochs"], "seed": cfg["seed"],
        "knn_before": knn[0][1] if knn and knn[0][0] == 0 else None,
        "knn_final": knn[-1][1] if knn else None,
        "knn_best": max((v for e, v in knn if e > 0), default=None),  # of the trained encoder, not the random init
        "knn_by_epoch": knn, "linear_top1": linear.get("top1"), "linear_top5": linear.get("top5"),
        "images_per_s": median_ips, "steps": steps,
        "train_minutes": steps * cfg["batch_size"] / median_ips / 60 if median_ips else None,
    }


def _mean_sd(values: Sequence[float | None], scale: float = 100.0) -> str:
    values = [scale * v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def markdown_table(run_dirs: Sequence[str | os.PathLike]) -> str:
    """One row per recipe (mean ± sample s.d. over its seeds), then one row per run."""
    rows = [summarize_run(r) for r in run_dirs]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    head = ("| runs | method | epochs | seeds | kNN top-1 (%) final | kNN best | linear top-1 | linear top-5 "
            "| img/s | pretrain min |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for name, rs in groups.items():
        lines.append(
            f"| {name} | {rs[0]['method']} | {rs[0]['epochs']} | {', '.join(str(r['seed']) for r in rs)} "
            f"| {_mean_sd([r['knn_final'] for r in rs])} | {_mean_sd([r['knn_best'] for r in rs])} "
            f"| {_mean_sd([r['linear_top1'] for r in rs])} | {_mean_sd([r['linear_top5'] for r in rs])} "
            f"| {_mean_sd([r['images_per_s'] for r in rs], 1.0)} | {_mean_sd([r['train_minutes'] for r in rs], 1.0)} |"
        )
    per_run = "\n".join(
        f"| {r['run']} | {r['method']} | {r['epochs']} | {r['seed']} | {_mean_sd([r['knn_final']])} "
        f"| {_mean_sd([r['knn_best']])} | {_mean_sd([r['linear_top1']])} | {_mean_sd([r['linear_top5']])} "
        f"| {_mean_sd([r['images_per_s']], 1.0)} | {_mean_sd([r['train_minutes']], 1.0)} |"
        for r in rows
    )
    return head + "\n".join(lines) + "\n\n" + head + per_run + "\n"
