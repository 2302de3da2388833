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


def claims(algorithm, groups, in_channels, kernel, stride, padding, output_padding=(0, 0),
           dilation=(1, 1)):
    """What each algorithm says it implements (mirrors its can_implement), so tests force
    each one on exactly the cases it claims, and check it refuses the others. kernel, stride
    and dilation are (h, w) pairs of the underlying convolution, padding its four sides;
    output_padding is a transposed convolution's."""
    if algorithm == "depthwise":
        return groups == in_channels
    if algorithm == "grouped_planes":
        # It also refuses padded planes over 2**18 elements, far beyond every test shape here.
        return groups > 1 and tuple(stride) == (1, 1)
    if algorithm in ("winograd_2x2", "winograd_4x4"):
        return tuple(kernel) == (3, 3) and tuple(stride) == (1, 1)
    if algorithm == "direct_blocked":
        # It also refuses images whose padded phases exceed 2**22 elements.
        return groups == 1
    if algorithm == "gemm_1x1":
        return (tuple(kernel) == (1, 1) and tuple(stride) == (1, 1) and not any(padding)
                and not any(output_padding))
    return True  # im2col_gemm, direct (CPU); direct (CUDA)


def claims_call(algorithm, w_shape, kw):
    """claims() for a functional call (conv or transposed, 1-D or 2-D) with weight shape
    w_shape and keyword arguments kw: the underlying convolution has the same kernel, stride,
    dilation and padding, and w_shape[1] * groups input channels in both cases."""
    groups = kw.get("groups", 1)
    kernel = tuple(w_shape[2:])
    stride = kw.get("stride", 1)
    stride = (stride,) * len(kernel) if isinstance(stride, int) else tuple(stride)
    dilation = kw.get("dilation", 1)
    dilation = (dilation,) * len(kernel) if isinstance(dilation, int) else tuple(dilation)
    if len(kernel) == 1:
        kernel, stride, dilation = (1, *kernel), (1, *stride), (1, *dilation)
    padding = kw.get("padding", 0)
    if isinstance(padding, str):  # 'valid' is none; 'same' is none exactly when the kernel is 1x1
        padding = (0,) if padding == "valid" or kernel == (1, 1) else (1,)
    padding = (padding,) if isinstance(padding, int) else tuple(padding)
    output_padding = kw.get("output_padding", 0)
    output_padding = (output_padding,) if isinstance(output_padding, int) else tuple(output_padding)
    return claims(algorithm, groups, w_shape[1] * groups, kernel, stride, padding, output_padding, dilation)


def algorithms(device):
    return fastconv.algorithms.names(device)
