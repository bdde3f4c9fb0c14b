"""End-to-end runs of the trainer on tiny CPU settings."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_run import TINY

from regioncl.data import EpochSampler
from regioncl.files import list_checkpoints
from regioncl.methods import METHODS
from regioncl.train.checkpoint import resolve_resume
from regioncl.train.config import make_config
from regioncl.train.loaders import ShardedBatchSampler, TrainData
from regioncl.train.trainer import Trainer, lr_at, schedule_words


def run(tmp_path, name="run", **kw):
    cfg = make_config(overrides={**TINY, "output_dir": str(tmp_path / name), **kw})
    result = Trainer(cfg).train()
    return result, records(tmp_path / name)


def records(out: Path):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def losses(recs):
    return {r["step"]: tuple(v for k, v in sorted(r.items()) if k.startswith("loss")) for r in recs if "loss" in r}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.slow
def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path, method):
    """Restores the queues, key encoders, predictor and optimizer state: same losses after resume."""
    check_exact_resume(tmp_path, method=method, pred_dim=8, max_steps=6)


def test_device_augmentation_trains_and_resumes_exactly(tmp_path):
    """data.gpu_augment (colour, grayscale, blur, flip batched after the transfer, seeded per step)."""
    check_exact_resume(tmp_path, method="regioncl_m", max_steps=6, gpu_augment=True)


def check_exact_resume(tmp_path, **kw):
    _, full = run(tmp_path, "full", checkpoint_every=100, **kw)
    run(tmp_path, "split", stop_at_step=3, **kw)
    ckpts = list_checkpoints(tmp_path / "split")
    assert [p.name for p in ckpts] == ["step_00000003"]
    result, resumed = run(tmp_path, "split", resume="latest", **kw)
    assert result["step"] == 6
    a, b = losses(full), losses(resumed)
    assert sorted(b) == list(range(1, 7))  # log lines of both parts, none twice
    for step in range(1, 7):
        assert a[step] == pytest.approx(b[step], rel=1e-5, abs=1e-6), step
    # The queue and key encoder were restored too: the final weights agree.
    from safetensors.torch import load_file

    wa = load_file(tmp_path / "full" / "encoder.safetensors")
    wb = load_file(tmp_path / "split" / "encoder.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_resume_mid_epoch_continues_at_the_next_sample(tmp_path):
    """The sample set has 5,000 images: steps 1–6 are all inside epoch 0."""
    run(tmp_path, "r", max_steps=6, stop_at_step=2)
    state = json.loads((list_checkpoints(tmp_path / "r")[-1] / "trainer_state.json").read_text())
    assert (state["step"], state["epoch"], state["step_in_epoch"]) == (2, 0, 2)


def test_checkpoint_is_atomic_and_resume_ignores_partial_ones(tmp_path):
    run(tmp_path, "r", max_steps=4, checkpoint_every=2, keep_checkpoints=5)
    root = tmp_path / "r" / "checkpoints"
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step_00000002", "step_00000004"]
    assert not list(root.glob(".tmp-*"))
    # A save killed mid-write leaves a .tmp folder and a folder without trainer_state.json: neither counts.
    (root / ".tmp-step_00000006").mkdir()
    (root / "step_00000008").mkdir()
    assert resolve_resume("latest", tmp_path / "r").name == "step_00000004"


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        run(tmp_path, "nothing", max_steps=2, resume="latest")


def test_resume_with_other_settings_is_refused(tmp_path):
    run(tmp_path, "r", max_steps=2)
    with pytest.raises(ValueError, match="method"):
        run(tmp_path, "r", max_steps=4, method="mocov2", resume="latest")


def test_metrics_have_the_promised_fields_and_loss_is_finite(tmp_path):
    _, recs = run(tmp_path, max_steps=3)
    for r in recs:
        for key in ("step", "epoch", "lr", "loss", "loss_ins", "loss_reg", "images_per_s"):
            assert key in r
        assert np.isfinite(r["loss"])
    assert (tmp_path / "run" / "encoder.safetensors").is_file()


def test_mocov2_logs_no_region_loss(tmp_path):
    _, recs = run(tmp_path, max_steps=2, method="mocov2")
    assert "loss_reg" not in recs[0] and "loss_ins" in recs[0]


def test_cosine_schedule_without_and_with_warmup():
    cfg = make_config(overrides={"lr": 0.1, "warmup_epochs": 0})
    assert lr_at(cfg, 0, 100, 10) == pytest.approx(0.1)
    assert lr_at(cfg, 50, 100, 10) == pytest.approx(0.05)
    assert lr_at(cfg, 100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    cfg = make_config(overrides={"lr": 0.1, "warmup_epochs": 1})
    assert [lr_at(cfg, s, 110, 10) for s in (0, 4, 9)] == pytest.approx([0.01, 0.05, 0.1])
    assert lr_at(cfg, 10, 110, 10) == pytest.approx(0.1)
    assert lr_at(cfg, 60, 110, 10) == pytest.approx(0.05)


def test_the_summary_says_where_a_warm_up_longer_than_the_run_leaves_the_lr():
    """A run cut short inside its warm-up never reaches optim.lr: the summary gives the lr it stops
    at (the last step's), not a cosine that never comes."""
    cfg = make_config(overrides={"lr": 0.1, "warmup_epochs": 1})
    assert schedule_words(cfg, 110, 10) == "lr 0.1 with 10 warm-up steps, then cosine"
    assert schedule_words(cfg, 4, 10) == "lr warming up to 0.1 over 10 steps, more than the run's 4: it stops at 0.04"
    assert schedule_words(cfg, 9, 10).endswith("the run's 9: it stops at 0.09")
    assert schedule_words(cfg, 0, 10) == "nothing trained (optim.max_steps 0)"
    assert schedule_words(make_config(overrides={"lr": 0.1, "warmup_epochs": 0}), 5, 10) == "lr 0.1, then cosine"


@pytest.mark.parametrize(
    "override,match",
    [
        ({"image_size": 20}, "not a multiple of the output stride"),
        ({"batch_size": 1, "queue_size": 32}, "at least 2 images per process"),
        ({"batch_size": 12}, "not a multiple of the global batch"),
        ({"backbone": "no_such_net"}, "Unknown backbone"),
        ({"method": "byol"}, "unknown method"),
        ({"data": "/no/such/folder"}, "no/such/folder"),
    ],
)
def test_bad_settings_fail_before_training(tmp_path, override, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        run(tmp_path, max_steps=1, **override)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_streaming_without_max_steps_is_refused():
    with pytest.raises(ValueError, match="max_steps"):
        make_config(overrides={"data": "hf:x", "streaming": True})


def test_unknown_config_field_is_refused():
    with pytest.raises(ValueError, match="'batchsize' is not a section"):
        make_config(overrides={"batchsize": 4})
    with pytest.raises(ValueError, match="batchsize"):
        make_config(overrides={"optim.batchsize": 4})
    with pytest.raises(ValueError, match="optim.lr"):
        make_config(overrides={"optim.lr": "fast"})


def test_shipped_recipes_load_with_the_papers_settings():
    cfg = make_config("regioncl_m_r50")
    assert (
        cfg.model.method,
        cfg.model.backbone,
        cfg.optim.batch_size,
        cfg.optim.lr,
        cfg.optim.epochs,
        cfg.method.queue_size,
        cfg.method.key_momentum,
        cfg.optim.warmup_epochs,
    ) == ("regioncl_m", "resnet50", 1024, 0.15, 200, 65536, 0.999, 0.0)
    assert make_config("regioncl_m_r50", {"optim.lr": 0.3}).optim.lr == 0.3
    assert make_config("regioncl_m_r50w4").model.backbone == "resnet50w4"
    # A recipe states only what differs from its base.
    moco, regioncl = make_config("mocov2_r50").leaves(), cfg.leaves()
    assert {k for k in moco if moco[k] != regioncl[k]} == {"model.method", "run.output_dir"}
    s = make_config("regioncl_s_r50")
    assert (s.model.method, s.optim.batch_size, s.optim.lr, s.optim.epochs, s.optim.fix_pred_lr) == (
        "regioncl_s",
        512,
        0.1,
        100,
        True,
    )
    assert s.model.backbone_args == {"zero_init_last": True}
    assert make_config("regioncl_m_noswap_r50").model.method == "regioncl_m_noswap"
    # The values the methods then take (their own defaults where the recipe leaves a field null).
    from regioncl.train.trainer import build_model

    with torch.device("meta"):
        d = build_model(make_config("regioncl_d_r50"), 1)
        simsiam = build_model(s, 1)
    assert (d.dense_weight, d.region_weight, d.temperature, d.momentum) == (0.5, 0.5, 0.2, 0.999)
    assert simsiam.projector[-2].out_features == 2048 and simsiam.predictor[0].out_features == 512


def test_the_configuration_defaults_are_the_methods_defaults():
    """One source of defaults: what the configuration leaves at its default, the methods agree on."""
    import inspect

    from regioncl.methods import DenseCL, MoCoV2
    from regioncl.train.config import MethodConfig

    moco = inspect.signature(MoCoV2.__init__).parameters
    assert (MethodConfig.queue_size, MethodConfig.temperature, MethodConfig.key_momentum) == (
        moco["queue_size"].default,
        moco["temperature"].default,
        moco["momentum"].default,
    )
    assert MethodConfig.dense_weight == inspect.signature(DenseCL.__init__).parameters["dense_weight"].default


def test_recipes_inherit_and_the_sample_recipe_is_the_default(tmp_path):
    from regioncl.train.config import load_recipe

    assert make_config().leaves() == make_config("sample").leaves()
    assert make_config().model.backbone == "resnet10t" and make_config().data.source == "sample"
    child = tmp_path / "child.yaml"
    child.write_text("base: mocov2_r50\noptim: {lr: 0.5}\nmodel: {backbone_args: {}}\n")
    c = make_config(child)
    assert (c.model.method, c.optim.lr, c.optim.batch_size, c.model.backbone_args) == ("mocov2", 0.5, 1024, {})
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"base: {loop}\n")
    with pytest.raises(ValueError, match="inherits from itself"):
        load_recipe(loop)
    flat = tmp_path / "flat.yaml"  # a recipe in the flat layout of earlier versions
    flat.write_text("method: mocov2\nlr: 0.2\ndata: sample\nknn_every: 2\n")
    f = make_config(flat)
    assert (f.model.method, f.optim.lr, f.data.source, f.knn.every) == ("mocov2", 0.2, "sample", 2)


def test_command_line_options_and_the_printed_recipe(tmp_path, capsys):
    from regioncl.train.config import parse_config

    cfg = parse_config(
        [
            "--config",
            "regioncl_d_r50",
            "--optim.lr",
            "0.5",
            "--run.compile",
            "true",
            "--method.region_cells",
            "[1, 2]",
            "--model.backbone_args",
            "{}",
        ]
    )
    assert (cfg.model.method, cfg.optim.lr, cfg.run.compile, cfg.method.region_cells, cfg.model.backbone_args) == (
        "regioncl_d",
        0.5,
        True,
        [1, 2],
        {},
    )
    with pytest.raises(SystemExit):
        parse_config(["--optim.lr", "0.5", "--print_recipe"])
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    assert make_config(printed).leaves() == make_config(overrides={"optim.lr": 0.5}).leaves()
    from regioncl.errors import UserError

    for bad, says in (
        (["--optim.lrr", "1"], "optim.lrr"),
        (["--optim.lr", "-1"], "optim.lr must be positive"),
        (["--optim.max_steps", "-3"], "optim.max_steps must be >= 0, got -3"),
        (["--optim.warmup_epochs", "-1"], "optim.warmup_epochs must be >= 0, got -1"),
        (["--optim.lr", "fast"], "optim.lr"),
        (["--config", "no_such_recipe"], "no_such_recipe"),
        # a region option on a base method would be silently ignored
        (["--config", "densecl_r50", "--method.region_warmup", "true"], "region_warmup set for densecl, which has no"),
        (["--model.method", "simsiam", "--method.pairing", "reverse", "--method.region_weight", "0.5"], "regioncl_s$"),
        (
            ["--model.method", "regioncl_m", "--method.dense_weight", "0.3"],
            "dense_weight set for regioncl_m, which has no",
        ),
    ):
        with pytest.raises(UserError, match=says):
            parse_config(bad)


def test_a_tracker_that_cannot_log_is_refused_before_training(tmp_path, monkeypatch):
    import accelerate.tracking

    from regioncl.errors import UserError
    from regioncl.train.config import make_config, parse_config
    from regioncl.train.trainer import Trainer

    def trainer(*trackers):
        out = tmp_path / "run"
        cfg = make_config(overrides={**TINY, "run.output_dir": str(out), "run.log_with": list(trackers)})
        Trainer(cfg)
        return out

    # a configuration that names one is still read (a study's dry run, --print_recipe): the check is the trainer's
    assert parse_config(["--run.log_with", "[tensorbord]"]).run.log_with == ["tensorbord"]
    with pytest.raises(UserError, match=r"unknown tracker 'tensorbord'"):
        trainer("tensorbord")
    # Accelerate would only warn and train on without the logs
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(UserError, match=r"tensorboard is not installed here: pip install tensorboard"):
        trainer("tensorboard")
    with pytest.raises(UserError, match=r"all, but no tracker is installed"):
        trainer("all")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_the_runs_summary_reads_well_for_a_run_cut_short(tmp_path):
    """A run that max_steps stops within its first epoch: a fraction of an epoch a person can read, one step."""
    trainer = Trainer(
        make_config(
            overrides={**TINY, "batch_size": 6, "queue_size": 36, "max_steps": 1, "run.output_dir": str(tmp_path / "r")}
        )
    )
    spe = trainer.data.steps_per_epoch
    epochs = re.search(rf"([0-9.e-]+) epochs of {spe:,} steps = 1 step; lr", trainer.summary()).group(1)
    assert abs(float(epochs) - 1 / spe) < 0.01 / spe and len(epochs.replace("0.", "").lstrip("0")) <= 3


def test_method_settings_the_method_does_not_use_are_named_in_the_log(tmp_path, caplog):
    """One recipe serves every method, so a setting the method has no use for is ignored, not
    refused; the run names it, so that a user who meant it (pred_dim for MoCo v2) knows."""
    import logging

    from regioncl.train.trainer import unused_method_settings

    def cfg(method, **more):
        return make_config(overrides={**TINY, "method": method, "run.output_dir": str(tmp_path / method), **more})

    assert unused_method_settings(cfg("regioncl_m")) == []  # the default recipe's queue and momentum are MoCo v2's
    assert unused_method_settings(cfg("simsiam")) == ["method.queue_size=32", "method.key_momentum=0.99"]
    assert unused_method_settings(cfg("mocov2", **{"method.pred_dim": 256, "method.key_momentum": 0.9})) == [
        "method.pred_dim=256"
    ]
    assert unused_method_settings(cfg("regioncl_m", **{"method.sync_bn": False})) == ["method.sync_bn=False"]
    assert unused_method_settings(cfg("regioncl_s", **{"method.sync_bn": False, "method.queue_size": 65536})) == [
        "method.key_momentum=0.99"
    ]
    assert unused_method_settings(cfg("regioncl_s", **{"method.pred_dim": 256, "method.temperature": 0.1})) == [
        "method.queue_size=32",
        "method.temperature=0.1",
        "method.key_momentum=0.99",
    ]
    with caplog.at_level(logging.INFO, logger="regioncl"):
        Trainer(cfg("mocov2", **{"method.pred_dim": 256}))
    assert "method.pred_dim=256: not used by mocov2, ignored" in caplog.text


def test_fields_that_may_change_on_resume_are_declared_on_them():
    from regioncl.train.config import may_change_on_resume

    free = may_change_on_resume()
    assert {"run.log_every", "run.checkpoint_every", "run.resume", "data.num_workers", "knn.every"} <= free
    assert not free & {"optim.lr", "model.method", "method.queue_size", "run.seed", "data.image_size"}


def write_folder(root: Path, good: int, bad: int):
    rng = np.random.default_rng(0)
    for i in range(good):
        d = root / f"class{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        mode = ["RGB", "L", "RGBA", "P"][i % 4]
        img = Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).convert(mode)
        img.save(d / f"img{i}.png")
    for i in range(bad):
        d = root / "class0"
        if i % 2:
            (d / f"empty{i}.jpg").write_bytes(b"")
        else:
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(d / f"trunc{i}.jpg")
            data = (d / f"trunc{i}.jpg").read_bytes()
            (d / f"trunc{i}.jpg").write_bytes(data[: len(data) // 2])


def test_folder_with_bad_images_is_trained_with_counted_skips(tmp_path, caplog):
    write_folder(tmp_path / "imgs", good=14, bad=2)
    _, recs = run(tmp_path, data=str(tmp_path / "imgs"), max_steps=4, max_bad_fraction=0.5, epochs=2)
    assert recs[-1]["bad_images"] >= 2  # both bad files met at least once in two epochs
    assert any("trunc" in m or "empty" in m for m in caplog.messages)


def test_too_many_bad_images_stop_the_run_after_a_checkpoint(tmp_path):
    from regioncl.errors import EXIT_BAD_DATA, RunStopped
    from regioncl.files import list_checkpoints

    write_folder(tmp_path / "imgs", good=10, bad=6)
    # Over the fraction but within the per-pass allowance: skipped and counted, the run goes on.
    _, recs = run(tmp_path, "tolerated", data=str(tmp_path / "imgs"), max_steps=8, max_bad_fraction=0.05, epochs=4)
    assert recs[-1]["bad_images"] >= 6 and recs[-1]["step"] == 8
    with pytest.raises(RunStopped, match="could not be decoded.*max_bad_fraction.*max_bad_images=2 per pass") as stop:
        run(tmp_path, data=str(tmp_path / "imgs"), max_steps=8, max_bad_fraction=0.05, max_bad_images=2, epochs=4)
    assert stop.value.exit_code == EXIT_BAD_DATA
    saved = list_checkpoints(tmp_path / "run")
    assert saved and f"at step {int(saved[-1].name[5:])}" in str(stop.value)  # the steps paid for are kept


def write_parquet(root: Path, n: int = 24, files: int = 2):
    import datasets

    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    per = n // files
    for f in range(files):
        images = [Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)) for _ in range(per)]
        ds = datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(per)]})
        ds.cast_column("image", datasets.Image()).to_parquet(str(root / f"part-{f}.parquet"))


@pytest.mark.parametrize("streaming", [True, False])
def test_hf_parquet_source_trains(tmp_path, streaming):
    write_parquet(tmp_path / "pq")
    # 24 images, batch 8: 3 steps an epoch, so step 5 runs in the second pass over the data.
    _, recs = run(tmp_path, data=f"hf:{tmp_path / 'pq'}", streaming=streaming, max_steps=5, epochs=2)
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5]
    assert [r["epoch"] for r in recs] == [0, 0, 0, 1, 1]  # the epoch each step ran in
    assert all(np.isfinite(r["loss"]) for r in recs)


def test_hf_missing_column_is_a_clear_error_at_start(tmp_path):
    write_parquet(tmp_path / "pq")
    with pytest.raises(ValueError, match="pixels"):
        run(tmp_path, data=f"hf:{tmp_path / 'pq'}", image_column="pixels", max_steps=1)


def test_sharded_batches_cover_the_rest_of_the_epoch_exactly_once():
    sampler = EpochSampler(50, seed=3)
    sampler.set_epoch(2, skip=12)  # resumed after 3 global batches of 4
    order = [i for _, i in sampler]
    seen = []
    for rank in range(2):
        batches = list(ShardedBatchSampler(sampler, 2, 2, rank))
        assert len(batches) == len(order) // 4  # same step count on every rank
        seen += [i for b in batches for _, i in b]
    assert sorted(seen) == sorted(order[: len(order) // 4 * 4])
    assert len(set(seen)) == len(seen)


def test_a_save_killed_midway_leaves_the_previous_checkpoint_latest(tmp_path, monkeypatch):
    cfg = make_config(overrides={**TINY, "output_dir": str(tmp_path / "r"), "max_steps": 4, "checkpoint_every": 2})
    trainer = Trainer(cfg)
    calls = {"n": 0}
    real = trainer.accelerator.save_state

    def dying_save(path):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint: write part of it, then die
            real(path)
            raise KeyboardInterrupt("killed while writing")
        return real(path)

    monkeypatch.setattr(trainer.accelerator, "save_state", dying_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert resolve_resume("latest", tmp_path / "r").name == "step_00000002"
    assert (tmp_path / "r" / "checkpoints" / ".tmp-step_00000004").is_dir()  # left behind, never used
    result, _ = run(tmp_path, "r", max_steps=4, checkpoint_every=2, resume="latest")
    assert result["step"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_lowers_its_loss_on_a_small_set(tmp_path, method):
    """32 images, 60 steps: the mean loss of the last 10 steps is below that of the 10 steps
    after the queue first holds real keys (MoCo-type losses start low on a random queue)."""
    from regioncl.data import SampleShapes

    folder = tmp_path / "imgs" / "all"
    folder.mkdir(parents=True)
    shapes = SampleShapes("train", size=32)
    for i in range(32):
        shapes[i][0].save(folder / f"{i}.png")
    _, recs = run(
        tmp_path,
        data=str(tmp_path / "imgs"),
        method=method,
        image_size=32,
        batch_size=16,
        queue_size=32,
        proj_hidden_dim=64,
        proj_dim=32,
        pred_dim=16,
        lr=0.03,
        warmup_epochs=4,
        max_steps=60,
        epochs=30,
    )
    loss = [r["loss"] for r in recs]
    assert all(np.isfinite(loss))
    start = 32 // 16 + 1
    assert np.mean(loss[-10:]) < np.mean(loss[start : start + 10]), loss


@pytest.mark.parametrize("fixed", [True, False])
def test_simsiam_predictor_lr_stays_fixed_when_asked(tmp_path, fixed):
    cfg = make_config(
        overrides={
            **TINY,
            "method": "regioncl_s",
            "pred_dim": 8,
            "output_dir": str(tmp_path / "r"),
            "max_steps": 6,
            "stop_at_step": 3,
            "warmup_epochs": 0,
            "lr": 0.05,
            "fix_pred_lr": fixed,
        }
    )
    trainer = Trainer(cfg)
    trainer.train()
    backbone_group, predictor_group = trainer.optimizer.param_groups
    scheduled = lr_at(cfg, 2, 6, trainer.data.steps_per_epoch)  # the lr of the last step taken
    assert backbone_group["lr"] == pytest.approx(scheduled) and scheduled < 0.05
    assert predictor_group["lr"] == pytest.approx(0.05 if fixed else scheduled)


@pytest.mark.slow
def test_knn_before_and_after_training_is_logged(tmp_path):
    result, recs = run(tmp_path, knn=True, max_steps=2)
    knn = [r for r in recs if "knn_top1" in r]
    assert [r["step"] for r in knn] == [0, 2]
    assert result["knn_top1_before"] == knn[0]["knn_top1"] and result["knn_top1_after"] == knn[1]["knn_top1"]
    assert all(0.0 <= r["knn_top1"] <= 1.0 for r in knn)


@pytest.mark.slow
def test_a_run_of_no_steps_is_scored_once(tmp_path):
    """The random-init reference of a study (max_steps 0): its weights are scored once, at step 0,
    and that score is both the before and the after; its encoder is still written."""
    result, recs = run(tmp_path, knn=True, max_steps=0)
    knn = [r for r in recs if "knn_top1" in r]
    assert [(r["step"], r["epoch"]) for r in knn] == [(0, 0.0)]
    assert result["knn_top1_before"] == result["knn_top1_after"] == knn[0]["knn_top1"] and result["step"] == 0
    assert (tmp_path / "run" / "encoder.safetensors").is_file()


def test_knn_monitor_every_epoch(tmp_path):
    write_folder(tmp_path / "imgs", good=16, bad=0)
    write_folder(tmp_path / "held_out", good=8, bad=0)
    data = str(tmp_path / "imgs")
    _, recs = run(
        tmp_path,
        data=data,
        knn=True,
        knn_every=1,
        knn_train_data=data,
        knn_k=5,
        knn_val_data=str(tmp_path / "held_out"),
        max_steps=6,
        epochs=3,
    )
    assert [r["step"] for r in recs if "knn_top1" in r] == [0, 2, 4, 6]  # before, after epochs 1 and 2, after


def test_a_stream_needs_a_shard_per_process_and_caps_workers(caplog):
    """Every reader (process × worker) reads shards of its own: too few shards for the
    processes is an error at start, too few for the workers means fewer workers."""
    from types import SimpleNamespace

    two = SimpleNamespace(world=2, cfg=SimpleNamespace(data=SimpleNamespace(source="hf:x")))
    with pytest.raises(ValueError, match="1 shard\\(s\\), fewer than the 2 processes"):
        TrainData._stream_workers(two, 1, 0)
    with caplog.at_level("WARNING"):
        assert TrainData._stream_workers(two, 7, 4) == 3
    assert "3 DataLoader worker(s) per process instead of 4" in caplog.text
    assert TrainData._stream_workers(two, 8, 4) == 4 and TrainData._stream_workers(two, 2, 0) == 0


@pytest.mark.parametrize("kind", ["folder", "stream"])
@pytest.mark.slow
def test_killed_mid_epoch_and_resumed_trains_on_the_uninterrupted_examples(tmp_path, kind):
    """Stopped after 3 steps (the checkpoint a kill leaves), then resumed: the two parts train
    on exactly the batches, in the same order, as one uninterrupted run. Two DataLoader
    workers, so the stream's readers must continue where each stopped, in the same turn."""
    import io

    import datasets
    import numpy as np
    from dist_stream_worker import run
    from PIL import Image

    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0
    rng = np.random.default_rng(0)
    if kind == "stream":
        import pyarrow as pa
        import pyarrow.parquet as pq

        (tmp_path / "pq").mkdir()
        for f in range(3):
            images = []
            for _ in range(8):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(buf, format="PNG")
                images.append({"bytes": buf.getvalue(), "path": None})
            pq.write_table(
                pa.table({"image": images, "label": list(range(8 * f, 8 * f + 8))}),
                tmp_path / "pq" / f"train-{f}.parquet",
                row_group_size=2,
            )
        data = dict(data=f"hf:{tmp_path / 'pq'}", streaming=True, max_steps=12, shuffle_buffer=4)
    else:
        for i in range(24):
            (tmp_path / "img" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
                tmp_path / "img" / f"c{i % 2}" / f"{i}.png"
            )
        data = dict(data=str(tmp_path / "img"))
    common = dict(
        method="mocov2",
        backbone="resnet10t",
        image_size=16,
        batch_size=4,
        queue_size=16,
        proj_hidden_dim=32,
        proj_dim=16,
        epochs=2,
        num_workers=2,
        knn=False,
        log_every=1,
        checkpoint_every=100,
        **data,
    )
    full = run({**common, "output_dir": str(tmp_path / "a")}, "full")
    first = run({**common, "output_dir": str(tmp_path / "b"), "stop_at_step": 3}, "first")
    rest = run({**common, "output_dir": str(tmp_path / "b"), "resume": "latest"}, "rest")
    assert len(full) == 12 and len(first) == 3
    assert first + rest == full
    epoch0 = [i for e, _, labels, indices in full if e == 0 for i in (labels if kind == "stream" else indices)]
    assert sorted(epoch0) == list(range(24))
