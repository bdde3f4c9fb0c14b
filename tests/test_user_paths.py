"""A user's first day with their own images, through the installed `regioncl` command.

Everything here runs the console script the package installs, in a folder outside the clone, on a
small folder of images made here (66 files in three classes, two of them unreadable), offline, with
timm's "pretrained" weights served from a Hugging Face cache laid out here. The own-images
walk-through is read from docs/own-images.md and run line by line (at a smaller scale); then each
mistake a user makes must be refused in one line, exit status 2, with every file that existed before
left byte for byte as it was; and each answer must be the right one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
REGIONCL = Path(sys.executable).parent / "regioncl"
#: the walk-through's long settings, and what the test runs instead
SMALLER = {"--optim.epochs": "2", "--optim.warmup_epochs": "1", "--epochs": "3"}
CLASSES = ("disc", "square", "bar")

pytestmark = pytest.mark.skipif(not REGIONCL.is_file(), reason="the regioncl command is not installed beside python")


def draw_images(folder: Path, counts: tuple[int, ...], seed: int, size: int = 48) -> None:
    """Coloured shapes (a disc, a square, a bar) of random place and size on a noisy background."""
    rng = np.random.default_rng(seed)
    for c, (name, n) in enumerate(zip(CLASSES, counts)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = Image.fromarray(rng.integers(0, 90, (size, size, 3), dtype=np.uint8))
            draw = ImageDraw.Draw(image)
            r = int(rng.integers(8, 16))
            x, y = (int(v) for v in rng.integers(r, size - r, 2))
            colour = tuple(int(v) for v in rng.integers(150, 256, 3))
            box = [x - r, y - r, x + r, y + r] if c < 2 else [x - r, y - r // 3, x + r, y + r // 3]
            (draw.ellipse if c == 0 else draw.rectangle)(box, fill=colour)
            image.save(folder / name / f"{name}_{i:03d}.jpg", quality=90)


def break_images(folder: Path, n: int) -> list[Path]:
    """``n`` unreadable files among the images of ``folder``'s first class: empty or truncated JPEGs."""
    bad = []
    for i in range(n):
        path = folder / CLASSES[0] / f"{CLASSES[0]}_{i:03d}_bad.jpg"
        if i % 2:
            path.write_bytes(b"")
        else:
            good = (folder / CLASSES[0] / f"{CLASSES[0]}_000.jpg").read_bytes()
            path.write_bytes(good[: len(good) // 3])
        bad.append(path)
    return bad


def timm_cache(cache: Path, name: str, state: dict[str, torch.Tensor]) -> None:
    """``state`` where huggingface_hub keeps a download of ``timm/NAME`` (refs/main → a snapshot)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--timm--{name}"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file({k: v.contiguous() for k, v in state.items()}, str(repo / "snapshots" / commit / "model.safetensors"))


def walk_through() -> list[list[str]]:
    """The commands of the own-images walk-through (docs/own-images.md), each as an argument list."""
    text = (ROOT / "docs" / "own-images.md").read_text()
    block = text.split("<!-- own-images walk-through", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def smaller(args: list[str]) -> list[str]:
    return [SMALLER.get(args[i - 1], a) if i else a for i, a in enumerate(args)]


class User:
    """A folder of one's own, the environment of a machine without network, and the command."""

    def __init__(self, work: Path) -> None:
        self.work = work
        (work / "tmp").mkdir()
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.env.update(
            HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(work / "hub"), HF_HOME=str(work / "hf-home"), TMPDIR=str(work / "tmp")
        )

    def run(self, *args: str, rc: int = 0) -> subprocess.CompletedProcess:
        command = [str(REGIONCL) if a == "regioncl" else sys.executable if a == "python" else a for a in args]
        proc = subprocess.run(command, cwd=self.work, env=self.env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == rc, (
            f"{shlex.join(args)} → {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
        return proc

    def refused(self, *args: str, says: str) -> str:
        """Run a command that must be refused: status 2, one `regioncl: error:` line saying ``says``,
        no traceback, and every file and folder of the user's as it was."""
        before = self.snapshot()
        proc = self.run("regioncl", *args, rc=2)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("regioncl: error: ")]
        assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert says in errors[0], errors[0]
        assert self.snapshot() == before, f"{shlex.join(args)} changed files it was refused for"
        return errors[0]

    def snapshot(self) -> dict[str, tuple[str, int] | None]:
        """Every file (content digest and mode) and folder under the user's folder, but the temporary one."""
        found: dict[str, tuple[str, int] | None] = {}
        for path in sorted(self.work.rglob("*")):
            rel = str(path.relative_to(self.work))
            if rel == "tmp" or rel.startswith("tmp/"):
                continue
            found[rel] = (
                (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode) if path.is_file() else None
            )
        return found

    def json(self, proc: subprocess.CompletedProcess) -> dict:
        """The JSON a command printed last (one line, or pretrain's indented block)."""
        lines = proc.stdout.strip().splitlines()
        start = max(i for i, line in enumerate(lines) if line.startswith("{"))
        return json.loads("\n".join(lines[start:]))


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> User:
    """The own-images walk-through, run: a user folder with a trained run, an export, an evaluation and a release."""
    me = User(tmp_path_factory.mktemp("user"))
    draw_images(me.work / "my_images" / "train", (20, 22, 22), seed=0)
    me.bad = break_images(me.work / "my_images" / "train", 2)  # 64 images and 2 unreadable files: 66
    draw_images(me.work / "my_images" / "val", (8, 8, 8), seed=1)
    import timm

    torch.manual_seed(1)
    me.timm_weights = timm.create_model("resnet18", num_classes=0).state_dict()
    timm_cache(me.work / "hub", "resnet18.a1_in1k", me.timm_weights)
    me.outputs = [me.run(*smaller(args)) for args in walk_through()]
    return me


@pytest.mark.slow
def test_the_walk_through_gives_the_right_answers(user):
    pretrain, export, timm_load, knn, probe, embed, plot, push = user.outputs
    result = user.json(pretrain)
    assert result["step"] == 4 and result["knn_top1_before"] is not None and result["knn_top1_after"] is not None
    # What the run will do, said before it starts; the two unreadable files skipped and named.
    assert (
        "64 px: 66 images from my_images/train (3 classes); batch 32 (1 process × 32), 2 epochs of 2 steps = 4 "
        "steps" in pretrain.stderr
    )
    assert "starts from timm:resnet18.a1_in1k (timm/resnet18.a1_in1k)" in pretrain.stderr
    assert all(path.name in pretrain.stderr for path in user.bad)
    run = user.work / "runs" / "mine"
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["init"] == "timm" and config["run"]["precision"] == "fp32"
    state = json.loads(next((run / "checkpoints").glob("step_*/trainer_state.json")).read_text())
    assert state["init_source"].startswith("timm:resnet18.a1_in1k") and state["bad_images"] >= 2

    assert timm_load.stdout.strip() == "[3, 64, 64]"  # plain timm, the size the encoder was trained at
    scored = user.json(knn)
    assert scored["image_size"] == 64 and scored["bank_images"] == 64 and scored["val_images"] == 24
    assert 0 <= scored["knn_top1"] <= 1
    probed = user.json(probe)
    assert probed["image_size"] == 64 and probed["classes"] == 3 and probed["top5"] is None  # three classes: no top-5

    import pyarrow.parquet as pq

    table = pq.read_table(user.work / "val.parquet")
    assert table.num_rows == 24 and sorted(set(table.column("class").to_pylist())) == sorted(CLASSES)
    assert json.loads(table.schema.metadata[b"regioncl.classes"]) == sorted(CLASSES)
    assert (user.work / "plots" / "val_pca.png").is_file()

    # The card says what the run trained, and nothing it did not.
    card = (user.work / "release" / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "datasets:" not in front and "imagenet-1k" not in card
    assert "on a local image folder" in card and "2 epochs (4 steps)" in card and "64 px inputs" in card
    assert "timm:resnet18.a1_in1k" in card and "recipe" not in card and "{{" not in card and "? epochs" not in card
    meta = json.loads((user.work / "release" / "config.json").read_text())["regioncl"]
    assert meta["epochs"] == 2 and meta["steps"] == 4 and meta["dataset"] == "a local image folder"
    assert str(user.work) not in (user.work / "release" / "config.json").read_text()
    assert "my_images" not in card + (user.work / "release" / "config.json").read_text()

    # The numbers the evaluation commands printed, saved as a user would, go on the card in percent.
    (user.work / "evals.jsonl").write_text(knn.stdout + probe.stdout)  # `> evals.jsonl`, `>> evals.jsonl`
    user.run(
        "regioncl", "push", "runs/mine", "--repo-id", "me/x", "--metrics", "evals.jsonl", "--dry-run", "--out", "rel2"
    )
    card = (user.work / "rel2" / "README.md").read_text()
    index = yaml.safe_load(card.split("---\n")[1])["model-index"][0]["results"][0]["metrics"]
    assert {m["type"]: m["value"] for m in index} == {
        "knn_top1": round(100 * scored["knn_top1"], 2),
        "linear_top1": round(100 * probed["top1"], 2),
    }
    assert f"| linear_top1 | {round(100 * probed['top1'], 2)} |" in card and "my_images" not in card

    # Weights are as readable as every other file the commands wrote.
    mask = os.umask(0)
    os.umask(mask)
    weights = [
        run / "encoder.safetensors",
        *run.glob("checkpoints/*/model.safetensors"),
        user.work / "exported" / "model.safetensors",
        user.work / "release" / "model.safetensors",
    ]
    assert len(weights) >= 4
    for path in weights:
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


@pytest.mark.slow
def test_refused_commands_leave_every_file_as_it_was(user):
    common = [
        "--data.source",
        "my_images/train",
        "--data.image_size",
        "64",
        "--model.backbone",
        "resnet18",
        "--optim.batch_size",
        "32",
        "--optim.epochs",
        "2",
        "--knn.enabled",
        "false",
    ]
    # Another run into the finished run's folder, or a resume of it with other settings.
    user.refused(
        "pretrain",
        *common,
        "--model.backbone",
        "resnet10t",
        "--run.output_dir",
        "runs/mine",
        says="runs/mine holds checkpoints of an earlier run",
    )
    user.refused(
        "pretrain",
        *common,
        "--model.init",
        "timm",
        "--optim.batch_size",
        "16",
        "--run.resume",
        "latest",
        "--run.output_dir",
        "runs/mine",
        says="optim.batch_size=32 (now 16)",
    )
    user.refused(
        "pretrain", *common, "--run.resume", "latest", "--run.output_dir", "runs/nothing", says="no complete checkpoint"
    )
    # Backbones the method cannot use, arguments timm does not take, weights that do not fit.
    user.refused(
        "pretrain",
        *common,
        "--model.backbone",
        "vit_tiny_patch16_224",
        "--model.backbone_args",
        "{}",
        "--run.output_dir",
        "runs/vit",
        says="cannot take 64 px images",
    )
    user.refused(
        "pretrain",
        *common,
        "--model.backbone",
        "vit_tiny_patch16_224",
        "--model.backbone_args",
        '{"img_size": 64}',
        "--run.output_dir",
        "runs/vit",
        says="RegionCL needs a CNN backbone",
    )
    user.refused(
        "pretrain",
        *common,
        "--model.backbone_args",
        '{"pretrained": true}',
        "--run.output_dir",
        "runs/x",
        says="--model.init timm",
    )
    user.refused(
        "pretrain",
        *common,
        "--model.backbone",
        "resnet10t",
        "--model.init",
        "local-dir:exported",
        "--run.output_dir",
        "runs/x",
        says="does not fit the backbone resnet10t: ",
    )
    user.refused(
        "pretrain",
        *common,
        "--model.init",
        "timm:no_such_tag",
        "--run.output_dir",
        "runs/x",
        says="timm has no weights for resnet18.no_such_tag",
    )
    user.refused("pretrain", *common, "--run.precision", "fp16", "--run.output_dir", "runs/x", says="fp16 needs a GPU")
    user.refused(
        "pretrain", *common, "--model.init", "random", "--run.output_dir", "runs/x", says="leave model.init out"
    )
    user.refused(
        "pretrain", *common, "--run.log_with", "[tensorbord]", "--run.output_dir", "runs/x", says="unknown tracker"
    )
    user.refused(
        "pretrain",
        *common,
        "--knn.enabled",
        "true",
        "--knn.train_data",
        "my_images/train",
        "--run.output_dir",
        "runs/x",
        says="knn.train_data without knn.val_data",
    )
    user.refused(
        "pretrain",
        *common,
        "--knn.enabled",
        "true",
        "--knn.train_data",
        "my_images/train",
        "--knn.val_data",
        "my_images/val",
        "--run.output_dir",
        "runs/x",
        says="knn.k 200 is more than the bank's 66 images: every image would vote; give knn.k 20 or so",
    )
    user.refused("pretrain", "--optim.lrr", "0.1", says="did you mean --optim.lr?")
    # Evaluations on the wrong data.
    user.refused("knn", "local-dir:exported", "--bank_data", "my_images/train", says="--bank_data without --val_data")
    user.refused(
        "knn",
        "local-dir:exported",
        "--bank_data",
        "my_images/train",
        "--val_data",
        "my_images/train/disc",
        says="each would find itself",
    )
    user.refused(
        "knn",
        "local-dir:exported",
        "--bank_data",
        "my_images/train",
        "--val_data",
        "my_images/val",
        "--k",
        "500",
        says="--k 500 is more than the bank's 66 images",
    )
    user.refused("knn", "runs/mine", "--bank-dta", "x", says="did you mean --bank_data?")
    user.refused(
        "probe",
        "local-dir:exported",
        "--train-data",
        "my_images/train",
        "--val-data",
        "my_images/train",
        "--epochs",
        "1",
        says="is the training data",
    )
    # Files that exist are not written over; releases that would not tell the truth are not made.
    user.refused("export", "runs/mine", "exported", says="exported exists and is not an empty folder")
    user.refused("plot", "my_images", "--out", "plots", says="is my_images a pretraining output folder?")
    user.refused(
        "push",
        "runs/mine",
        "--repo-id",
        "me/x",
        "--metrics",
        "eval.jsonl",
        "--dry-run",
        says="eval.jsonl: no such file",
    )
    user.refused(
        "push", "runs/mine", "--repo-id", "me/x", "--metrics", '{"knn": "80%"}', "--dry-run", says="not a finite number"
    )
    user.refused("plot", "--embeddings", "vals.parquet", "--out", "plots", says="vals.parquet: no such file")
    user.refused(
        "embed", "local-dir:exported", "--data", "my_images/val", "--output", "val.parquet", says="val.parquet exists"
    )
    user.refused(
        "push",
        "runs/mine",
        "--repo-id",
        "me/x",
        "--method",
        "mocov2",
        "--dry-run",
        says="trained with method 'regioncl_m', not 'mocov2'",
    )
    user.refused(
        "push",
        "runs/mine",
        "--zoo",
        "regioncl_m_r50",
        "--dry-run",
        "--out",
        "zoo_release",
        says="trained with backbone 'resnet18', not 'resnet50'",
    )

    # The finished run is intact: it exports and scores as before.
    user.run("regioncl", "export", "runs/mine", "exported_again")
    assert (
        load_file(user.work / "exported_again" / "model.safetensors").keys()
        == load_file(user.work / "exported" / "model.safetensors").keys()
    )
    again = user.json(
        user.run(
            "regioncl", "knn", "runs/mine", "--bank_data", "my_images/train", "--val_data", "my_images/val", "--k", "20"
        )
    )
    assert again["knn_top1"] == user.json(user.outputs[3])["knn_top1"]
    # A dry run without --out leaves no release behind.
    listing = user.run("regioncl", "push", "runs/mine", "--repo-id", "me/x", "--dry-run").stdout
    assert "nothing uploaded" in listing and not list((user.work / "tmp").glob("regioncl-release-*"))
    # --overwrite replaces an export, on purpose.
    user.run("regioncl", "export", "runs/mine", "exported_again", "--overwrite")


@pytest.mark.slow
def test_a_run_started_from_an_export_has_its_weights_and_its_knn_at_step_0(user):
    knn = ["--knn.train_data", "my_images/train", "--knn.val_data", "my_images/val", "--knn.k", "20"]
    common = [
        "--data.source",
        "my_images/train",
        "--data.image_size",
        "64",
        "--model.backbone",
        "resnet18",
        "--optim.batch_size",
        "32",
        *knn,
    ]
    start = user.json(
        user.run(
            "regioncl",
            "pretrain",
            *common,
            "--model.init",
            "local-dir:exported",
            "--optim.max_steps",
            "0",
            "--run.output_dir",
            "runs/from_export",
        )
    )
    exported = load_file(user.work / "exported" / "model.safetensors")
    at_start = load_file(user.work / "runs" / "from_export" / "encoder.safetensors")
    assert at_start.keys() == exported.keys() and all(torch.equal(at_start[k], exported[k]) for k in exported)
    scored = user.json(
        user.run(
            "regioncl",
            "knn",
            "local-dir:exported",
            "--bank_data",
            "my_images/train",
            "--val_data",
            "my_images/val",
            "--k",
            "20",
        )
    )
    assert start["knn_top1_before"] == scored["knn_top1"]

    # timm's own weights, from the offline cache.
    user.run(
        "regioncl",
        "pretrain",
        *common,
        "--model.init",
        "timm",
        "--optim.max_steps",
        "0",
        "--knn.enabled",
        "false",
        "--run.output_dir",
        "runs/from_timm",
    )
    at_start = load_file(user.work / "runs" / "from_timm" / "encoder.safetensors")
    assert all(torch.equal(at_start[k], v) for k, v in user.timm_weights.items())

    # A resumed run takes its weights from its checkpoint: with the source gone, it goes on and ends
    # where the run that was never stopped ends.
    shutil.copytree(user.work / "exported", user.work / "init_copy")
    steps = [
        "--model.init",
        "local-dir:init_copy",
        "--optim.max_steps",
        "3",
        "--run.checkpoint_every",
        "1",
        "--knn.enabled",
        "false",
        "--data.num_workers",
        "0",
    ]
    user.run("regioncl", "pretrain", *common, *steps, "--run.output_dir", "runs/whole")
    user.run("regioncl", "pretrain", *common, *steps, "--run.stop_at_step", "1", "--run.output_dir", "runs/parts")
    shutil.rmtree(user.work / "init_copy")
    user.run("regioncl", "pretrain", *common, *steps, "--run.resume", "latest", "--run.output_dir", "runs/parts")
    whole, parts = (load_file(user.work / "runs" / name / "encoder.safetensors") for name in ("whole", "parts"))
    assert all(torch.equal(whole[k], parts[k]) for k in whole)


@pytest.mark.slow
def test_too_many_bad_files_stop_the_run_after_a_checkpoint(user):
    folder = user.work / "mostly_bad"
    draw_images(folder, (8, 8, 8), seed=2)
    break_images(folder, 60)  # 60 of 84 unreadable: more than 1 % and more than 50 a pass
    args = [
        "--data.source",
        "mostly_bad",
        "--optim.batch_size",
        "16",
        "--optim.max_steps",
        "6",
        "--knn.enabled",
        "false",
        "--run.log_every",
        "1",
        "--data.num_workers",
        "0",
        "--run.output_dir",
        "runs/bad",
    ]
    proc = user.run("regioncl", "pretrain", *args, rc=66)
    line = [line for line in proc.stderr.splitlines() if line.startswith("regioncl: ")]
    assert len(line) == 1 and "could not be decoded" in line[0] and "--run.resume latest" in line[0], proc.stderr[
        -2000:
    ]
    step = int(re.search(r"at step (\d+)", line[0]).group(1))
    assert 0 < step < 6 and (user.work / "runs" / "bad" / "checkpoints" / f"step_{step:08d}").is_dir()
    # Limits raised, the run goes on from the steps it paid for.
    done = user.json(user.run("regioncl", "pretrain", *args, "--data.max_bad_images", "1000", "--run.resume", "latest"))
    assert done["step"] == 6


@pytest.mark.slow
def test_the_run_records_its_precision_and_a_resume_keeps_it(user):
    args = [
        "--optim.max_steps",
        "2",
        "--optim.batch_size",
        "16",
        "--knn.enabled",
        "false",
        "--data.num_workers",
        "0",
        "--run.checkpoint_every",
        "1",
        "--run.output_dir",
        "runs/bf16",
    ]
    user.run("regioncl", "pretrain", *args, "--run.precision", "bf16", "--run.stop_at_step", "1")
    assert json.loads((user.work / "runs" / "bf16" / "config.json").read_text())["run"]["precision"] == "bf16"
    user.refused(
        "pretrain", *args, "--run.precision", "fp32", "--run.resume", "latest", says="run.precision='bf16' (now 'fp32')"
    )
    user.refused("pretrain", *args, "--run.resume", "latest", says="run.precision='bf16' (now 'fp32')")
    user.run("regioncl", "pretrain", *args, "--run.precision", "bf16", "--run.resume", "latest")


def test_help_is_readable_and_a_typo_gets_a_suggestion(user):
    text = user.run("regioncl", "pretrain", "--help").stdout
    assert "\n    regioncl pretrain --optim.epochs 2 --model.method mocov2\n" in text  # the examples keep their lines
    config = text[text.index("\n  --config") : text.index("\n  --print_recipe")]
    assert config.count("default") == 1 and "(default: sample)" in config
    assert "Path to a configuration file" not in text and "the model section as a whole" in text
    probe = user.run("regioncl", "probe", "--help").stdout
    assert (
        "The linear probe on frozen, pooled features.:" in probe
        or "The linear probe on frozen, pooled features:" in probe
        or "\nThe linear probe on frozen, pooled features" in probe
    )
    assert "MoCo's linear protocol by default: SGD lr 30, momentum 0.9, no weight decay, 100 epochs,:" not in probe
    for command in ("knn", "embed"):
        assert "the size the encoder was trained at" in " ".join(user.run("regioncl", command, "--help").stdout.split())
    assert user.run("regioncl", "-V").stdout.startswith("regioncl ")
    recipe = user.run("regioncl", "pretrain", "--optim.batch-size", "16", "--print-recipe").stdout
    assert "batch_size: 16" in recipe
    assert "did you mean 'pretrain'" in user.run("regioncl", "pretrian", rc=2).stderr
