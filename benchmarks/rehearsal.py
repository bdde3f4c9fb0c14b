"""A rehearsal, on a CPU machine, of the GPU check on the lent GPU machine, failing where it would.

    python -m benchmarks.rehearsal WORK                      # fast: this interpreter's packages, filtered
    python -m benchmarks.rehearsal WORK --python /root/.pyenv/versions/3.12.1/bin/python --install-image

The lent machine has only its image's packages (``benchmarks/device_image.json``), reaches no
registry and gets the project as the device tool sends it: tracked and untracked-not-ignored
files, plus the carried bundle. The rehearsal builds each of those as far as this machine allows:

1. the wheel bundle, resolved for the rehearsal's interpreter (``scripts/wheel_bundle.py``);
2. the project copied as it travels, the bundle in it as ``.bundle/``;
3. an environment holding only image packages: by default a virtual environment that sees the
   distributions of *this* interpreter that the image lists (their folders linked in, nothing
   else: the packages the image lacks are absent as they are there), so the torch installed here
   stands in for the image's 2.11 and this Python for its 3.12; or, with ``--install-image``, a
   new environment of the given interpreter with the image's packages installed from the registry
   at the versions the image list records (torch 2.11 among them), then every distribution the
   image does not list removed;
4. ``scripts/gpu_check.sh OUT --dry-run --device cpu`` in that environment with ``PIP_NO_INDEX=1``,
   no pip configuration, no proxy and, where this machine allows it, no network at all (a new
   network namespace, ``unshare --net``): every stage must end ``ok``.

It returns (and prints) the stages' records and how long the bundle, the install from it and the
check took.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from packaging.utils import canonicalize_name

from benchmarks.bundle import ROOT, build, load_image, travelling_files

# The CUDA libraries that a CUDA build of torch brings under its own names; the image has its own.
STAND_IN_PREFIXES = ("nvidia-",)


def copy_project(dest: Path, root: Path = ROOT) -> None:
    for f in travelling_files(root):
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, dest / f)


def in_image(name: str, image: dict) -> bool:
    name = canonicalize_name(name)
    return name in image["packages"] or name.startswith(STAND_IN_PREFIXES) or name in ("pip", "setuptools", "wheel")


def image_view(view: Path, image: dict) -> list[str]:
    """Links into ``view`` the top-level folders and files of this interpreter's distributions that
    the image lists; returns their names."""
    site = Path(sysconfig.get_paths()["purelib"])
    view.mkdir(parents=True, exist_ok=True)
    shown = []
    for dist in importlib.metadata.distributions(path=[str(site)]):
        if not in_image(dist.metadata["Name"], image):
            continue
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            if (site / top).exists() and not (view / top).exists():
                (view / top).symlink_to(site / top)
        shown.append(canonicalize_name(dist.metadata["Name"]))
    return sorted(shown)


def make_environment(env_dir: Path, image: dict, python: str, install_image: bool, from_image: dict) -> list[str]:
    """The image-like environment; returns the distributions it holds."""
    # Without a pip of its own when it sees this interpreter's: the image's pip comes with the rest.
    subprocess.run([python, "-m", "venv", *([] if install_image else ["--without-pip"]), str(env_dir)], check=True)
    env_python = str(env_dir / "bin" / "python")
    purelib = subprocess.run(
        [env_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not install_image:
        shown = image_view(env_dir / "image-site", image)
        (Path(purelib) / "image.pth").write_text(str(env_dir / "image-site") + "\n")
        return shown
    wanted = [f"{n}=={v}" if v else n for n, v in from_image.items()]
    subprocess.run([env_python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *wanted], check=True)
    listed = json.loads(
        subprocess.run(
            [env_python, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, check=True
        ).stdout
    )
    extra = [d["name"] for d in listed if not in_image(d["name"], image)]
    if extra:  # what pip brought that the image does not have: the machine would lack it too
        subprocess.run([env_python, "-m", "pip", "uninstall", "-q", "-y", *extra], check=True)
    return sorted(canonicalize_name(d["name"]) for d in listed if d["name"] not in extra)


def tiny_folders(root: Path) -> Path:
    """Two classes of random 28 × 28 images in train/ and test/, for the fmnist stage's dry run."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        for i in range(n):
            folder = root / split / f"c{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), mode="L").save(folder / f"{i}.png")
    return root


def offline_prefix() -> list[str]:
    """``unshare --net`` where this machine allows a new network namespace, else nothing."""
    try:
        if subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0:
            return ["unshare", "--net"]
    except OSError:
        pass
    return []


def rehearse(
    work: Path,
    python: str | None = None,
    install_image: bool = False,
    bundle: Path | None = None,
    budget_s: int = 600,
    log=print,
) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    image = load_image()
    python = python or sys.executable
    version = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    project, times = work / "project", {}
    copy_project(project)
    start = time.perf_counter()
    if bundle is None:
        log(f"bundle for CPython {version}:")
        manifest = build(project / ".bundle", ".".join(version.split(".")[:2]), log=lambda m: log("  " + m))
    else:
        shutil.copytree(bundle, project / ".bundle")
        manifest = json.loads((project / ".bundle" / "bundle.json").read_text())
    times["bundle_s"] = time.perf_counter() - start
    start = time.perf_counter()
    holds = make_environment(work / "image", image, python, install_image, manifest["from_image"])
    times["environment_s"] = time.perf_counter() - start
    lacking = sorted(set(manifest["wheels"]) & set(holds))
    if lacking:
        raise AssertionError(f"the image-like environment holds what the bundle carries: {lacking}")
    env = {
        "PATH": f"{work / 'image' / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work / "home"),
        "TMPDIR": str(work / "tmp"),
        "LANG": "C.UTF-8",
        "PIP_NO_INDEX": "1",
        "PIP_CONFIG_FILE": os.devnull,
        "PYTHONNOUSERSITE": "1",
        "REGIONCL_SITE": str(work / "site"),
        "OMP_NUM_THREADS": "1",
    }
    for d in ("home", "tmp"):
        (work / d).mkdir(exist_ok=True)
    prefix = offline_prefix()
    budgets = [f"{s}={budget_s}" for s in ("methods", "throughput", "pipeline", "fmnist")]
    start = time.perf_counter()
    done = subprocess.run(
        [
            *prefix,
            "bash",
            "scripts/gpu_check.sh",
            str(work / "out"),
            "--dry-run",
            "--device",
            "cpu",
            "--fmnist-data",
            str(tiny_folders(work / "fmnist")),
            "--budget",
            *budgets,
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=6 * budget_s,
    )
    times["gpu_check_s"] = time.perf_counter() - start
    log(done.stdout[-3000:] + done.stderr[-3000:])
    path = work / "out" / "gpu_check.json"
    records = json.loads(path.read_text()) if path.is_file() else []
    environment = next((r["result"] for r in records if r["stage"] == "environment"), {})
    times["install_s"] = (environment.get("bundle") or {}).get("install_seconds")
    return {
        "returncode": done.returncode,
        "python": version,
        "offline": bool(prefix),
        "holds": holds,
        "records": records,
        "times": times,
        "bundle": manifest,
        "output": done.stdout + done.stderr,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work", type=Path, help="an empty folder for the rehearsal")
    p.add_argument("--python", help="the interpreter of the image-like environment (default: this one)")
    p.add_argument(
        "--install-image",
        action="store_true",
        help="install the image's packages at its versions instead of linking this interpreter's",
    )
    p.add_argument("--bundle", type=Path, help="a bundle made beforehand for the same interpreter")
    a = p.parse_args(argv)
    result = rehearse(a.work, a.python, a.install_image, a.bundle)
    status = {r["stage"]: r["status"] for r in result["records"]}
    print(
        json.dumps(
            {
                "python": result["python"],
                "offline": result["offline"],
                "status": status,
                "times": result["times"],
                "torch": result["records"][0]["result"]["packages"]["torch"] if result["records"] else None,
            },
            indent=1,
        )
    )
    return 0 if result["returncode"] == 0 and status and all(s == "ok" for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
