"""The `regioncl` command: subcommands, errors a person reads, and the scripts as shims over it."""

import subprocess
import sys
from pathlib import Path

import pytest

from regioncl.cli import main, run

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for name in ("pretrain", "export", "push", "knn", "probe", "finetune", "convert", "embed", "plot", "benchmark"):
        assert f"  {name} " in out
    with pytest.raises(SystemExit) as done:
        main(["no_such_command"])
    assert done.value.code == 2 and "unknown command 'no_such_command'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,says",
    [
        (["--optim.lrr", "0.1"], "optim.lrr"),  # a bad option
        (["--optim.lr", "fast"], "optim.lr"),  # a value of the wrong type
        (
            ["--data.image_size", "20", "--optim.max_steps", "1"],
            "image size 20 px is not a multiple of the output stride 8",
        ),
        (["--data.source", "/no/such/images", "--optim.max_steps", "1"], "/no/such/images"),  # a missing dataset
        (["--run.resume", "latest", "--run.output_dir", "{tmp}/empty"], "no complete checkpoint"),  # nothing to resume
    ],
)
def test_a_user_error_is_one_line_with_status_2(tmp_path, capsys, args, says):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert run("pretrain", args + ["--knn.enabled", "false"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("regioncl: error: ")]
    assert len(errors) == 1 and says in errors[0] and "Traceback" not in err


@pytest.mark.slow
def test_the_command_line_and_debug_from_a_fresh_process(tmp_path):
    """`python -m regioncl` and the script shim give the same one line; --debug shows the traceback."""
    for command in (
        [sys.executable, "-m", "regioncl", "pretrain"],
        [sys.executable, str(ROOT / "scripts" / "pretrain.py")],
    ):
        proc = subprocess.run(
            [*command, "--data.image_size", "20"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
        lines = [line for line in proc.stderr.splitlines() if line.strip() and " INFO " not in line]
        assert proc.returncode == 2 and lines == [lines[0]] and lines[0].startswith("regioncl: error: image size 20 px")
    proc = subprocess.run(
        [sys.executable, "-m", "regioncl", "pretrain", "--data.image_size", "20", "--debug"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "UserError" in proc.stderr


def test_an_unexpected_exception_keeps_its_traceback(monkeypatch):
    import regioncl.cli.knn as knn

    def broken(argv, prog=None):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(knn, "main", broken)
    with pytest.raises(ZeroDivisionError):
        run("knn", ["x"])


@pytest.mark.slow
def test_accelerate_launch_runs_the_module(tmp_path):
    """`accelerate launch -m regioncl pretrain`: the form docs/cluster.md gives for several processes."""
    from launch import ACCELERATE, free_port

    launch = [a for a in ACCELERATE if a != "--multi_gpu"]
    launch[launch.index("--num_processes") + 1] = "1"
    proc = subprocess.run(
        [
            *launch,
            "--main_process_port",
            str(free_port()),
            "-m",
            "regioncl",
            "pretrain",
            "--optim.max_steps",
            "2",
            "--knn.enabled",
            "false",
            "--data.num_workers",
            "0",
            "--optim.batch_size",
            "8",
            "--method.queue_size",
            "32",
            "--data.image_size",
            "16",
            "--run.output_dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "encoder.safetensors").is_file()
