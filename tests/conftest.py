"""Shared test machinery. Every test that takes `device` runs on the CPU, and on CUDA where a
GPU is present. Kernels run with their output buffers pre-filled with NaN, so an element a
kernel forgets to write cannot pass."""

import os

os.environ.setdefault("FASTCONV_FILL_OUTPUTS_WITH_NAN", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import fastconv  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _no_forced_algorithm():
    """A failing test must not leave its forced algorithm to the next one."""
    yield
    fastconv.algorithms.set_forced(None)


def rel_err(out, ref):
    """||out - ref|| / ||ref||, computed in float64 (0 when both are empty or zero)."""
    out, ref = out.double(), ref.double()
    denom = ref.norm()
    diff = (out - ref).norm()
    if denom == 0:
        return diff.item()
    return (diff / denom).item()


# Relative error allowed against a float64 reference computed from the same (rounded) inputs.
TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 4e-3,
    torch.bfloat16: 2e-2,
}


def claims(algorithm, groups, in_channels):
    """What each algorithm says it implements (mirrors its can_implement), so tests force
    each one on exactly the cases it claims, and check it refuses the others."""
    if algorithm == "depthwise":
        return groups == in_channels
    return True  # im2col_gemm, direct (CPU); direct (CUDA)


def algorithms(device):
    return fastconv.algorithms.names(device)
