"""A 2-process gloo DDP run (torchrun) equals single-process training on the whole batch."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ddp_train.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_process_gloo_ddp_equals_one_process():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", str(EXAMPLE),
        "--steps", "12", "--batch-size", "16", "--train-size", "256", "--dtype", "float64", "--check", "--backend", "gloo",
    ]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "DDP: 2 processes, backend gloo" in output
    assert "check: equal" in output, output
    difference = float(output.split("largest parameter difference from 1 process on whole batches: ")[1].split()[0])
    assert difference < 1e-12, output
