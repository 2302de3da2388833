"""FASTCONV_NO_CPP_BACKTRACES=1: the switch the GPU check's raise probe uses when a C++ error
crashes the process while c10 captures its stack. Errors keep their class and message; the C++
frames are left out. In a process of its own, as the switch is process-wide."""

import os
import subprocess
import sys

import pytest

CHILD = r"""
import torch, fastconv
for call in (lambda: torch.ops.fastconv.conv2d(torch.randn(1, 3, 5, 5), torch.randn(2, 4, 3, 3), None, [1, 1],
                                               [0, 0, 0, 0], [1, 1], 1),
             lambda: torch.zeros(2).view(3)):  # one of fastconv's errors, one of torch's
    try:
        call()
    except Exception as e:
        print(type(e).__name__ + "|" + str(e).replace("\n", " "))
"""


@pytest.mark.parametrize("switch", ["0", "1"])
def test_errors_keep_their_message_without_the_stack(switch):
    env = dict(os.environ, FASTCONV_NO_CPP_BACKTRACES=switch, TORCH_SHOW_CPP_STACKTRACES="1", TORCH_DISABLE_ADDR2LINE="1")
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (ours, ours_message), (torchs, torchs_message) = (line.split("|", 1) for line in out.stdout.strip().splitlines()[-2:])
    assert ours == "ArgumentError" and "channels" in ours_message
    assert torchs == "RuntimeError" and "invalid for input of size 2" in torchs_message
    # With the switch, the C++ frames of every error are one line saying why they are missing.
    assert ("C++ stack not captured" in torchs_message) == (switch == "1")
