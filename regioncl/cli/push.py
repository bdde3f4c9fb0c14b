"""Publish a pretrained encoder to the Hugging Face Hub as a plain timm model, with its card.

    regioncl push runs/regioncl_m_r50 --zoo regioncl_m_r50 --dry-run
    regioncl push runs/mine --repo-id me/regioncl_m_r18 --method regioncl_m --private

The token comes from `hf auth login` or HF_TOKEN; it is never written to disk, logs or the card.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..export.hub import load_zoo, prepare_release, push
from .common import parser


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = parser(__doc__, prog)
    p.add_argument("checkpoint", help="a run folder, a checkpoint folder, or a weights file")
    p.add_argument("--zoo", help="publish this entry of the model zoo (the shipped hub/zoo.yaml, or --zoo-file)")
    p.add_argument("--zoo-file", help="a zoo registry of your own (the layout of hub/zoo.yaml)")
    p.add_argument("--repo-id", help="ORG/NAME (default: the zoo entry's)")
    p.add_argument("--method", help="without --zoo: the method name for the card")
    p.add_argument("--backbone", help="without --zoo: default is the training config's")
    p.add_argument("--metrics", type=json.loads, help="JSON of measured metrics for the card")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", help="branch to push to (created if missing)")
    p.add_argument("--out", help="folder to write the release into (default: a temporary folder)")
    p.add_argument("--dry-run", action="store_true", help="write the folder and list what would be uploaded")
    a = p.parse_args(argv)

    if a.zoo:
        zoo = load_zoo(a.zoo_file)
        if a.zoo not in zoo:
            p.error(f"no zoo entry {a.zoo!r}; entries: {sorted(zoo)}")
        entry = dict(zoo[a.zoo])
    else:
        if not (a.repo_id and a.method):
            p.error("without --zoo, give --repo-id and --method")
        entry = {"method": a.method}
    entry.update({k: v for k, v in (("repo_id", a.repo_id), ("backbone", a.backbone), ("metrics", a.metrics)) if v})
    if "backbone" not in entry:
        from ..export.checkpoints import find_checkpoint_file
        from ..files import config_value

        entry["backbone"] = config_value(find_checkpoint_file(a.checkpoint)[1], "model.backbone")
    out = Path(a.out or tempfile.mkdtemp(prefix="regioncl-release-"))
    folder = prepare_release(a.checkpoint, out, entry)
    files = sorted(folder.iterdir())
    target = f"{entry['repo_id']}" + (f"@{a.revision}" if a.revision else "") + (" (private)" if a.private else "")
    print(f"release folder {folder} → {target}")
    for f in files:
        print(f"  {f.name:20s} {f.stat().st_size:>12,d} bytes")
    if a.dry_run:
        print("dry run: nothing uploaded")
        return
    print(push(folder, entry["repo_id"], private=a.private, revision=a.revision))
