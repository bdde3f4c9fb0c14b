"""Transfer tooling: timm ResNet → detectron2 / mmdet names, the CLIs, the loader, the configs."""

from __future__ import annotations

import ast
import pickle
import pickletools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file

from regioncl.export.transfer import detectron2_checkpoint, load_encoder_state, timm_to_detectron2, timm_to_mmdet

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "regioncl" / "export" / "configs"

# The timm names detectron2 has no counterpart for, and that a converted dict must not keep.
TIMM_MARKERS = ("layer", "bn", "downsample", "num_batches_tracked", "fc.")


class Opaque:
    """A non-tensor object: unpickling it would run arbitrary code paths."""

    def __init__(self) -> None:
        self.payload = "not weights"


def _encoder_state(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """A timm encoder state dict with every tensor distinct, so a swapped mapping shows in values."""
    model = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="")
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, (k, v) in enumerate(model.state_dict().items()):
        state[k] = torch.tensor(i) if k.endswith("num_batches_tracked") else torch.randn(v.shape, generator=g)
    return state


@pytest.fixture(scope="module")
def r50() -> dict[str, torch.Tensor]:
    return _encoder_state("resnet50", 0)


@pytest.fixture(scope="module")
def r18() -> dict[str, torch.Tensor]:
    return _encoder_state("resnet18", 1)


def detectron2_resnet_keys(blocks: tuple[int, ...], convs: int, shortcut_stages: set[int]) -> set[str]:
    """The state-dict names of detectron2's ``ResNet`` body (detectron2/modeling/backbone/resnet.py).

    Args:
        blocks: blocks per stage res2..res5, e.g. (3, 4, 6, 3) for R50.
        convs: convs per block: 3 (BottleneckBlock) or 2 (BasicBlock).
        shortcut_stages: stages whose block 0 has a projection shortcut (in != out channels).
    """
    norm = ("weight", "bias", "running_mean", "running_var")

    def conv(prefix: str) -> set[str]:
        return {f"{prefix}.weight"} | {f"{prefix}.norm.{f}" for f in norm}

    keys = conv("stem.conv1")
    for stage, n in zip(range(2, 6), blocks):
        for b in range(n):
            for k in range(1, convs + 1):
                keys |= conv(f"res{stage}.{b}.conv{k}")
            if b == 0 and stage in shortcut_stages:
                keys |= conv(f"res{stage}.{b}.shortcut")
    return keys


def moco_rename(key: str) -> str:
    """MoCo's converter, string replacement for string replacement (an independent oracle)."""
    if "layer" not in key:
        key = "stem." + key
    for t in (1, 2, 3, 4):
        key = key.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        key = key.replace(f"bn{t}", f"conv{t}.norm")
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def test_r50_every_key_mapped_none_left_in_timm_naming(r50):
    out = timm_to_detectron2(r50)
    counters = sum(k.endswith("num_batches_tracked") for k in r50)
    assert counters == 53  # stem + 16 blocks x 3 BN + 4 shortcut BN
    assert len(out) == len(r50) - counters
    assert not [k for k in out if any(m in k for m in TIMM_MARKERS)]
    assert all(k.startswith(("stem.", "res2.", "res3.", "res4.", "res5.")) for k in out)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("stem.conv1.weight", (64, 3, 7, 7)),
        ("stem.conv1.norm.running_var", (64,)),
        ("res2.0.shortcut.weight", (256, 64, 1, 1)),
        ("res2.0.conv1.weight", (64, 64, 1, 1)),
        ("res2.0.conv2.norm.weight", (64,)),
        ("res3.0.conv2.weight", (128, 128, 3, 3)),
        ("res4.5.conv3.norm.running_mean", (1024,)),
        ("res5.2.conv3.weight", (2048, 512, 1, 1)),
        ("res5.0.shortcut.norm.bias", (2048,)),
    ],
)
def test_r50_detectron2_names_and_shapes(r50, name, shape):
    out = timm_to_detectron2(r50)
    assert tuple(out[name].shape) == shape


def test_r50_key_set_is_detectron2_r50(r50):
    expected = detectron2_resnet_keys((3, 4, 6, 3), convs=3, shortcut_stages={2, 3, 4, 5})
    assert len(expected) == 265
    assert set(timm_to_detectron2(r50)) == expected


def test_r18_key_set_is_detectron2_r18(r18):
    # BasicBlock: two convs; res2 keeps 64 channels, so its block 0 has no projection shortcut.
    expected = detectron2_resnet_keys((2, 2, 2, 2), convs=2, shortcut_stages={3, 4, 5})
    assert set(timm_to_detectron2(r18)) == expected


@pytest.mark.parametrize("arch", ["r50", "r18"])
def test_values_follow_moco_mapping(arch, request):
    state = request.getfixturevalue(arch)
    out = timm_to_detectron2(state)
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        # Every tensor is distinct, so a bn1/bn2 or shortcut mix-up fails here even at equal shapes.
        assert torch.equal(out[moco_rename(key)], value), key
    assert torch.equal(out["res3.0.shortcut.norm.running_mean"], state["layer2.0.downsample.1.running_mean"])


@pytest.mark.parametrize(
    "extra",
    [
        "layer1.0.se.fc1.weight",  # SE block
        "conv1.0.weight",  # resnet*d deep stem
        "encoder_q.conv1.weight",  # a method checkpoint, not the encoder
        "layer5.0.conv1.weight",  # no such stage
        "layer1.0.conv1.bias",  # detectron2's convs before a norm have no bias
    ],
)
def test_unknown_key_is_named(r18, extra):
    state = dict(r18)
    state[extra] = torch.zeros(8, 8, 1, 1)
    with pytest.raises(ValueError, match=r"no timm ResNet rule") as err:
        timm_to_detectron2(state)
    assert repr(extra) in str(err.value)
    with pytest.raises(ValueError, match=r"no timm ResNet rule"):
        timm_to_mmdet(state)


def test_wrong_rank_under_a_known_name_is_refused(r18):
    # resnet*d keeps a conv (4-D) at downsample.1, where plain ResNet keeps its BN (1-D).
    state = dict(r18)
    state["layer2.0.downsample.1.weight"] = torch.zeros(128, 64, 1, 1)
    with pytest.raises(ValueError, match=r"'layer2\.0\.downsample\.1\.weight'"):
        timm_to_detectron2(state)


def test_classifier_is_refused(r18):
    state = dict(r18, **{"fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)})
    with pytest.raises(ValueError, match=r"classifier") as err:
        timm_to_detectron2(state)
    assert "'fc.weight'" in str(err.value) and "'fc.bias'" in str(err.value)
    with pytest.raises(ValueError, match=r"'fc\.weight'"):
        timm_to_mmdet(state)


def test_detectron2_checkpoint_layout(r18):
    ckpt = detectron2_checkpoint(timm_to_detectron2(r18))
    assert ckpt["__author__"] == "regioncl" and ckpt["matching_heuristics"] is True
    assert all(isinstance(v, np.ndarray) for v in ckpt["model"].values())
    np.testing.assert_array_equal(ckpt["model"]["res4.1.conv2.weight"], r18["layer3.1.conv2.weight"].numpy())
    with pytest.raises(ValueError, match="timm_to_detectron2"):
        detectron2_checkpoint(r18)


def test_bfloat16_becomes_numpy_float32(r18):
    ckpt = detectron2_checkpoint(
        timm_to_detectron2({k: v.bfloat16() if v.is_floating_point() else v for k, v in r18.items()})
    )
    assert ckpt["model"]["stem.conv1.weight"].dtype == np.float32


def test_mmdet_prefix_keeps_counters_and_round_trips(r50):
    out = timm_to_mmdet(r50)
    assert len(out) == len(r50)
    assert all(k.startswith("backbone.") for k in out)
    assert "backbone.layer1.0.downsample.1.num_batches_tracked" in out
    # What mmengine's Pretrained init with prefix='backbone.' does: select, strip, load.
    stripped = {k[len("backbone.") :]: v for k, v in out.items() if k.startswith("backbone.")}
    model = timm.create_model("resnet50", pretrained=False, num_classes=0, global_pool="")
    model.load_state_dict(stripped, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, r50[k]), k


def _run(script: str, *args: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT.parent,
    )


@pytest.mark.slow
def test_convert_detectron2_script(tmp_path, r18):
    src = tmp_path / "encoder.safetensors"
    save_file(r18, str(src))
    out = tmp_path / "d2" / "regioncl_r18.pkl"
    res = _run("convert_detectron2.py", src, out)
    assert res.returncode == 0, res.stderr
    n_params = sum(
        v.numel() for k, v in r18.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert f"{n_params:,} parameters" in res.stdout
    raw = out.read_bytes()
    # detectron2 unpickles without torch: only numpy/builtins may appear as globals.
    globals_ = {arg for op, arg, _ in pickletools.genops(raw) if op.name in ("GLOBAL", "STACK_GLOBAL") and arg}
    assert not [g for g in globals_ if "torch" in str(g)]
    ckpt = pickle.loads(raw)
    assert ckpt["matching_heuristics"] is True
    expected = timm_to_detectron2(r18)
    assert set(ckpt["model"]) == set(expected)
    for k, v in ckpt["model"].items():
        assert isinstance(v, np.ndarray)
        np.testing.assert_array_equal(v, expected[k].numpy())


@pytest.mark.slow
def test_convert_detectron2_script_refuses_classifier(tmp_path, r18):
    src = tmp_path / "encoder.safetensors"
    save_file(dict(r18, **{"fc.weight": torch.zeros(10, 512)}), str(src))
    res = _run("convert_detectron2.py", src, tmp_path / "out.pkl")
    assert res.returncode != 0 and "fc.weight" in res.stderr
    assert not (tmp_path / "out.pkl").exists()


@pytest.mark.slow
def test_convert_mmdet_script_matches_config_prefix(tmp_path, r18):
    src = tmp_path / "export"
    src.mkdir()
    save_file(r18, str(src / "model.safetensors"))
    out = tmp_path / "regioncl_r18_mmdet.pth"
    res = _run("convert_mmdet.py", src, out)
    assert res.returncode == 0, res.stderr
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["meta"]["key_prefix"] == "backbone."
    prefix = _exec_config(CONFIGS / "mmdet" / "mask_rcnn_r50_fpn_2x_coco_regioncl.py")["model"]["backbone"]["init_cfg"][
        "prefix"
    ]
    stripped = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    model = timm.create_model("resnet18", pretrained=False, num_classes=0, global_pool="")
    model.load_state_dict(stripped, strict=True)
    assert torch.equal(model.state_dict()["layer4.1.bn2.running_var"], r18["layer4.1.bn2.running_var"])


def test_load_encoder_state_formats(tmp_path, r18):
    save_file(r18, str(tmp_path / "encoder.safetensors"))
    assert set(load_encoder_state(tmp_path / "encoder.safetensors")) == set(r18)
    assert set(load_encoder_state(tmp_path)) == set(r18)  # folder: encoder.safetensors fallback
    for wrapper in ("state_dict", "model"):
        torch.save({wrapper: r18, "epoch": 3}, tmp_path / f"{wrapper}.pth")
        loaded = load_encoder_state(tmp_path / f"{wrapper}.pth")
        assert torch.equal(loaded["conv1.weight"], r18["conv1.weight"])
    torch.save(r18, tmp_path / "plain.bin")
    assert set(load_encoder_state(tmp_path / "plain.bin")) == set(r18)
    with pytest.raises(ValueError, match="unsupported checkpoint file"):
        (tmp_path / "w.npz").write_bytes(b"")
        load_encoder_state(tmp_path / "w.npz")
    with pytest.raises(FileNotFoundError):
        load_encoder_state(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError):
        (tmp_path / "empty").mkdir()
        load_encoder_state(tmp_path / "empty")


def test_load_encoder_state_refuses_pickled_objects(tmp_path, r18):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": dict(r18), "extra": Opaque()}, path)
    with pytest.raises(ValueError, match="pickled objects other than tensors"):
        load_encoder_state(path)


def test_load_encoder_state_refuses_non_tensor_values(tmp_path):
    torch.save({"conv1.weight": [1.0, 2.0]}, tmp_path / "list.pt")
    with pytest.raises(ValueError, match="conv1.weight"):
        load_encoder_state(tmp_path / "list.pt")


def _merged_yaml(path: Path) -> dict:
    """detectron2's _BASE_ resolution: the base (relative to the file) updated recursively."""
    cfg = yaml.safe_load(path.read_text())
    base = cfg.pop("_BASE_", None)
    if base is None:
        return cfg
    merged = _merged_yaml(path.parent / base)

    def update(dst: dict, src: dict) -> None:
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                update(dst[k], v)
            else:
                dst[k] = v

    update(merged, cfg)
    return merged


def test_detectron2_config():
    cfg = _merged_yaml(CONFIGS / "detectron2" / "mask_rcnn_R_50_FPN_2x_regioncl.yaml")
    m = cfg["MODEL"]
    assert m["WEIGHTS"] == "regioncl_r50.pkl" and m["MASK_ON"] is True
    assert m["PIXEL_MEAN"] == [123.675, 116.280, 103.530]
    assert m["PIXEL_STD"] == [58.395, 57.120, 57.375]
    assert m["RESNETS"]["STRIDE_IN_1X1"] is False and m["RESNETS"]["DEPTH"] == 50
    assert m["BACKBONE"] == {"NAME": "build_resnet_fpn_backbone", "FREEZE_AT": 0}
    for norm in (m["RESNETS"], m["FPN"], m["ROI_BOX_HEAD"], m["ROI_MASK_HEAD"]):
        assert norm["NORM"] == "SyncBN"
    assert m["ROI_BOX_HEAD"]["NUM_CONV"] == 4 and m["ROI_BOX_HEAD"]["NUM_FC"] == 1
    assert cfg["INPUT"]["FORMAT"] == "RGB"
    # detectron2 reads parenthesised tuples with literal_eval.
    assert ast.literal_eval(cfg["SOLVER"]["STEPS"]) == (120000, 160000)
    assert cfg["SOLVER"]["MAX_ITER"] == 180000
    assert cfg["TEST"]["PRECISE_BN"]["ENABLED"] is True


def _exec_config(path: Path) -> dict:
    """Evaluate an mmengine config's own assignments (no base): they are plain dict(...) literals."""
    source = path.read_text()
    ast.parse(source, filename=str(path))
    namespace: dict = {"__builtins__": {"dict": dict}}
    exec(compile(source, str(path), "exec"), namespace)
    return namespace


def test_mmdet_config():
    cfg = _exec_config(CONFIGS / "mmdet" / "mask_rcnn_r50_fpn_2x_coco_regioncl.py")
    assert cfg["_base_"] == "mmdet::mask_rcnn/mask-rcnn_r50_fpn_2x_coco.py"
    model = cfg["model"]
    assert model["backbone"]["init_cfg"] == {
        "type": "Pretrained",
        "prefix": "backbone.",
        "checkpoint": "regioncl_r50_mmdet.pth",
    }
    syncbn = {"type": "SyncBN", "requires_grad": True}
    assert model["backbone"]["norm_cfg"] == syncbn and model["backbone"]["norm_eval"] is False
    assert model["neck"]["norm_cfg"] == syncbn
    assert model["roi_head"]["bbox_head"]["norm_cfg"] == syncbn
    assert model["roi_head"]["mask_head"]["norm_cfg"] == syncbn
    pre = model["data_preprocessor"]
    assert pre["bgr_to_rgb"] is True
    assert pre["mean"] == [123.675, 116.28, 103.53] and pre["std"] == [58.395, 57.12, 57.375]


@pytest.mark.parametrize(
    ("name", "base"),
    [
        (
            "td-hm_res50_8xb64-210e_coco-256x192_regioncl.py",
            "mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_res50_8xb64-210e_coco-256x192.py",
        ),
        (
            "td-hm_res50_8xb64-210e_ap10k-256x256_regioncl.py",
            "mmpose::animal_2d_keypoint/topdown_heatmap/ap10k/td-hm_res50_8xb64-210e_ap10k-256x256.py",
        ),
    ],
)
def test_mmpose_configs(name, base):
    path = CONFIGS / "mmpose" / name
    cfg = _exec_config(path)
    assert cfg["_base_"] == base
    comments = "".join(line[2:] for line in path.read_text().splitlines() if line.startswith("# "))
    assert base.split("::")[1] in comments  # the source base file is named in a comment
    assert cfg["optim_wrapper"]["optimizer"] == {"type": "Adam", "lr": 1e-4}
    assert cfg["train_cfg"]["max_epochs"] == 210
    step = [s for s in cfg["param_scheduler"] if s["type"] == "MultiStepLR"]
    assert len(step) == 1 and step[0]["milestones"] == [170, 200] and step[0]["end"] == 210
    assert step[0]["gamma"] == 0.1 and step[0]["by_epoch"] is True
    assert cfg["model"]["backbone"]["init_cfg"]["prefix"] == "backbone."
    assert cfg["model"]["backbone"]["init_cfg"]["checkpoint"] == "regioncl_r50_mmdet.pth"
