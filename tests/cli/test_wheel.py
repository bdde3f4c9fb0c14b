"""The wheel carries everything it needs: installed outside the clone, the command works."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_wheel_works_outside_the_clone(tmp_path):
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(dist.glob("regioncl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in (
        "regioncl/export/zoo.yaml",
        "regioncl/export/MODEL_CARD.md",
        "regioncl/recipes/regioncl_m_r50.yaml",
        "regioncl/recipes/sample.yaml",
        "regioncl/export/configs/detectron2/mask_rcnn_R_50_FPN_2x_regioncl.yaml",
    ):
        assert shipped in names, shipped
    with zipfile.ZipFile(wheel) as z:  # the files themselves, not links to the clone's
        assert (
            yaml.safe_load(z.read("regioncl/export/zoo.yaml"))["models"]
            == yaml.safe_load((ROOT / "hub" / "zoo.yaml").read_text())["models"]
        )
        assert z.read("regioncl/export/MODEL_CARD.md") == (ROOT / "MODEL_CARD.md").read_bytes()
    assert not any(n.startswith(("benchmarks/", "tests/", "scripts/")) for n in names)

    # A fresh environment outside the repository: the wheel, and the dependencies this one has
    # (a path entry to its site-packages, whose own .pth files, the clone's editable install
    # among them, are not read).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def regioncl(*args: str) -> str:
        proc = subprocess.run(
            [str(venv / "bin" / "regioncl"), *args], capture_output=True, text=True, cwd=work, env=env, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    where = subprocess.run(
        [str(python), "-c", "import regioncl; print(regioncl.__file__)"],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        check=True,
    ).stdout
    assert where.startswith(site)
    regioncl(
        "pretrain",
        "--model.method",
        "mocov2",
        "--model.backbone",
        "resnet50",
        "--model.backbone_args",
        "{}",
        "--data.image_size",
        "32",
        "--optim.batch_size",
        "4",
        "--method.queue_size",
        "8",
        "--optim.max_steps",
        "2",
        "--knn.enabled",
        "false",
        "--data.num_workers",
        "0",
        "--run.output_dir",
        "run",
    )
    assert "regioncl_m_r50" in regioncl("pretrain", "--config", "regioncl_m_r50", "--print_recipe")
    regioncl("export", "run", "exported")
    assert (work / "exported" / "model.safetensors").is_file()
    out = regioncl("push", "run", "--repo-id", "me/mocov2_r50", "--dry-run", "--out", "release")
    assert "dry run: nothing uploaded" in out
    card = (work / "release" / "README.md").read_text()
    assert "MoCo v2" in card and "library_name: timm" in card and "(2 steps)" in card and "32 px inputs" in card
