"""The wheel bundle's resolution against the machine image's package list, with a fake registry:
what the image meets is not carried, what it lacks or meets with the wrong version is, with its
own requirements (extras and markers of the target interpreter included), one version of each,
and what has no wheel is named, not silently dropped."""

import json
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from benchmarks import bundle as bundle_module


def fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    meta = (
        "\n".join(
            [
                "Metadata-Version: 2.1",
                f"Name: {name}",
                f"Version: {version}",
                *(f"Requires-Dist: {r}" for r in requires),
            ]
        )
        + "\n\n"
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", meta)
    return path


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """name → {version: requirements}; ``download`` picks the newest version in range."""
    index: dict[str, dict[str, list[str]]] = {}
    asked: list[str] = []

    def download(requirement, python_version, platforms, dest):
        req = Requirement(requirement)
        asked.append(requirement)
        versions = [v for v in index.get(canonicalize_name(req.name), {}) if req.specifier.contains(v)]
        if not versions:
            raise LookupError(f"No matching distribution found for {requirement}")
        best = max(versions, key=Version)
        return fake_wheel(dest, canonicalize_name(req.name), best, index[canonicalize_name(req.name)][best])

    monkeypatch.setattr(bundle_module, "download", download)
    return index, asked


def image(**packages):
    return {
        "read": "2026-11-17",
        "python": "3.12.3",
        "platforms": ["manylinux_2_28_x86_64"],
        "packages": {canonicalize_name(k): v for k, v in packages.items()},
    }


def test_the_image_is_trusted_and_what_it_lacks_is_carried_with_its_own_needs(registry, tmp_path):
    index, asked = registry
    index["datasets"] = {
        "5.2.0": [
            "dill>=0.3",
            "fsspec[http]<=2026.1",
            "pyarrow>=15",
            "colorama; sys_platform == 'win32'",
            "tomli; python_version < '3.11'",
            "pytest; extra == 'tests'",
        ]
    }
    index["dill"] = {"0.3.9": [], "0.4.1": []}
    index["colorama"] = {"0.4.6": []}
    manifest = bundle_module.build(
        tmp_path / "b",
        "3.12",
        roots=["datasets>=3.0", "torch>=2.4", "timm>=1.0.21"],
        image_path=_write(tmp_path, image(torch="2.11.0", timm=None, fsspec=None, pyarrow="21.0.0")),
        log=lambda m: None,
    )
    assert {k: v["version"] for k, v in manifest["wheels"].items()} == {"datasets": "5.2.0", "dill": "0.4.1"}
    assert manifest["from_image"] == {"fsspec": None, "pyarrow": "21.0.0", "timm": None, "torch": "2.11.0"}
    assert manifest["missing"] == {}
    assert sorted(p.name for p in (tmp_path / "b").glob("*.whl")) == [
        "datasets-5.2.0-py3-none-any.whl",
        "dill-0.4.1-py3-none-any.whl",
    ]
    assert not any(a.startswith(("colorama", "tomli", "pytest", "torch")) for a in asked)  # markers of 3.12 on Linux
    assert json.loads((tmp_path / "b" / "bundle.json").read_text()) == manifest


def test_a_version_the_image_has_outside_the_range_is_carried_in_range(registry, tmp_path):
    index, _ = registry
    index["accelerate"] = {"0.30.0": [], "1.16.0": []}
    manifest = bundle_module.build(
        tmp_path / "b",
        "3.12",
        roots=["accelerate>=1.0"],
        image_path=_write(tmp_path, image(accelerate="0.30.0")),
        log=lambda m: None,
    )
    assert manifest["wheels"]["accelerate"]["version"] == "1.16.0" and "accelerate" not in manifest["from_image"]


def test_one_version_of_each_even_when_a_later_need_narrows_the_range(registry, tmp_path):
    index, _ = registry
    index["a"] = {"1.0": ["c"]}
    index["b"] = {"1.0": ["c<2"]}
    index["c"] = {"1.5": [], "2.3": []}
    manifest = bundle_module.build(
        tmp_path / "b", "3.12", roots=["a", "b"], image_path=_write(tmp_path, image()), log=lambda m: None
    )
    assert manifest["wheels"]["c"]["version"] == "1.5"
    assert sorted(p.name for p in (tmp_path / "b").glob("c-*.whl")) == ["c-1.5-py3-none-any.whl"]
    assert manifest["wheels"]["c"]["needed_by"] == ["a", "b"]


def test_extras_asked_for_later_are_walked_and_what_has_no_wheel_is_named(registry, tmp_path):
    index, _ = registry
    index["lightly"] = {"1.6.0": ["hydra-core>=1", "fsspec"]}
    index["hydra-core"] = {"1.3.8": ["antlr4-python3-runtime==4.9.*"]}
    index["fsspec"] = {"2025.1.0": ["aiohttp; extra == 'http'"]}
    index["aiohttp"] = {"3.9": []}
    index["datasets"] = {"5.2.0": ["fsspec[http]"]}
    manifest = bundle_module.build(
        tmp_path / "b", "3.12", roots=["lightly", "datasets"], image_path=_write(tmp_path, image()), log=lambda m: None
    )
    assert set(manifest["wheels"]) == {"lightly", "hydra-core", "fsspec", "aiohttp", "datasets"}
    assert list(manifest["missing"]) == ["antlr4-python3-runtime"]
    assert "hydra-core" in manifest["missing"]["antlr4-python3-runtime"]


def test_the_machine_image_list_is_data_with_its_date_and_lacks_what_the_issue_says():
    data = bundle_module.load_image()
    assert data["read"] and data["python"].startswith("3.12")
    for lacking in ("datasets", "jsonargparse", "docstring-parser", "lightly"):
        assert lacking not in data["packages"]
    assert data["packages"]["torch"] == "2.11.0" and "timm" in data["packages"]


def _write(folder: Path, data: dict) -> Path:
    path = folder / "image.json"
    path.write_text(json.dumps(data))
    return path
