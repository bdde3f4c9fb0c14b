"""Publish a pretrained encoder to the Hugging Face Hub as a plain timm model, with its card.

    regioncl push runs/mine --repo-id me/regioncl_m_r18 --dry-run       # the release, listed; nothing uploaded
    regioncl push runs/mine --repo-id me/regioncl_m_r18 --private --metrics '{"knn_top1": 81.3}'
    regioncl knn runs/mine ... > evals.jsonl; regioncl probe runs/mine ... >> evals.jsonl
    regioncl push runs/mine --repo-id me/regioncl_m_r18 --metrics evals.jsonl   # their numbers on the card
    regioncl push runs/regioncl_m_r50 --zoo regioncl_m_r50              # an entry of the model zoo

The card says what the run's own record says: its method, its data (a Hub dataset by its id; a
local folder as such, never its path), the steps and epochs trained, its settings and input size,
the weights it started from. A zoo entry the run contradicts (method, backbone, epochs) is refused.
The token comes from `hf auth login` or HF_TOKEN; it is never written to disk, logs or the card.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .common import parser


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = parser(__doc__, prog)
    p.add_argument("checkpoint", help="a run folder, a checkpoint folder, or a weights file")
    p.add_argument("--zoo", help="publish this entry of the model zoo (the shipped hub/zoo.yaml, or --zoo-file)")
    p.add_argument("--zoo-file", help="a zoo registry of your own (the layout of hub/zoo.yaml)")
    p.add_argument("--repo-id", help="ORG/NAME (default: the zoo entry's)")
    p.add_argument("--method", help="without --zoo: the method (default: the run's; another one is refused)")
    p.add_argument("--backbone", help="without --zoo: default is the training config's")
    p.add_argument(
        "--metrics",
        help="measured metrics for the card: a JSON object of numbers, or a file of the JSON lines that "
        "regioncl knn, probe and finetune print (their top-1 and top-5 enter the card in percent)",
    )
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", help="branch to push to (created if missing)")
    p.add_argument("--out", help="a new folder to keep the release in (default: a temporary one, removed after)")
    p.add_argument("--dry-run", action="store_true", help="write the release and list what would be uploaded")
    a = p.parse_args(argv)
    from ..export.hub import card_metrics, dataset_name, load_zoo, prepare_release, push

    metrics, scored_on = card_metrics(_read_metrics(a.metrics)) if a.metrics else (None, None)

    if a.zoo:
        zoo = load_zoo(a.zoo_file)
        if a.zoo not in zoo:
            p.error(f"no zoo entry {a.zoo!r}; entries: {sorted(zoo)}")
        entry = dict(zoo[a.zoo])
    else:
        if not a.repo_id:
            p.error("without --zoo, give --repo-id ORG/NAME")
        entry = {"method": a.method}
    entry.update({k: v for k, v in (("repo_id", a.repo_id), ("backbone", a.backbone), ("metrics", metrics)) if v})
    if scored_on:  # the card names the data the evaluations scored on, not the training data
        entry["eval_dataset"] = dataset_name(scored_on)[1] or "custom"
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="regioncl-release-"))
    try:
        folder = prepare_release(a.checkpoint, out, entry)
        target = f"{entry['repo_id']}" + (f"@{a.revision}" if a.revision else "") + (" (private)" if a.private else "")
        print(f"release {folder if a.out else '(a temporary folder; --out keeps it)'} → {target}")
        for f in sorted(folder.iterdir()):
            print(f"  {f.name:20s} {f.stat().st_size:>12,d} bytes")
        if a.dry_run:
            print("dry run: nothing uploaded")
            return
        print(push(folder, entry["repo_id"], private=a.private, revision=a.revision))
    finally:
        if not a.out:
            shutil.rmtree(out, ignore_errors=True)


def _read_metrics(value: str) -> list:
    """The JSON objects of ``--metrics``: the value itself, or what the file it names holds (one
    JSON document, or JSON lines as the evaluation commands print them)."""
    from ..errors import UserError, UserFileNotFoundError

    if value.lstrip().startswith("{"):
        text, where = value, "value"
    elif Path(value).is_file():
        text, where = Path(value).read_text(encoding="utf-8-sig"), value
    else:
        raise UserFileNotFoundError(f"--metrics {value}: no such file (or give a JSON object)")
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        pass
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise UserError(f"--metrics {where}: not JSON ({e}); give a JSON object or a file of JSON lines") from None
