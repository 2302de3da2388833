"""CUDA-specific behaviour: the build's CUDA registration (checked on any machine with a CUDA
build), the unverified-kernel switch, deterministic RoI backward, a tensor past 2^31
elements, and devices other than the current one (these need a GPU)."""

import os

import pytest
import torch

import fastconv
import fastconv.functional as F
from conftest import rel_err

CUDA_BUILD = bool(fastconv.algorithms.names("cuda"))
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def test_cuda_build_registers_every_operator():
    if not CUDA_BUILD:
        if os.environ.get("FASTCONV_CUDA") == "1":
            pytest.fail("FASTCONV_CUDA=1 but the extension was built without CUDA kernels")
        pytest.skip("CPU-only build")
    for name in torch._C._dispatch_get_all_op_names():
        # fastconv::_* are the library's queries, one kernel for every device.
        if name.startswith("fastconv::") and not name.startswith("fastconv::_"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA"), name
    assert fastconv.algorithms.names("cuda")[-1] == "direct"


@needs_gpu
def test_emulated_kernels_wait_for_the_self_test():
    """Straight to the operator (fastconv.functional would run the self-test first), an
    emulated kernel on a GPU whose self-test has not passed refuses and says how to proceed."""
    if os.environ.get("FASTCONV_ALLOW_UNVERIFIED_KERNELS") == "1":
        pytest.skip("the switch is on in this process")
    if torch.ops.fastconv._selftest_result(torch.cuda.current_device()) == 1:
        pytest.skip("the self-test already passed in this process")
    x = torch.randn(1, 1, 3, 3, device="cuda")
    with pytest.raises(NotImplementedError, match="self-test"):
        torch.ops.fastconv.conv2d(x, x, None, [1, 1], [0, 0, 0, 0], [1, 1], 1)


def test_usable_says_where_convolutions_can_run():
    assert fastconv.algorithms.usable("cpu")
    with pytest.raises(ValueError, match="device"):
        fastconv.algorithms.usable("tpu")
    usable = fastconv.algorithms.usable("cuda")
    switched_on = os.environ.get("FASTCONV_ALLOW_UNVERIFIED_KERNELS") == "1"  # until the GPU check passes
    if torch.cuda.is_available() and CUDA_BUILD and not switched_on:
        # usable() runs (or reads) the self-test, which switches the emulated kernels on
        # where it passes.
        result = torch.ops.fastconv._selftest_result(torch.cuda.current_device())
        assert result in (0, 1), "usable('cuda') did not run the self-test"
        switched_on = result == 1
    expected = torch.cuda.is_available() and CUDA_BUILD and switched_on
    assert usable == expected


@needs_gpu
def test_deterministic_roi_backward_matches_atomic():
    x = torch.randn(2, 8, 30, 30, device="cuda", dtype=torch.float64, requires_grad=True)
    boxes = torch.rand(200, 2, device="cuda", dtype=torch.float64) * 20
    rois = torch.cat([torch.randint(0, 2, (200, 1), device="cuda").double(), boxes, boxes + 9], 1)
    grad = torch.randn(200, 8, 7, 7, device="cuda", dtype=torch.float64)
    (atomic,) = torch.autograd.grad(F.roi_align(x, rois, 7, 1.0, 2, True), x, grad)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        (det1,) = torch.autograd.grad(F.roi_align(x, rois, 7, 1.0, 2, True), x, grad)
        (det2,) = torch.autograd.grad(F.roi_align(x, rois, 7, 1.0, 2, True), x, grad)
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(det1, det2)
    assert rel_err(det1, atomic) <= 1e-12


@needs_gpu
def test_past_two_to_the_31_elements():
    """64-bit indexing: a half-precision depthwise conv over 2^31 + elements (4.3 GB each way)."""
    free, _ = torch.cuda.mem_get_info()
    if free < 12 * 2**30:
        pytest.skip("needs 12 GiB of free GPU memory")
    x = torch.randn(1, 2, 32768, 32772, device="cuda", dtype=torch.float16)
    assert x.numel() > 2**31
    w = torch.randn(2, 1, 3, 3, device="cuda", dtype=torch.float16)
    y = F.conv2d(x, w, padding=1, groups=2)
    # Compare the last rows, whose flat indices lie past 2^31, with torch on a crop.
    crop = x[:, :, -6:, :]
    ref = torch.nn.functional.conv2d(crop.double(), w.double(), padding=(0, 1), groups=2)
    assert rel_err(y[:, :, -5:-1, :], ref) <= 4e-3
    del y, x


@needs_gpu
def test_inputs_on_another_gpu_or_the_cpu():
    x = torch.randn(1, 2, 5, 5, device="cuda")
    with pytest.raises(ValueError, match="same device"):
        F.conv2d(x, torch.randn(2, 2, 3, 3))
    if torch.cuda.device_count() > 1:
        x1 = torch.randn(1, 2, 5, 5, device="cuda:1", dtype=torch.float64)
        w1 = torch.randn(2, 2, 3, 3, device="cuda:1", dtype=torch.float64)
        y = F.conv2d(x1, w1)  # runs on cuda:1 although cuda:0 is current
        assert y.device == x1.device
        assert rel_err(y, torch.nn.functional.conv2d(x1.cpu(), w1.cpu())) <= 1e-12


@needs_gpu
def test_tensor_core_wrappers_on_the_gpu():
    """cp.async, ldmatrix and mma.sync as csrc/cuda/common/primitives.h writes them in PTX,
    on the card: one 16x8x16 bf16 tile against a float64 product."""
    if not CUDA_BUILD:
        pytest.skip("CPU-only build")
    a = torch.randn(16, 16, device="cuda").bfloat16()
    bt = torch.randn(8, 16, device="cuda").bfloat16()
    d = torch.ops.fastconv._tensor_core_check(a, bt)
    torch.testing.assert_close(d.cpu(), a.double().matmul(bt.double().T).float().cpu(), rtol=1e-5, atol=1e-5)
