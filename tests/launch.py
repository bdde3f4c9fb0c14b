"""How the multi-process tests start `accelerate launch` on CPU processes (gloo)."""

import socket
import sys

ACCELERATE = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch() -> list[str]:
    """``accelerate launch`` with two CPU processes on a free port."""
    return [*ACCELERATE, "--main_process_port", str(free_port())]
