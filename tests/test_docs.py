"""The documentation cannot rot: its links resolve, its commands parse, its reference is current.

Fast and offline: nothing here trains, downloads or reads an image. A command is checked by the
parser the `regioncl` command itself uses, stopped right after it has parsed (and, for
`pretrain`, validated) the arguments.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# README and BENCHMARKS first; the rest must be linked from the README
DOCS = [
    ROOT / "README.md",
    ROOT / "BENCHMARKS.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "CONTRIBUTING.md",
    ROOT / "CHANGELOG.md",
]
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def unfenced(text: str) -> list[str]:
    """The lines of ``text`` outside its fenced code blocks."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return kept


def prose(text: str) -> str:
    """``text`` without its code, fenced or inline, where a link is not a link."""
    return "\n".join(re.sub(r"`[^`]*`", "", line) for line in unfenced(text))


def code_blocks(text: str, language: str = "bash") -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lowercased, punctuation other than ``-``
    dropped (``×``, ``,``, ``'``, ``–`` alike), spaces turned into ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text, not its target
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in ``path``, a repeated one numbered ``-1``, ``-2``... as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for line in unfenced(path.read_text()):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = github_slug(match.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def test_the_slug_rule_is_githubs():
    assert (
        github_slug("Fashion-MNIST at the paper's 7×7 feature map: the M pair")
        == "fashion-mnist-at-the-papers-77-feature-map-the-m-pair"
    )
    assert (
        github_slug("Fashion-MNIST on 5,000 images for 15 epochs: the M pair with little data")
        == "fashion-mnist-on-5000-images-for-15-epochs-the-m-pair-with-little-data"
    )
    assert github_slug("`--compile`") == "--compile"
    assert github_slug("regioncl against lightly, and the FLOP floor") == "regioncl-against-lightly-and-the-flop-floor"
    assert github_slug("Kills and signals (exit status 75)") == "kills-and-signals-exit-status-75"


def relative_links(path: Path) -> list[str]:
    return [
        t for t in LINK.findall(prose(path.read_text())) if not re.match(r"^[a-z][a-z0-9+.-]*:", t, flags=re.I)
    ]  # http:, https:, mailto:


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    broken = []
    for target in relative_links(doc):
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading of {dest.name} has the anchor #{anchor}")
    assert not broken, "\n".join(broken)


def test_the_docs_pages_are_linked_from_the_readme():
    """A page nobody links to is a page nobody reads."""
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(ROOT / "README.md")}
    assert not [p.name for p in DOCS[2:] if p.resolve() not in linked]


# ---------------------------------------------------------------------------- commands
class Parsed(BaseException):
    """Raised right after a command's arguments are parsed: nothing after that runs. A
    BaseException, so that the commands' own ``except Exception`` never turns it into an error."""


def commands(path: Path) -> list[tuple[str, list[str]]]:
    """``(subcommand, arguments)`` of every `regioncl` command in ``path``'s bash blocks: `regioncl SUB`,
    `python -m regioncl SUB`, `accelerate launch ... -m regioncl SUB` and `scripts/SUB.py`, at any depth
    of quoting (`srun bash -c '...'`). Lines whose arguments hold a `...` placeholder are left out."""
    from regioncl.cli import COMMANDS

    found = []
    for block in code_blocks(path.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            # A command line passed whole to a shell (`srun bash -c '...'`) is read as its words.
            tokens = [w for i, t in enumerate(tokens) for w in (shlex.split(t) if i and tokens[i - 1] == "-c" else [t])]
            for i, token in enumerate(tokens):
                script = re.fullmatch(r"(?:.*/)?scripts/(\w+)\.py", token)
                if token == "regioncl" and (i == 0 or tokens[i - 1] == "-m") and i + 1 < len(tokens):
                    sub, args = tokens[i + 1], tokens[i + 2 :]
                elif script and script.group(1) in COMMANDS:
                    sub, args = script.group(1), tokens[i + 1 :]
                else:
                    continue
                if sub in COMMANDS and "..." not in args:
                    found.append((sub, args))
                break
    return found


def refusal(sub: str, args: list[str], monkeypatch) -> str | None:
    """Run ``regioncl SUB ARGS`` up to the end of its argument parsing: None when accepted, else
    what went wrong."""
    import regioncl.cli as cli
    from regioncl.cli import common, evaluation
    from regioncl.train import config

    def stop_after(parse):
        def parse_then_stop(*a, **k):
            raise Parsed(parse(*a, **k))

        return parse_then_stop

    def evaluation_parser(*a, **k):
        p = original(*a, **k)
        p.parse_args = stop_after(p.parse_args)
        return p

    original = evaluation.evaluation_parser
    monkeypatch.setattr(evaluation, "evaluation_parser", evaluation_parser)  # probe, finetune
    monkeypatch.setattr(common.ArgumentParser, "parse_args", stop_after(common.ArgumentParser.parse_args))
    monkeypatch.setattr(config, "_from_namespace", stop_after(config._from_namespace))  # pretrain, validated
    try:
        status = cli.run(sub, list(args))
    except Parsed:
        return None
    except SystemExit as e:  # --help
        return None if e.code in (0, None) else f"exit status {e.code}"
    finally:
        monkeypatch.undo()
    return f"exit status {status}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_in_the_docs_parses(doc, monkeypatch, capsys):
    refused = []
    for sub, args in commands(doc):
        why = refusal(sub, args, monkeypatch)
        if why:
            refused.append(f"regioncl {sub} {shlex.join(args)}: {why}\n{capsys.readouterr().err}")
    assert not refused, "\n".join(refused)


def test_the_readme_quick_start_is_the_walk_through_the_tests_run():
    """The README's own-images lines are commands of the walk-through that tests/test_user_paths.py
    runs from docs/own-images.md, word for word; and they are there."""

    def block_after(path: Path, marker: str) -> list[list[str]]:
        block = code_blocks(path.read_text().split(marker, 1)[1])[0]
        return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]

    walk = block_after(ROOT / "docs" / "own-images.md", "<!-- own-images walk-through")
    quick = block_after(ROOT / "README.md", "<!-- own-images quick start")
    assert len(quick) >= 3 and all(command in walk for command in quick), quick


# ---------------------------------------------------------------------------- generated reference
def test_the_configuration_reference_is_current():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "scripts" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs" / "configuration.md").read_text() == module.render(), (
        "docs/configuration.md is stale: run python scripts/config_reference.py"
    )
