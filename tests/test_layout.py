"""The package's architecture: imports run one way, from the infrastructure down to the paper's parts.

    scripts, benchmarks → cli → study → train → eval → export → methods, data → the paper's parts

A module may import modules of its own layer or below, never above (lazy imports inside
functions included), so that the method core never depends on how it is trained or shipped.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "regioncl"
# Layer of each top-level name under regioncl; the package root (the public API) is exempt.
LAYERS = {
    **dict.fromkeys(
        [
            "rng",
            "files",
            "hubcache",
            "errors",
            "spelling",
            "processes",
            "fork_server",
            "distributed",
            "backbones",
            "swapping",
            "pooling",
            "losses",
            "queue",
            "heads",
            "region",
        ],
        0,
    ),
    "methods": 1,
    "data": 1,
    "export": 2,
    "eval": 3,
    "train": 4,
    "study": 5,
    "cli": 6,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").is_file()


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of the regioncl modules imported anywhere in ``source``, a module of ``package``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("regioncl")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("regioncl"):
                # `from regioncl.x import y` may import the module x.y
                found |= {f"{target}.{a.name}" if is_module(f"{target}.{a.name}") else target for a in node.names}
    return found


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_module_has_a_layer():
    names = {
        p.stem if p.suffix == ".py" else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
        or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert names == set(LAYERS), "give every new module of regioncl/ a layer in LAYERS"


def test_imports_run_one_way():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        if me in ("regioncl", "regioncl.__main__"):  # the public API and `python -m regioncl`: the top
            continue
        package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
        for other in imported_modules(path.read_text(), package):
            if layer(other) is not None and layer(other) > layer(me):
                wrong.append(f"{me} (layer {layer(me)}) imports {other} (layer {layer(other)})")
    assert not wrong, "\n".join(wrong)


def test_the_check_resolves_relative_lazy_and_module_imports():
    """The check itself: what a module of regioncl.methods would import, written every way."""
    source = (
        "from ..train import trainer\nfrom ..losses import info_nce\nimport regioncl.eval.knn\n"
        "def f():\n    from ..study.report import summarize_run\n    from .base import SSLMethod\n"
    )
    found = imported_modules(source, "regioncl.methods")
    assert {"regioncl.train.trainer", "regioncl.losses", "regioncl.eval.knn", "regioncl.methods.base"} <= found
    assert "regioncl.study.report" in found and max(layer(n) for n in found) == LAYERS["study"]
