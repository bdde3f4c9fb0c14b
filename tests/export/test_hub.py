"""Exports load in plain timm (a process that never imports regioncl), cards parse, pushes are right."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from regioncl import build_method, create_encoder
from regioncl.export.checkpoints import encoder_state, strip_wrappers
from regioncl.export.hub import card_metrics, export, load_zoo, push, render_card

ROOT = Path(__file__).resolve().parents[2]

LOADER = r"""
import json, sys, torch, timm
x = torch.load(sys.argv[2], weights_only=True)
model = timm.create_model(sys.argv[1], pretrained=True).eval()
with torch.no_grad():
    out = {"pooled": model(x), "fmap": model.forward_features(x)}
torch.save(out, sys.argv[3])
assert not any(m.startswith("regioncl") for m in sys.modules), "timm imported regioncl"
print(json.dumps({"num_classes": model.num_classes, "tag": model.pretrained_cfg.get("tag")}))
"""


def plain_timm(name, tmp_path, x):
    """Load `name` with timm in a fresh process that has no regioncl on its path and is offline."""
    torch.save(x, tmp_path / "x.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hf-cache"), HF_HOME=str(tmp_path / "hf-home"))
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, name, str(tmp_path / "x.pt"), str(tmp_path / "out.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(tmp_path / "out.pt", weights_only=True), json.loads(proc.stdout.strip().splitlines()[-1])


def offline_hub_cache(export_dir: Path, cache: Path, repo_id: str) -> None:
    """Lay out export_dir as huggingface_hub's cache holds a downloaded repo (refs/main → snapshot)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in export_dir.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())


def trained_like(backbone, **args):
    """An encoder whose weights and BN statistics differ from any fresh timm init."""
    torch.manual_seed(0)
    enc = create_encoder(backbone, **args)
    with torch.no_grad():
        for name, t in enc.state_dict().items():
            if t.is_floating_point():
                t.add_(0.01 * torch.randn_like(t)) if "running_var" not in name else t.mul_(1.5)
    return enc.eval()


def write_checkpoint(folder: Path, state: dict, backbone: str, backbone_args: dict) -> Path:
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    (folder / "trainer_state.json").write_text(
        json.dumps(
            {
                "step": 1,
                "config": {
                    "backbone": backbone,
                    "backbone_args": backbone_args,
                    "method": "regioncl_m",
                    "image_size": 64,
                    "epochs": 1,
                },
            }
        )
    )
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "resnet50w2"])
def test_export_loads_in_plain_timm_from_local_dir_and_offline_hub(tmp_path, backbone):
    enc = trained_like(backbone)
    if backbone == "resnet18":  # a whole method's checkpoint: projector, key encoder and queue must be dropped
        method = build_method("regioncl_m", enc, queue_size=64)
        state = method.state_dict()
    else:  # the larger ones as the encoder alone, to keep the test light
        state = {"encoder.model." + k: v for k, v in enc.model.state_dict().items()}
    ckpt = write_checkpoint(tmp_path / "ckpt", state, backbone, {})
    out = export(ckpt, tmp_path / "export", metadata={"recipe": "test"})
    saved = load_file(out / "model.safetensors")
    assert not any(k.startswith(("fc.", "projector", "key_", "queue")) for k in saved)
    assert set(saved) == set(enc.model.state_dict())
    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == 0
    assert config["architecture"] == ("resnet18" if backbone == "resnet18" else "resnet50")
    if backbone == "resnet50w2":
        assert config["model_args"] == {"channels": [128, 256, 512, 1024]} and config["num_features"] == 4096
    assert "regioncl" not in config["pretrained_cfg"] and "hf_hub_id" not in config["pretrained_cfg"]

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want_map = enc(x)
    offline_hub_cache(out, tmp_path / "hf-cache", "regioncl-test/enc")
    for name in (f"local-dir:{out}", "hf-hub:regioncl-test/enc"):
        got, info = plain_timm(name, tmp_path, x)
        assert info["num_classes"] == 0 and info["tag"].startswith("regioncl_m")
        assert (got["fmap"] - want_map).abs().max() <= 1e-6, name
        assert (got["pooled"] - want_map.mean((2, 3))).abs().max() <= 1e-6, name


def test_wrapped_and_compiled_checkpoints_export_the_same_weights(tmp_path):
    enc = trained_like("resnet18")
    plain = {"encoder.model." + k: v for k, v in enc.model.state_dict().items()}
    for i, prefix in enumerate(["module.", "_orig_mod.", "module._orig_mod.", "encoder._orig_mod."]):
        if prefix == "encoder._orig_mod.":
            state = {k.replace("encoder.", "encoder._orig_mod.", 1): v for k, v in plain.items()}
        else:
            state = {prefix + k: v for k, v in plain.items()}
        out = export(write_checkpoint(tmp_path / f"c{i}", state, "resnet18", {}), tmp_path / f"e{i}")
        saved = load_file(out / "model.safetensors")
        assert all(torch.equal(saved[k], v) for k, v in enc.model.state_dict().items()), prefix


def test_strip_wrappers():
    assert strip_wrappers("module._orig_mod.encoder.model.conv1.weight") == "encoder.model.conv1.weight"
    assert strip_wrappers("encoder._orig_mod.model.bn1.bias") == "encoder.model.bn1.bias"


def test_missing_or_unexpected_keys_are_refused_by_name(tmp_path):
    state = {"encoder.model." + k: v for k, v in trained_like("resnet18").model.state_dict().items()}
    del state["encoder.model.layer4.1.conv2.weight"]
    state["encoder.model.layer9.weird"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"does not fit resnet18.*: layer4\.1\.conv2\.weight is missing"):
        export(write_checkpoint(tmp_path / "c", state, "resnet18", {}), tmp_path / "e")
    state["encoder.model.layer4.1.conv2.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"layer4\.1\.conv2\.weight has shape \(1,\), not \(512, 512, 3, 3\)"):
        export(write_checkpoint(tmp_path / "c2", state, "resnet18", {}), tmp_path / "e2")
    state["encoder.model.layer4.1.conv2.weight"] = trained_like("resnet18").model.state_dict()["layer4.1.conv2.weight"]
    with pytest.raises(ValueError, match=r"layer9\.weird is not a tensor of the model"):
        export(write_checkpoint(tmp_path / "c3", state, "resnet18", {}), tmp_path / "e3")


def test_method_weights_without_an_encoder_are_refused():
    with pytest.raises(ValueError, match="no 'encoder.' weights"):
        encoder_state({"projector.0.weight": torch.zeros(1), "queue.keys": torch.zeros(1)})


class NotATensor:
    pass


def test_pth_files_are_read_with_weights_only(tmp_path):
    enc = trained_like("resnet18")
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"encoder.model." + k: v for k, v in enc.model.state_dict().items()}}, good)
    out = export(good, tmp_path / "e", backbone="resnet18")
    assert (out / "model.safetensors").is_file()
    evil = tmp_path / "evil.bin"
    torch.save({"state_dict": {}, "payload": NotATensor()}, evil)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global|NotATensor"):
        export(evil, tmp_path / "e2", backbone="resnet18")


@pytest.mark.slow
def test_dry_run_writes_a_card_and_config_that_parse_and_no_token(tmp_path):
    enc = trained_like("resnet18")
    ckpt = write_checkpoint(
        tmp_path / "ckpt", {"encoder.model." + k: v for k, v in enc.model.state_dict().items()}, "resnet18", {}
    )
    token = "hf_FAKEtoken1234567890abcdefghijklmnop"
    env = {**os.environ, "HF_TOKEN": token, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "push_to_hub.py"),
            str(ckpt),
            "--repo-id",
            "someone/regioncl_m_r18",
            "--method",
            "regioncl_m",
            "--metrics",
            '{"knn_top1": 23.2}',
            "--dry-run",
            "--out",
            str(tmp_path / "release"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "nothing uploaded" in proc.stdout and token not in proc.stdout + proc.stderr
    release = tmp_path / "release"
    assert sorted(f.name for f in release.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    for f in release.iterdir():
        assert token.encode() not in f.read_bytes(), f.name
    readme = (release / "README.md").read_text()
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front["library_name"] == "timm" and "regioncl_m" in front["tags"]
    assert front["model-index"][0]["results"][0]["metrics"][0] == {
        "type": "knn_top1",
        "value": 23.2,
        "name": "knn_top1",
    }
    assert "hf-hub:someone/regioncl_m_r18" in readme and "{{" not in readme
    import timm

    model = timm.create_model(f"local-dir:{release}", pretrained=True)
    assert model.num_classes == 0


def test_card_metrics_read_the_evaluations_output_in_percent_and_refuse_what_is_not_a_number():
    from regioncl.errors import UserError

    knn = {"encoder": "runs/x", "knn_top1": 0.8125, "k": 20, "bank": "/home/me/imgs/train", "val": "hf:org/set:test"}
    probe = {"encoder": "runs/x", "protocol": "linear", "top1": 0.9333, "top5": None, "val": "hf:org/set:test"}
    tuned = {"encoder": "runs/x", "protocol": "finetune", "top1": 0.95, "top5": 0.999, "epochs": 5, "classes": 10}
    # fractions become percent; paths, sizes and counts stay off the card; the data scored on is named
    assert card_metrics([knn, probe, tuned]) == (
        {"knn_top1": 81.25, "linear_top1": 93.33, "finetune_top1": 95.0, "finetune_top5": 99.9},
        "hf:org/set:test",
    )
    assert card_metrics([{"knn_top1": 81.3, "coco_ap": 40}]) == ({"knn_top1": 81.3, "coco_ap": 40}, None)
    elsewhere = {**probe, "val": "my_images/val"}
    for bad, says in (
        ([{"knn_top1": 81.3, "bank": "my_images/train"}], "bank is 'my_images/train', not a finite number"),
        ([{"knn_top1": None}], "knn_top1 is None, not a finite number"),
        ([{**knn, "knn_top1": float("nan")}], "knn_top1 is nan"),  # a kNN with no decodable query
        ([knn, {"knn_top1": 80.0}], "knn_top1 given twice"),
        ([[0.8]], "expected JSON objects"),
        ([{k: v for k, v in probe.items() if k != "protocol"}], 'add "protocol": "linear" or "finetune"'),
        ([knn, elsewhere], "evaluations on different data"),
        # pretrain's own summary: fractions from the monitor, on data the card could not name
        ([{"knn_top1_before": 0.163, "knn_top1_after": 0.237, "step": 300, "epoch": 3}], "pretrain's summary"),
        ([{"step": 120, "epoch": 1}], "pretrain's summary"),  # a run stopped early, without its kNN
    ):
        with pytest.raises(UserError, match=says):
            card_metrics(bad)


@pytest.mark.parametrize("name", sorted(load_zoo()))
def test_every_zoo_entry_renders_a_valid_card(name):
    entry = load_zoo()[name]
    for key in ("repo_id", "method", "backbone", "recipe", "dataset", "epochs"):
        assert key in entry, key
    assert (ROOT / "regioncl" / "recipes" / f"{entry['recipe']}.yaml").is_file()
    from regioncl.backbones import resolve_backbone

    assert list(resolve_backbone(entry["backbone"]).model_args.get("channels", (64, 128, 256, 512))) == entry["widths"]
    card = render_card(entry)
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] and front["datasets"] == [entry["dataset"]]
    # Paper numbers are never presented as this model's measured results.
    assert ("model-index" in front) == bool(entry.get("metrics"))
    assert entry["repo_id"] in card and "{{" not in card
    assert name in (ROOT / "hub" / "README.md").read_text()


class FakeApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def create_branch(self, repo_id, **kw):
        self.calls.append(("create_branch", repo_id, kw))

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw["repo_id"], kw))
        return type("Info", (), {"commit_url": "https://example.invalid/commit/1"})()


def test_push_creates_the_repo_then_uploads(tmp_path):
    api = FakeApi()
    url = push(tmp_path, "org/name", private=True, revision="v1", api=api)
    assert [c[0] for c in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][2]["private"] is True and api.calls[0][2]["exist_ok"] is True
    assert api.calls[2][2]["revision"] == "v1" and api.calls[2][2]["folder_path"] == str(tmp_path)
    assert url.endswith("/commit/1")
