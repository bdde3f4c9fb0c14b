"""Golden runs: every method, a fixed seed, a few steps on the sample set, compared with recorded numbers.

A refactor must change nothing: the per-step losses and the final encoder weights of each method
are recorded in ``tests/golden.json`` and every run of the suite compares against them, within a
tight tolerance (another CPU's kernels round differently). On the machine that recorded them the
weights are equal bit for bit; check that by hand before and after a refactor:

    python tests/test_golden.py --check      # exact comparison, method by method
    python tests/test_golden.py --record     # re-record (only for an intended numerical change; say why)

Every setting that shapes the run is stated here, so a change of the library's defaults does not
change these runs.

The numbers are recorded per torch and torchvision version: torchvision's image kernels differ
between releases by a rounding step and at the borders of a resize, so the same seed gives
slightly different views (the model's own arithmetic, fed the same views, gives the same losses
on torch 2.11 and 2.14.1). On a release without a record the run is checked against itself: two
runs of it must be equal bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOLDEN = Path(__file__).with_name("golden.json")
METHOD_NAMES = ["mocov2", "regioncl_m", "regioncl_m_noswap", "densecl", "regioncl_d", "simsiam", "regioncl_s"]
STEPS = 3
SETTINGS = dict(
    backbone="resnet10t",
    backbone_args={"output_stride": 8},
    data="sample",
    image_size=32,
    batch_size=8,
    epochs=1,
    max_steps=STEPS,
    lr=0.05,
    warmup_epochs=0,
    sgd_momentum=0.9,
    weight_decay=1e-4,
    queue_size=32,
    temperature=0.2,
    key_momentum=0.99,
    proj_hidden_dim=32,
    proj_dim=16,
    pred_dim=8,
    dense_weight=0.5,
    fix_pred_lr=True,
    bn_groups=2,
    region_cells=None,
    pairing="derangement",
    region_weight=None,
    channels_last=True,
    num_workers=0,
    seed=0,
    knn=False,
    log_every=1,
    checkpoint_every=100,
)


def versions() -> str:
    """The key of this interpreter's record: torch's and torchvision's release, without a build tag."""
    import torchvision

    return f"torch {torch.__version__.split('+')[0]}, torchvision {torchvision.__version__.split('+')[0]}"


def golden_run(method: str, out: Path) -> dict:
    """Train ``method`` for STEPS steps; its per-step losses and a digest of the final encoder."""
    from safetensors.torch import load_file
    from tiny_run import torch_threads

    from regioncl.train.config import make_config
    from regioncl.train.trainer import Trainer

    with torch_threads(2):  # the count the records were made with
        Trainer(make_config(overrides={**SETTINGS, "method": method, "output_dir": str(out)})).train()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = {
        str(r["step"]): {k: v for k, v in sorted(r.items()) if k.startswith("loss") or k == "z_std"}
        for r in records
        if "loss" in r
    }
    weights = load_file(str(out / "encoder.safetensors"))
    sha, norm, projection = hashlib.sha256(), 0.0, 0.0
    for name in sorted(weights):
        t = weights[name].double().flatten()
        sha.update(name.encode())
        sha.update(weights[name].contiguous().numpy().tobytes())
        norm += float((t * t).sum())
        # A fixed random projection per tensor: catches weights that moved between tensors or within one.
        r = torch.randn(
            t.numel(), generator=torch.Generator().manual_seed(len(name) * 7919 + t.numel()), dtype=torch.float64
        )
        projection += float((t * r).sum())
    return {"losses": losses, "weight_norm": norm**0.5, "weight_projection": projection, "sha256": sha.hexdigest()}


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.slow
def test_golden_run_is_unchanged(tmp_path, method):
    records = json.loads(GOLDEN.read_text())
    got = golden_run(method, tmp_path / method)
    if versions() not in records:
        # No numbers recorded for this release (torchvision's kernels change the views; record them
        # with `python tests/test_golden.py --record`): the run must still repeat itself bit for
        # bit, with a recorded release's steps and loss terms, every loss finite.
        assert golden_run(method, tmp_path / f"{method}_again") == got
        recorded = next(iter(records.values()))[method]["losses"]
        assert list(got["losses"]) == list(recorded)
        assert all(got["losses"][step].keys() == values.keys() for step, values in recorded.items())
        assert all(math.isfinite(v) for values in got["losses"].values() for v in values.values())
        return
    expected = records[versions()][method]
    assert list(got["losses"]) == list(expected["losses"])
    for step, values in expected["losses"].items():
        assert got["losses"][step].keys() == values.keys()
        for key, value in values.items():
            # abs: SimSiam's loss is a mean of cosines near ±1 that can sum to near 0, where another
            # CPU's rounding (a few 1e-7 per term) is far larger than rel × the value.
            assert got["losses"][step][key] == pytest.approx(value, rel=1e-4, abs=1e-5), (step, key)
    assert got["weight_norm"] == pytest.approx(expected["weight_norm"], rel=1e-5)
    assert got["weight_projection"] == pytest.approx(expected["weight_projection"], rel=1e-4, abs=1e-3)


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        got = {m: golden_run(m, Path(tmp) / m) for m in METHOD_NAMES}
    records = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    if "--record" in argv:
        records[versions()] = got
        GOLDEN.write_text(json.dumps(records, indent=1) + "\n")
        print(f"recorded {GOLDEN} for {versions()}")
        return
    if versions() not in records:
        raise SystemExit(f"no golden run recorded for {versions()}; record one with --record")
    expected = records[versions()]
    for m in METHOD_NAMES:
        same_losses = got[m]["losses"] == expected[m]["losses"]
        same_weights = got[m]["sha256"] == expected[m]["sha256"]
        print(
            f"{m:20s} losses {'identical' if same_losses else 'DIFFER'}, weights {'identical' if same_weights else 'DIFFER'}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
