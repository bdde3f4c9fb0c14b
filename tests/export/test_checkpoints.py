"""Reading encoders from files a user did not make with this library: never unpickle code."""

import pathlib
import subprocess
import sys

import pytest
import torch

from regioncl.eval.features import load_eval_encoder
from regioncl.export.checkpoints import load_encoder, read_state_file

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this object would create the marker file: code run by loading a checkpoint."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def booby_trapped(tmp_path):
    """A resnet-shaped state dict in a .pth that also carries the payload."""
    marker = tmp_path / "pwned"
    path = tmp_path / "encoder.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(64, 3, 7, 7)}, "note": Payload(marker)}, path)
    return path, marker


def test_every_reader_refuses_a_pickled_object_and_runs_none_of_it(tmp_path, booby_trapped):
    path, marker = booby_trapped
    run = tmp_path / "run"  # a folder with a training config beside the weights, as an evaluation takes it
    run.mkdir()
    (run / "pytorch_model.bin").write_bytes(path.read_bytes())
    (run / "config.json").write_text('{"model": {"backbone": "resnet18"}}')
    for read, where in (
        (read_state_file, path),
        (lambda p: load_encoder(p, backbone="resnet18"), path),
        (load_eval_encoder, run),
    ):
        with pytest.raises(ValueError, match="pickled objects other than tensors .*not loaded.*safetensors"):
            read(str(where))
    assert not marker.exists()


@pytest.mark.parametrize("script", ["export.py", "convert_detectron2.py", "convert_mmdet.py"])
@pytest.mark.slow
def test_the_scripts_refuse_it_with_a_message(tmp_path, booby_trapped, script):
    path, marker = booby_trapped
    args = [str(path), str(tmp_path / "out")] + (["--backbone", "resnet18"] if script == "export.py" else [])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and "pickled objects other than tensors" in proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()
