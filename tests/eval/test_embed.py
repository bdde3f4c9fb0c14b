"""`regioncl embed`: every image once, unit-norm rows, resumable chunks, the same rows in any number of processes."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from regioncl.train.config import make_config
from regioncl.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory):
    """A run folder whose encoder is the random init (no step): what embedding needs, quickly."""
    out = tmp_path_factory.mktemp("embed") / "run"
    Trainer(
        make_config(
            overrides={
                "model.backbone": "resnet10t",
                "optim.max_steps": 0,
                "knn.enabled": False,
                "data.num_workers": 0,
                "run.output_dir": str(out),
            }
        )
    ).train()
    return out


def embed_cli(*args: str, launch: list[str] | None = None) -> None:
    command = [*(launch or [sys.executable, "-m"]), "regioncl", "embed", *args]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def read(path: Path) -> dict:
    table = pq.read_table(path)
    vectors = torch.tensor(table.column("embedding").to_pylist())
    return {
        "index": table.column("index").to_pylist(),
        "id": table.column("id").to_pylist(),
        "label": table.column("label").to_pylist(),
        "embedding": vectors,
    }


@pytest.mark.slow
def test_every_image_once_with_unit_norm_and_unique_ids(tmp_path, encoder_run):
    from regioncl.data import SampleShapes

    out = tmp_path / "val.parquet"
    embed_cli(
        str(encoder_run),
        "--data",
        "sample",
        "--split",
        "val",
        "--output",
        str(out),
        "--image_size",
        "32",
        "--chunk_size",
        "300",
        "--batch_size",
        "128",
    )
    rows = read(out)
    n = len(SampleShapes("val", size=32))
    assert rows["index"] == list(range(n)) and len(set(rows["id"])) == n
    assert sorted(set(rows["label"])) == list(range(10))
    assert torch.allclose(rows["embedding"].norm(dim=1), torch.ones(n), atol=1e-5)
    assert pq.ParquetFile(out).num_row_groups == 4  # written in chunks of 300
    assert not out.with_name(out.name + ".parts").exists()


@pytest.mark.slow
def test_a_killed_run_started_again_skips_the_chunks_it_wrote(tmp_path, encoder_run, monkeypatch):
    import regioncl.eval.embed as module
    from regioncl.data import build_source, eval_transform
    from regioncl.distributed import make_accelerator
    from regioncl.eval.features import load_eval_encoder

    source, transform = build_source("sample", "val", image_size=32), eval_transform(32, crop_pct=1.0)
    encoder, acc = load_eval_encoder(str(encoder_run)), make_accelerator()
    real, calls = module._embed_chunk, []

    def dies_at_the_third(*args, **kwargs):
        calls.append(args[3])
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "_embed_chunk", dies_at_the_third)
    with pytest.raises(RuntimeError, match="killed"):
        module.embed(encoder, source, transform, tmp_path / "x.parquet", acc, chunk_size=250)
    assert len(list((tmp_path / "x.parquet.parts").glob("*.parquet"))) == 2
    calls.clear()
    module.embed(encoder, source, transform, tmp_path / "x.parquet", acc, chunk_size=250)
    assert [c[0] for c in calls] == [500, 750]  # only the chunks not written before
    monkeypatch.setattr(module, "_embed_chunk", real)
    module.embed(encoder, source, transform, tmp_path / "clean.parquet", acc, chunk_size=250)
    again, clean = read(tmp_path / "x.parquet"), read(tmp_path / "clean.parquet")
    assert again["id"] == clean["id"] and torch.equal(again["embedding"], clean["embedding"])


@pytest.mark.slow
def test_two_processes_write_the_rows_of_one(tmp_path, encoder_run):
    from launch import accelerate_launch

    args = [str(encoder_run), "--data", "sample", "--split", "val", "--image_size", "32", "--chunk_size", "200"]
    embed_cli(*args, "--output", str(tmp_path / "one.parquet"))
    embed_cli(*args, "--output", str(tmp_path / "two.parquet"), launch=[*accelerate_launch(), "-m"])
    one, two = read(tmp_path / "one.parquet"), read(tmp_path / "two.parquet")
    assert (one["index"], one["id"], one["label"]) == (two["index"], two["id"], two["label"])
    assert torch.allclose(one["embedding"], two["embedding"], atol=1e-5)


@pytest.mark.slow
def test_the_embedding_map_is_drawn(tmp_path, encoder_run):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (the dev install has it)")
    from regioncl.study.plots import embedding_map

    out = tmp_path / "e.parquet"
    embed_cli(str(encoder_run), "--data", "sample", "--split", "val", "--output", str(out), "--image_size", "32")
    xy, labels = embedding_map(out, max_points=500)
    assert xy.shape == (500, 2) and labels.shape == (500,) and int(labels.min()) >= 0
    proc = subprocess.run(
        [sys.executable, "-m", "regioncl", "plot", "--embeddings", str(out), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode == 0 and (tmp_path / "e_pca.png").stat().st_size > 1000, proc.stderr[-2000:]


@pytest.mark.slow
def test_parts_of_another_split_are_discarded_not_mixed_in(tmp_path, encoder_run):
    from regioncl.data import build_source, eval_transform
    from regioncl.distributed import make_accelerator
    from regioncl.eval.embed import embed
    from regioncl.eval.features import load_eval_encoder

    source, transform = build_source("sample", "val", image_size=32), eval_transform(32, crop_pct=1.0)
    encoder, acc = load_eval_encoder(str(encoder_run)), make_accelerator()
    embed(encoder, source, transform, tmp_path / "a.parquet", acc, chunk_size=300)
    parts = tmp_path / "x.parquet.parts"
    parts.mkdir()
    for p in (tmp_path / "a.parquet",):  # a stale part of another chunk size, as a killed job leaves it
        (parts / "rank00000-0000000.parquet").write_bytes(p.read_bytes())
    (parts / "job.json").write_text('{"processes": 1, "chunk_size": 300}')
    embed(encoder, source, transform, tmp_path / "x.parquet", acc, chunk_size=250)
    assert read(tmp_path / "x.parquet")["index"] == list(range(1000))
