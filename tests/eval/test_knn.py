import logging

import pytest
import torch
import torch.nn.functional as F

from regioncl.eval.knn import knn_predict, knn_top1


def clusters(n_per, classes, dim=16, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=1)
    labels = torch.arange(classes).repeat_interleave(n_per)
    x = centres[labels] + noise * torch.randn(len(labels), dim, generator=g)
    return F.normalize(x, dim=1), labels


def test_separated_clusters_are_classified_perfectly():
    bank, bl = clusters(30, 5)
    q, ql = clusters(10, 5, seed=0)
    assert knn_top1(bank, bl, q, ql, k=20).item() == 1.0


def test_random_labels_give_chance_level():
    bank, _ = clusters(200, 4)
    labels = torch.randint(0, 4, (len(bank),), generator=torch.Generator().manual_seed(1))
    q, ql = clusters(50, 4, seed=2)
    acc = knn_top1(bank, labels, q, ql, k=20).item()
    assert 0.1 < acc < 0.45


def test_chunked_equals_unchunked():
    bank, bl = clusters(20, 3, noise=0.8)
    q, _ = clusters(7, 3, noise=0.8, seed=3)
    assert torch.allclose(knn_predict(bank, bl, q, k=9, chunk_size=4), knn_predict(bank, bl, q, k=9, chunk_size=1000))


def test_votes_are_temperature_weighted():
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=1)
    labels = torch.tensor([0, 1, 1])
    q = torch.tensor([[1.0, 0.0]])
    scores = knn_predict(bank, labels, q, k=3, temperature=0.5)
    expected = torch.tensor(
        [[torch.exp(torch.tensor(2.0)), torch.exp(torch.tensor(1.6)) + torch.exp(torch.tensor(0.0))]]
    )
    assert torch.allclose(scores, expected)


@pytest.mark.slow
def test_knn_eval_accepts_a_checkpoint_a_local_dir_and_an_offline_hub_id(tmp_path, separable_folder):
    """The same encoder, given three ways, gives the same kNN accuracy."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from regioncl.export.hub import export
    from regioncl.train.config import make_config
    from regioncl.train.trainer import Trainer

    root = Path(__file__).resolve().parents[2]
    cfg = make_config(
        overrides=dict(
            backbone="resnet18",
            backbone_args={"output_stride": 8},
            image_size=16,
            batch_size=8,
            queue_size=32,
            proj_hidden_dim=32,
            proj_dim=16,
            num_workers=0,
            knn=False,
            max_steps=1,
            output_dir=str(tmp_path / "run"),
        )
    )
    Trainer(cfg).train()
    export(tmp_path / "run", tmp_path / "export")
    commit = "0" * 40
    snap = tmp_path / "hf-cache" / "models--org--enc" / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text(commit)
    for f in (tmp_path / "export").iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf-cache")}
    results = []
    for spec in (str(tmp_path / "run"), f"local-dir:{tmp_path / 'export'}", "hf-hub:org/enc"):
        proc = subprocess.run(
            [
                sys.executable,
                str(root / "scripts" / "knn_eval.py"),
                spec,
                "--bank_data",
                str(separable_folder / "train"),
                "--val_data",
                str(separable_folder / "val"),
                "--image_size",
                "16",
                "--k",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        results.append(json.loads(proc.stdout.strip().splitlines()[-1])["knn_top1"])
    assert results[0] == results[1] == results[2]
    assert results[0] == 1.0


@pytest.mark.slow
def test_bad_images_are_left_out_counted_and_logged(separable_folder, caplog, monkeypatch):
    """A corrupt file in the bank and one in the queries: kNN, features and top-k accuracy equal
    those of the clean folders, and the skips are logged with the file's name."""
    import shutil

    from regioncl.backbones import create_encoder
    from regioncl.data import build_source, eval_transform, images
    from regioncl.eval.features import encode_source, topk_accuracy
    from regioncl.eval.knn import knn_evaluate

    monkeypatch.setattr(images, "_warned", set())
    dirty = separable_folder.parent / "dirty"
    shutil.copytree(separable_folder, dirty)
    for split in ("train", "val"):
        (dirty / split / "c1" / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    torch.manual_seed(0)
    encoder = create_encoder("resnet18", output_stride=8)
    tf, cpu = eval_transform(16, crop_pct=1.0), torch.device("cpu")
    clean = [build_source(str(separable_folder / s)) for s in ("train", "val")]
    bad = [build_source(str(dirty / s)) for s in ("train", "val")]
    assert len(bad[0]) == len(clean[0]) + 1
    with caplog.at_level("WARNING"):
        x_bad, y_bad = encode_source(encoder, bad[0], tf, cpu, batch_size=5)
        scored: dict[str, int] = {}
        top1_bad = knn_evaluate(encoder, *bad, tf, cpu, k=5, batch_size=5, counts=scored)
    assert scored == {"bank": len(clean[0]), "val": len(clean[1])}  # what was scored, not the files found
    x, y = encode_source(encoder, clean[0], tf, cpu, batch_size=5)
    assert torch.equal(y_bad, y) and torch.allclose(x_bad, x, atol=1e-6)
    assert top1_bad == knn_evaluate(encoder, *clean, tf, cpu, k=5, batch_size=5)
    assert "zz_corrupt.png" in caplog.text and "1 of 25 images could not be decoded" in caplog.text
    named = [r for r in caplog.records if r.levelno == logging.WARNING and "zz_corrupt.png" in r.getMessage()]
    assert len(named) == 2  # the bank's file and the queries', each named once though the bank was read twice

    # Read by loader workers, fresh ones at each pass (as the kNN monitor's): named once, by this process.
    monkeypatch.setattr(images, "_warned", set())
    caplog.clear()
    with caplog.at_level("WARNING"):
        for _ in range(2):
            encode_source(encoder, bad[0], tf, cpu, batch_size=5, num_workers=1)
    named = [r for r in caplog.records if "zz_corrupt.png" in r.getMessage()]
    assert len(named) == 1 and caplog.text.count(f"1 of {len(bad[0])} images could not be decoded") == 2

    # Every decodable image counts exactly once: a perfect predictor scores 1, a constant one 12/24 top-1.
    def predict(images):
        dark = (images.mean((1, 2, 3)) < 0).float()
        return torch.stack([dark, 1 - dark], 1)

    assert topk_accuracy(predict, bad[1], tf, cpu, batch_size=5) == (1.0, None)  # two classes: no top-5
    always_zero = topk_accuracy(lambda im: torch.tensor([[1.0, 0.0]]).repeat(len(im), 1), bad[1], tf, cpu, batch_size=5)
    assert always_zero == (0.5, None)
    # Six classes: top-5 counts; the constant predictor's five highest scores hold classes 0–4.
    six = topk_accuracy(
        lambda im: torch.tensor([[6.0, 5, 4, 3, 2, 1]]).repeat(len(im), 1), bad[1], tf, cpu, batch_size=5
    )
    assert six == (0.5, 1.0)


def test_an_all_bad_source_is_an_error(tmp_path):
    import pytest

    from regioncl.backbones import create_encoder
    from regioncl.data import build_source, eval_transform
    from regioncl.eval.features import encode_source

    (tmp_path / "c0").mkdir()
    for i in range(3):
        (tmp_path / "c0" / f"{i}.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="none of the 3 images"):
        encode_source(
            create_encoder("resnet10t"),
            build_source(str(tmp_path)),
            eval_transform(16, crop_pct=1.0),
            torch.device("cpu"),
        )
