"""Results of pretraining runs: one summary per run, then the arithmetic of a study's tables.

A run folder is summarised from its ``metrics.jsonl`` (kNN per epoch, throughput), its
``config.json`` and, when present, the ``linear.json`` a linear probe left there. Runs named
``NAME_s<seed>`` are grouped by ``NAME`` (a configuration); configurations are compared in pairs,
as the difference of their seed means and its standard error.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files import config_value
from .plots import read_metrics

#: the metrics compared between the configurations of a pair, as summarize_run names them.
PAIR_METRICS = ("knn_final", "knn_best", "linear_top1", "linear_top5")


def run_group(run_dir: str | os.PathLike) -> str:
    """``regioncl_m_s1`` → ``regioncl_m``: the recipe a seeded run belongs to."""
    return re.sub(r"_s\d+$", "", Path(run_dir).name)


def summarize_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """kNN top-1 before training, at the end (``knn_final``, also as ``knn_top1``) and the best after an epoch,
    linear top-1/top-5 (None when not probed), median images/s, steps and the pretraining minutes those imply
    (kNN evaluations excluded); the logged windows' loss terms (``losses``: ``[step, loss, loss_ins, loss_reg]``,
    the last two None where the method has no such term) and the region diagnostics' records
    (``diagnostics``, ``run.diagnose_every``), so that a study's reading of its curves stays with its rows."""
    run = Path(run_dir)
    records = read_metrics(run)
    cfg = json.loads((run / "config.json").read_text())
    # One score per epoch (the last), so that a folder holding two at one epoch (a run that took no
    # step, scored before and after) gives one point.
    knn = list({r["epoch"]: r["knn_top1"] for r in records if "knn_top1" in r}.items())
    ips = [r["images_per_s"] for r in records if "images_per_s" in r]
    steps = max((r["step"] for r in records), default=0)
    linear = json.loads((run / "linear.json").read_text()) if (run / "linear.json").is_file() else {}
    median_ips = statistics.median(ips) if ips else None
    method, epochs, seed, batch = (
        config_value(cfg, k) for k in ("model.method", "optim.epochs", "run.seed", "optim.batch_size")
    )
    return {
        "run": run.name,
        "group": run_group(run),
        "method": method,
        "epochs": epochs,
        "seed": seed,
        "knn_before": knn[0][1] if knn and knn[0][0] == 0 else None,
        "knn_final": knn[-1][1] if knn else None,
        "knn_top1": knn[-1][1] if knn else None,
        "knn_best": max((v for e, v in knn if e > 0), default=None),  # of the trained encoder, not the random init
        "knn_by_epoch": knn,
        "linear_top1": linear.get("top1"),
        "linear_top5": linear.get("top5"),
        "images_per_s": median_ips,
        "steps": steps,
        "train_minutes": steps * batch / median_ips / 60 if median_ips else None,
        "losses": [[r["step"], *(_round(r.get(k)) for k in LOSS_TERMS)] for r in records if "loss" in r],
        "diagnostics": [
            {k: _round(v) for k, v in r.items() if k == "step" or k.startswith("diag_")}
            for r in records
            if any(k.startswith("diag_") for k in r)
        ],
    }


#: the loss terms a row keeps per logged window (``losses``), in this order after the step
LOSS_TERMS = ("loss", "loss_ins", "loss_reg")


def _round(value: Any) -> Any:
    """Five significant digits: enough to read a curve, not a file of noise."""
    return float(f"{value:.5g}") if isinstance(value, float) else value


def _values(rows: list[dict[str, Any]], name: str, metric: str) -> list[float]:
    return [r[metric] for r in rows if r["group"] == name and r.get(metric) is not None]


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (None below two values) and count."""
    if not values:
        return None, None, 0
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None, len(values)


def configuration_summary(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Mean, s.d. and count of every compared metric (and the pretraining minutes) over a configuration's seeds."""
    mine = [r for r in rows if r["group"] == name]
    out: dict[str, Any] = {
        "name": name,
        "method": mine[0]["method"],
        "epochs": mine[0]["epochs"],
        "seeds": [r["seed"] for r in mine],
    }
    for metric in (*PAIR_METRICS, "train_minutes"):
        mean, sd, n = mean_sd(_values(rows, name, metric))
        out[metric] = {"mean": mean, "sd": sd, "n": n}
    return out


def pair_difference(rows: list[dict[str, Any]], a: str, b: str, metric: str) -> dict[str, Any] | None:
    """``a − b`` on ``metric``: the difference of the seed means and its standard error
    √(s_a²/n_a + s_b²/n_b) (the two configurations' seeds taken as independent samples);
    ``resolved_at`` is |difference| / SE. None when a side has no value; the SE is None
    while a side has fewer than two seeds."""
    (ma, sa, na), (mb, sb, nb) = mean_sd(_values(rows, a, metric)), mean_sd(_values(rows, b, metric))
    if ma is None or mb is None:
        return None
    diff = ma - mb
    se = math.sqrt(sa**2 / na + sb**2 / nb) if sa is not None and sb is not None else None
    if se is None:
        resolved = None
    elif se > 0:
        resolved = abs(diff) / se
    else:
        resolved = math.inf if diff else 0.0
    return {"diff": diff, "se": se, "resolved_at": resolved, "n": [na, nb]}


def pair_summary(rows: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    return {"pair": [a, b], **{m: pair_difference(rows, a, b, m) for m in PAIR_METRICS}}


def _pct(stat: dict[str, Any], scale: float = 100.0) -> str:
    if stat["mean"] is None:
        return "–"
    if stat["sd"] is None:
        return f"{scale * stat['mean']:.2f}"
    return f"{scale * stat['mean']:.2f} ± {scale * stat['sd']:.2f}"


def _diff(d: dict[str, Any] | None) -> str:
    if d is None:
        return "–"
    if d["se"] is None:
        return f"{100 * d['diff']:+.2f}"
    return f"{100 * d['diff']:+.2f} ± {100 * d['se']:.2f}"


def study_markdown(configs: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> str:
    """The per-configuration table (mean ± s.d. over seeds) and the per-pair table (difference ± SE), in points."""
    lines = [
        "| configuration | method | epochs | seeds | kNN top-1 final (%) | kNN best | linear top-1 | linear top-5 | pretrain min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in configs:
        lines.append(
            f"| {c['name']} | {c['method']} | {c['epochs']} | {', '.join(map(str, c['seeds']))} "
            f"| {_pct(c['knn_final'])} | {_pct(c['knn_best'])} | {_pct(c['linear_top1'])} "
            f"| {_pct(c['linear_top5'])} | {_pct(c['train_minutes'], 1.0)} |"
        )
    if pairs:
        lines += [
            "",
            "| pair (A − B, points ± SE) | kNN final | kNN best | linear top-1 | linear top-5 |",
            "|---|---|---|---|---|",
        ]
        for p in pairs:
            lines.append(f"| {p['pair'][0]} − {p['pair'][1]} | " + " | ".join(_diff(p[m]) for m in PAIR_METRICS) + " |")
    return "\n".join(lines) + "\n"
