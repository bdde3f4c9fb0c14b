"""Run under `accelerate launch --num_processes 2`: linear probes (cached features and augmented)
of a fixed encoder on a separable folder; every rank saves what it got."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regioncl.backbones import create_encoder  # noqa: E402
from regioncl.data import build_source  # noqa: E402
from regioncl.distributed import make_accelerator  # noqa: E402
from regioncl.eval.linear import ProbeConfig, linear_probe  # noqa: E402


def main(root: Path) -> None:
    acc = make_accelerator()
    torch.manual_seed(0)
    encoder = create_encoder("resnet18", output_stride=8)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    out = {"world": torch.tensor(acc.num_processes)}
    for augment in (False, True):
        cfg = ProbeConfig(
            epochs=15, lr=1.0, batch_size=8, milestones=[10], augment=augment, image_size=16, crop_pct=1.0
        )
        result = linear_probe(encoder, build_source(str(root / "train")), build_source(str(root / "val")), 2, cfg, acc)
        out.update(
            {
                f"{augment}_top1": torch.tensor(result["top1"]),
                f"{augment}_history": torch.tensor(result["history"]),
                **{f"{augment}_head.{k}": v for k, v in result["head"].items()},
            }
        )
    out["unchanged"] = torch.tensor(all(torch.equal(before[k], v) for k, v in encoder.state_dict().items()))
    torch.save(out, root / f"probe_rank{acc.process_index}.pt")
    acc.wait_for_everyone()
    acc.end_training()  # tear the group down together: a rank exiting mid-collective aborts gloo


if __name__ == "__main__":  # the DataLoader workers import this file as they start
    main(Path(sys.argv[1]))
