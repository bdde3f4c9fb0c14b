import json

import pytest
import torch

from regioncl.study.plots import plot_compare, plot_composites, plot_run
from regioncl.swapping import region_swap


def write_run(path, offset=0.0):
    path.mkdir(parents=True)
    recs = [{"step": 0, "epoch": 0.0, "knn_top1": 0.1 + offset}]
    recs += [
        {"step": s, "epoch": s / 10, "lr": 0.1, "loss": 5.0 - s / 10, "loss_ins": 2.0, "loss_reg": 3.0 - s / 10}
        for s in (5, 10, 15, 20)
    ]
    recs += [{"step": 20, "epoch": 2.0, "knn_top1": 0.4 + offset}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_run_curves_plot_the_logged_values(tmp_path):
    write_run(tmp_path / "run")
    fig = plot_run(tmp_path / "run", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loss_ax, knn_ax = fig.axes
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    assert set(lines) == {"loss", "loss_ins", "loss_reg"}
    assert list(lines["loss"].get_xdata()) == [5, 10, 15, 20]
    assert list(lines["loss"].get_ydata()) == pytest.approx([4.5, 4.0, 3.5, 3.0])
    assert list(knn_ax.get_lines()[0].get_ydata()) == pytest.approx([10.0, 40.0])


def test_comparison_has_one_curve_per_run_by_epoch(tmp_path):
    write_run(tmp_path / "a")
    write_run(tmp_path / "b", offset=0.1)
    fig = plot_compare([tmp_path / "a", tmp_path / "b"], tmp_path / "cmp.png")
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["a", "b"]
    assert list(lines[1].get_xdata()) == [0.0, 2.0] and list(lines[1].get_ydata()) == pytest.approx([20.0, 50.0])


def test_composites_outline_the_pasted_box(tmp_path):
    swap = region_swap(torch.randn(4, 3, 64, 64), 16, generator=torch.Generator().manual_seed(0))
    fig = plot_composites(swap, 16, tmp_path / "c.png")
    rows, cols = swap.box.pixel_slices(16)
    for i, ax in enumerate(fig.axes):
        (rect,) = ax.patches
        assert rect.get_xy() == (cols.start - 0.5, rows.start - 0.5)
        assert (rect.get_width(), rect.get_height()) == (cols.stop - cols.start, rows.stop - rows.start)
        assert ax.get_title() == f"{i} ← paste of {int(swap.perm[i])}"


def test_missing_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot_run(tmp_path, tmp_path / "x.png")


def test_comparison_draws_reference_levels(tmp_path):
    write_run(tmp_path / "a")
    fig = plot_compare([tmp_path / "a"], tmp_path / "cmp.png", references={"raw pixels": 0.42})
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2 and list(lines[1].get_ydata()) == pytest.approx([42.0, 42.0])  # in percent, like the curve


@pytest.mark.parametrize("case", ["no_run", "not_a_run", "no_embeddings", "no_matplotlib", "no_umap"])
def test_plot_command_refuses_in_one_line_before_writing(tmp_path, monkeypatch, capsys, case):
    import builtins

    from regioncl.cli import run

    write_run(tmp_path / "good")
    real_import = builtins.__import__
    missing = {"no_matplotlib": "matplotlib", "no_umap": "umap"}.get(case)

    def fake_import(name, *args, **kwargs):
        if missing and name.split(".")[0] == missing:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    (tmp_path / "e.parquet").write_bytes(b"")  # never read: the refusal comes first
    args, says = {
        "no_run": ([str(tmp_path / "nope")], "nope/metrics.jsonl does not exist"),
        "not_a_run": ([str(tmp_path / "good"), str(tmp_path)], "a pretraining output folder?"),
        "no_embeddings": (["--embeddings", str(tmp_path / "none.parquet")], "none.parquet: no such file"),
        "no_matplotlib": ([str(tmp_path / "good")], "pip install 'regioncl[plots]'"),
        "no_umap": (["--embeddings", str(tmp_path / "e.parquet"), "--method", "umap"], "pip install umap-learn"),
    }[case]
    assert run("plot", args + ["--out", str(tmp_path / "plots")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("regioncl: error: ")]
    assert len(errors) == 1 and says in errors[0] and "Traceback" not in err
    assert not (tmp_path / "plots").exists()
