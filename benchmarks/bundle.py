"""A folder of wheels for a machine that reaches no package registry (the lent GPU machines).

    python scripts/wheel_bundle.py                    # .bundle/: what the device image lacks, for CPython 3.12
    python scripts/wheel_bundle.py --fashion-mnist    # and Fashion-MNIST's IDX files for gpu_check's fmnist stage
    python scripts/wheel_bundle.py --python-version 3.11 --out /tmp/b    # another interpreter (the rehearsal)

What the machine already has is data, ``benchmarks/device_image.json`` (the image's package
list, the date it was read, and the versions seen there). The bundle holds regioncl's
requirements (and the ``bench`` extra's, for the comparison with lightly) that the image lacks,
with their own requirements, resolved against that list: a requirement the image meets is not
carried, one it meets with a version outside the requirement's range is carried at a version
inside it (it then shadows the image's on ``PYTHONPATH``), and every package is carried in one
version only (two would stop ``pip install --no-deps`` on the machine). Wheels only, for the
image's platform, or built here from a source release when that makes a pure-Python wheel; a
package that has neither is listed under ``missing`` in ``bundle.json`` with the reason, and the stages of ``benchmarks/gpu_check.py`` that need it say so.

``scripts/gpu_check.sh`` installs the bundle with ``pip install --no-index --no-deps --target``
when the environment lacks regioncl's requirements; it never asks a registry. The working tree
and the bundle travel together and must stay under the device tool's 64 MiB: the total is
printed and checked.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "benchmarks" / "device_image.json"
TRAVEL_LIMIT = 64 * 2**20
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# The extras of regioncl that the GPU check uses beyond its requirements: lightly for the
# step comparison; dev's pytest, matplotlib and tensorboard are in the image.
EXTRAS = ("bench",)


def load_image(path: Path = IMAGE) -> dict:
    data = json.loads(path.read_text())
    data["packages"] = {canonicalize_name(k): v for k, v in data["packages"].items()}
    return data


def project_requirements(pyproject: Path = ROOT / "pyproject.toml", extras: tuple[str, ...] = EXTRAS) -> list[str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the dev extra installs tomli, the same parser
        import tomli as tomllib

    project = tomllib.loads(pyproject.read_text())["project"]
    return [*project["dependencies"], *(r for e in extras for r in project["optional-dependencies"][e])]


def marker_environment(python_version: str) -> dict[str, str]:
    """PEP 508 marker values of CPython ``python_version`` on Linux x86-64."""
    full = python_version if python_version.count(".") == 2 else python_version + ".0"
    return {
        "python_version": ".".join(full.split(".")[:2]),
        "python_full_version": full,
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "implementation_name": "cpython",
        "implementation_version": full,
        "platform_release": "",
        "platform_version": "",
    }


def applies(req: Requirement, env: dict[str, str], extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""}))


@dataclass
class Bundle:
    """What was resolved: the wheels carried, what the image is trusted for, what could not be had."""

    wheels: dict[str, tuple[str, Path]] = field(default_factory=dict)  # name → (version, file)
    from_image: dict[str, str | None] = field(default_factory=dict)  # name → image's version, if known
    missing: dict[str, str] = field(default_factory=dict)  # name → why
    needed_by: dict[str, set[str]] = field(default_factory=dict)
    extras: dict[str, set[str]] = field(default_factory=dict)  # name → extras walked


class Conflict(Exception):
    """A requirement met late that the version already picked does not satisfy."""

    def __init__(self, name: str, spec: SpecifierSet) -> None:
        super().__init__(f"{name}{spec}")
        self.name, self.spec = name, spec


def requires_dist(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode("utf-8", "replace")
    return [
        line.split(":", 1)[1].strip()
        for line in text.split("\n\n", 1)[0].splitlines()
        if line.startswith("Requires-Dist:")
    ]


def download(requirement: str, python_version: str, platforms: list[str], dest: Path) -> Path:
    """One wheel for the target interpreter and platform, without its requirements: ``pip download``
    with the target's tags, so that it works from any machine that reaches a registry."""
    req = Requirement(requirement)
    name = canonicalize_name(req.name)
    cached = [
        w
        for w in dest.glob("*.whl")
        if parse_wheel_filename(w.name)[0] == name
        and req.specifier.contains(parse_wheel_filename(w.name)[1], prereleases=True)
    ]
    if cached:
        return max(cached, key=lambda w: parse_wheel_filename(w.name)[1])
    before = set(dest.glob("*.whl"))
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--quiet",
        "--disable-pip-version-check",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--dest",
        str(dest),
        *(a for p in platforms for a in ("--platform", p)),
        requirement,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:  # no wheel for the target: a pure-Python source release built here serves any
        built = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--quiet",
                "--no-binary",
                name,
                "--disable-pip-version-check",
                "--wheel-dir",
                str(dest),
                requirement,
            ],
            capture_output=True,
            text=True,
        )
        pure = [w for w in set(dest.glob("*.whl")) - before if parse_wheel_filename(w.name)[0] == name]
        if built.returncode or not all(
            t.abi == "none" and t.platform == "any" for w in pure for t in parse_wheel_filename(w.name)[3]
        ):
            for w in pure:
                w.unlink()
            reason = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or done.stderr.splitlines()
            raise LookupError(
                (reason[-1] if reason else f"pip download exited with {done.returncode}")
                + "; no pure-Python source release to build"
            )
    matches = [w for w in set(dest.glob("*.whl")) - before if parse_wheel_filename(w.name)[0] == name]
    if not matches:
        raise LookupError(f"pip download gave no wheel of {name}")
    return max(matches, key=lambda w: parse_wheel_filename(w.name)[1])


def resolve(
    roots: list[str],
    image: dict,
    python_version: str,
    cache: Path,
    pins: dict[str, SpecifierSet] | None = None,
    log=print,
) -> Bundle:
    """Walks the requirements from ``roots``: each is met by the image, carried (downloaded,
    then its own requirements walked), or missing. ``pins`` narrow a package's range after a
    conflict (see :func:`build`)."""
    env, packages, pins = marker_environment(python_version), image["packages"], pins or {}
    bundle = Bundle()
    queue: list[tuple[Requirement, str]] = [(Requirement(r), "regioncl") for r in roots]
    while queue:
        req, parent = queue.pop(0)
        name = canonicalize_name(req.name)
        if not applies(req, env, set()):
            continue
        bundle.needed_by.setdefault(name, set()).add(parent)
        spec = req.specifier & pins.get(name, SpecifierSet())
        if name in bundle.wheels:
            version, wheel = bundle.wheels[name]
            if not spec.contains(version, prereleases=True):
                raise Conflict(name, spec)
            queue += _requirements_of(wheel, name, set(req.extras) - bundle.extras[name], env)
            bundle.extras[name] |= set(req.extras)
            continue
        if name in bundle.missing:
            continue
        if name in packages:
            seen = packages[name]
            if seen is None or spec.contains(seen, prereleases=True):
                bundle.from_image[name] = seen
                continue
            log(f"  {name}: the image has {seen}, {parent} needs {spec}: carried")
        try:
            wheel = download(f"{name}{spec}", python_version, image["platforms"], cache)
        except LookupError as e:
            bundle.missing[name] = f"{name}{spec} (needed by {parent}): {e}"
            log(f"  {name}: cannot be had: {e}")
            continue
        version = str(parse_wheel_filename(wheel.name)[1])
        bundle.wheels[name] = (version, wheel)
        bundle.from_image.pop(name, None)
        log(f"  {name} {version} ({wheel.stat().st_size / 2**20:.2f} MiB), for {parent}")
        bundle.extras[name] = set(req.extras)
        queue += _requirements_of(wheel, name, {""} | set(req.extras), env)
    return bundle


def _requirements_of(wheel: Path, name: str, extras: set[str], env: dict[str, str]) -> list[tuple[Requirement, str]]:
    """The wheel's requirements that hold on the target for these extras ("" for the plain ones)."""
    out = []
    for line in requires_dist(wheel):
        dep = Requirement(line)
        if any(
            dep.marker is None and e == "" or dep.marker is not None and dep.marker.evaluate({**env, "extra": e})
            for e in extras
        ):
            dep.marker = None
            out.append((dep, name))
    return out


def build(
    out: Path,
    python_version: str | None = None,
    image_path: Path = IMAGE,
    roots: list[str] | None = None,
    fashion_mnist: Path | None = None,
    log=print,
) -> dict:
    """Fills ``out`` with the wheels (and ``bundle.json``, its manifest); returns the manifest."""
    image = load_image(image_path)
    python_version = python_version or ".".join(image["python"].split(".")[:2])
    roots = roots if roots is not None else project_requirements()
    pins: dict[str, SpecifierSet] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        for _ in range(10):  # each conflict narrows one package's range, then the walk starts over
            try:
                bundle = resolve(roots, image, python_version, cache, pins, log)
                break
            except Conflict as c:
                log(f"  {c.name}: needs {c.spec} too; resolving again")
                pins[c.name] = pins.get(c.name, SpecifierSet()) & c.spec
        else:
            raise RuntimeError(f"no set of versions found for {sorted(pins)}")
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for _version, wheel in bundle.wheels.values():
            shutil.copy2(wheel, out / wheel.name)
    data_files = []
    if fashion_mnist is not None:
        (out / "fashion-mnist").mkdir()
        for name in FASHION_MNIST_FILES:
            shutil.copy2(fashion_mnist / name, out / "fashion-mnist" / name)
            data_files.append(f"fashion-mnist/{name}")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    manifest = {
        "python": python_version,
        "platforms": image["platforms"],
        "image_list_read": image["read"],
        "wheels": {
            n: {"version": v, "file": w.name, "needed_by": sorted(bundle.needed_by[n])}
            for n, (v, w) in sorted(bundle.wheels.items())
        },
        "from_image": dict(sorted(bundle.from_image.items())),
        "missing": bundle.missing,
        "data": data_files,
        "bytes": size,
    }
    (out / "bundle.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def travelling_files(root: Path = ROOT) -> list[str]:
    """What the device tool sends: tracked and untracked-not-ignored files, relative to ``root``."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    return [f for f in listed if f and (root / f).is_file()]


def travelling_bytes(root: Path = ROOT) -> int:
    return sum((root / f).stat().st_size for f in travelling_files(root))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / ".bundle", help="the folder to fill (emptied first)")
    p.add_argument("--python-version", help="the target interpreter, e.g. 3.12 (default: the image's)")
    p.add_argument("--image", type=Path, default=IMAGE, help="the machine image's package list")
    p.add_argument(
        "--fashion-mnist",
        nargs="?",
        type=Path,
        const=FASHION_MNIST,
        default=None,
        metavar="DIR",
        help=f"also carry Fashion-MNIST's four IDX files (default folder: {FASHION_MNIST}, "
        "Debian's dataset-fashion-mnist)",
    )
    a = p.parse_args(argv)
    if a.fashion_mnist is not None:
        absent = [n for n in FASHION_MNIST_FILES if not (a.fashion_mnist / n).is_file()]
        if absent:
            p.error(f"{a.fashion_mnist} lacks {', '.join(absent)} (apt-get install dataset-fashion-mnist)")
    image = load_image(a.image)
    print(
        f"resolving against the image's package list of {image['read']} ({len(image['packages'])} packages), "
        f"for CPython {a.python_version or image['python']}:"
    )
    manifest = build(a.out, a.python_version, a.image, fashion_mnist=a.fashion_mnist)
    tree = travelling_bytes()
    print(
        f"{a.out}: {len(manifest['wheels'])} wheels, {manifest['bytes'] / 2**20:.1f} MiB"
        + (f" with {len(manifest['data'])} data files" if manifest["data"] else "")
        + f"; the working tree {tree / 2**20:.1f} MiB; together {(tree + manifest['bytes']) / 2**20:.1f} MiB "
        f"of the {TRAVEL_LIMIT // 2**20} MiB that may travel"
    )
    for why in manifest["missing"].values():
        print(f"missing: {why}")
    if tree + manifest["bytes"] > TRAVEL_LIMIT:
        print("regioncl: error: the working tree and the bundle are over what may travel", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
