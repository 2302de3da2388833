"""Each CUDA kernel on its own, one test per kernel with its name in the test's id
("kernel-igemm_64x64"): the per-kernel evidence that bench/gpu_check.sh gathers on real
hardware, beside the self-test and compute-sanitizer, and that tools/mark_verified.py reads to
mark a kernel verified. A convolution algorithm is forced over the conv case tables (and the
implicit GEMM's alignment list) in float32, bfloat16 and float16, both layouts, forward and
gradients, against float64; a RoI kernel runs its variant against the CPU kernels.

On a GPU every case runs. In the emulation build the same tests run on the emulated GPU over a
few cases each (test_emulated_cuda.py holds the full tables there), which keeps them honest
on every CI run. The `small` tests are what gpu_check runs under each compute-sanitizer tool."""

import contextlib

import pytest
import torch

import fastconv
import fastconv.functional as F
import fastconv.testing
from conftest import TOLERANCE, claims, rel_err
from conv_cases import CONV1D_CASES, CONV2D_CASES, CONV_TRANSPOSE2D_CASES
from test_conv import make, torch_call

GPU = torch.cuda.is_available() and bool(fastconv.algorithms.names("cuda"))
EMULATED = not GPU and fastconv.testing.emulation_available()
pytestmark = pytest.mark.skipif(not (GPU or EMULATED), reason="needs a GPU, or the emulation build")

DEVICE = "cuda" if GPU else "cpu"
CONV_KERNELS = fastconv.algorithms.names("cuda")
ROI_KERNELS = list(torch.ops.fastconv._roi_kernel_names()) if GPU or EMULATED else []

CASES = [("conv2d", c) for c in CONV2D_CASES if c[0] not in ("batch_zero", "unbatched", "unbatched_depthwise")]
CASES += [("conv_transpose2d", c) for c in CONV_TRANSPOSE2D_CASES if c[0] not in ("batch_zero", "unbatched")]
CASES += [("conv1d", c) for c in CONV1D_CASES]
# The implicit GEMM's alignment list (channel runs of 8 to 80 bytes, odd tiles, groups of 8).
ALIGNMENT = [
    ("conv2d", ("c8_k8_3x3", (2, 8, 6, 7), (8, 8, 3, 3), {"padding": 1})),
    ("conv2d", ("c16_k24_1x1", (2, 16, 5, 5), (24, 16, 1, 1), {})),
    ("conv2d", ("c24_k40_5x5_s2", (1, 24, 9, 8), (40, 24, 5, 5), {"stride": 2, "padding": 2})),
    ("conv2d", ("g32_c256_k256", (1, 256, 3, 3), (256, 8, 3, 3), {"padding": 1, "groups": 32})),
    ("conv2d", ("k136_m144", (1, 8, 12, 12), (136, 8, 1, 1), {})),
    ("conv_transpose2d", ("up_3x3_s2_p1_op1", (1, 8, 4, 4), (8, 16, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1})),
]
# On the emulated GPU: a few cases that reach every kernel, so that CI stays quick.
EMULATED_CASES = {"basic", "depthwise_multiplier", "per_side_padding", "c8_k8_3x3", "up_3x3_s2_p1_op1"}


def on_device():
    return contextlib.nullcontext() if GPU else fastconv.testing.emulated_cuda()


def conv_cases(small):
    cases = CASES + ALIGNMENT
    if small or EMULATED:
        wanted = {"basic", "depthwise_multiplier", "c8_k8_3x3"} if small else EMULATED_CASES
        cases = [(k, c) for k, c in cases if c[0] in wanted]
    return cases


def check_conv_kernel(kernel, small):
    """Each case the kernel's forward direction takes, with the gradients whose directions it
    implements too (the Hopper tiles: fprop and dgrad, no wgrad)."""
    ran = 0
    for kind, (name, x_shape, w_shape, kw) in conv_cases(small):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for layout in (torch.contiguous_format, torch.channels_last):
                x, w, b, kw2 = make(kind, x_shape, w_shape, kw, dtype, "cpu", seed=len(name))
                if layout == torch.channels_last:
                    if x.dim() != 4:
                        continue
                    x, w = x.contiguous(memory_format=layout), w.contiguous(memory_format=layout)
                with on_device():
                    if not claims(kernel, kind, x, w, kw2, device="cuda"):
                        continue
                    want_input, want_weight = (claims(kernel, kind, x, w, kw2, device="cuda", passes=[q])
                                               for q in ("input", "weight"))
                xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
                br = None if b is None else b.detach().double().requires_grad_()
                ref = torch_call(kind, xr, wr, br, kw2)
                grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(ran), dtype=torch.float64)
                refs = dict(zip(("input", "weight", "bias"), torch.autograd.grad(ref, [t for t in (xr, wr, br) if t is not None], grad)))
                xi, wi = x.detach().to(DEVICE).requires_grad_(want_input), w.detach().to(DEVICE).requires_grad_(want_weight)
                bi = None if b is None else b.detach().to(DEVICE).requires_grad_(want_weight)
                leaves = {"input": xi, "weight": wi, "bias": bi}
                wanted = [k for k, t in leaves.items() if t is not None and t.requires_grad]
                with on_device(), fastconv.algorithms.force(kernel):
                    out = getattr(F, kind)(xi, wi, bi, **kw2)
                    grads = torch.autograd.grad(out, [leaves[k] for k in wanted], grad.to(DEVICE, dtype)) if wanted else ()
                tol = TOLERANCE[dtype]
                where = f"{kernel} {kind}-{name} {str(dtype)[6:]} {'channels_last' if layout == torch.channels_last else 'nchw'}"
                assert rel_err(out, ref) <= tol, f"{where}: forward"
                for what, got in zip(wanted, grads):
                    assert rel_err(got, refs[what]) <= tol * 10, f"{where}: {what} grad"
                ran += 1
    assert ran, f"{kernel} implements none of the cases"


@pytest.mark.parametrize("kernel", CONV_KERNELS, ids=lambda k: f"kernel-{k}")
def test_conv_kernel(kernel):
    check_conv_kernel(kernel, small=False)


@pytest.mark.parametrize("kernel", CONV_KERNELS, ids=lambda k: f"kernel-{k}")
def test_conv_kernel_small(kernel):
    check_conv_kernel(kernel, small=True)


def check_fused_epilogue(kernel):
    """conv2d_fused with the kernel forced: each activation, with and without the residual,
    every dtype and layout, over the kernel's conv2d cases, against the float64 sequence. The
    stages the kernel claims (fastconv.algorithms.fused_stages) run in its epilogue, the
    rest after it."""
    from test_fused_conv import ACTIVATIONS, SLOPE, reference

    ran = 0
    for kind, (name, x_shape, w_shape, kw) in conv_cases(small=False):
        if kind != "conv2d":
            continue
        for i, (dtype, layout) in enumerate([(d, l) for d in (torch.float32, torch.bfloat16, torch.float16)
                                             for l in (torch.contiguous_format, torch.channels_last)]):
            x, w, b, kw2 = make(kind, x_shape, w_shape, kw, dtype, "cpu", seed=len(name) + i)
            x, w = x.contiguous(memory_format=layout), w.contiguous(memory_format=layout)
            with on_device():
                if not claims(kernel, kind, x, w, kw2, device="cuda"):
                    continue
            activation = ACTIVATIONS[(ran + i) % len(ACTIVATIONS)]
            shape = reference(x, w, b, None, kw2, "none").shape
            residual = torch.randn(shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64).to(dtype)
            residual = residual if i % 2 == 0 else None
            ref = reference(x, w, b, residual, kw2, activation)
            move = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
            with on_device(), fastconv.algorithms.force(kernel), torch.no_grad():
                out = F.conv2d_fused(move(x), move(w), move(b), move(residual), activation=activation,
                                     negative_slope=SLOPE, **kw2)
            where = f"{kernel} {name} {str(dtype)[6:]} {layout} {activation} residual={residual is not None}"
            assert rel_err(out, ref) <= TOLERANCE[dtype], where
            ran += 1
    assert ran, f"{kernel} implements none of the cases"


@pytest.mark.parametrize("kernel", CONV_KERNELS, ids=lambda k: f"kernel-{k}")
def test_conv_kernel_fused_epilogue(kernel):
    check_fused_epilogue(kernel)


FEATURES = (2, 6, 12, 14)
ROIS = torch.tensor([[0, 1.0, 1.0, 6.0, 7.0], [1, 0.0, 2.0, 11.0, 9.5], [0, 3.2, 3.2, 3.2, 3.2],
                     [1, 5.0, 4.0, 2.0, 1.0], [0, -40.0, -30.0, 500.0, 400.0], [1, 2.5, 0.5, 13.5, 11.0]])
LEVELS = torch.tensor([0, 1, 1, 0, 1, 0])


def roi_call(kernel):
    """(forward, differentiate?, deterministic?) exercising one RoI kernel."""
    ops = torch.ops.fastconv
    coarse = torch.randn(2, 6, 6, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    align = lambda f, r: ops.roi_align(f, r, 0.5, 3, 4, 2, True)  # noqa: E731
    calls = {
        "roi_align": (align, False),
        "roi_align_nhwc": (lambda f, r: align(f.contiguous(memory_format=torch.channels_last), r), False),
        "roi_align_multilevel": (lambda f, r: ops.roi_align_multilevel(
            [f, coarse.to(f.device, f.dtype)], r, LEVELS.to(f.device), [0.5, 0.25], 3, 4, 2, True), False),
        "roi_pool": (lambda f, r: ops.roi_pool(f, r, 0.5, 3, 3)[0], False),
    }
    if kernel in calls:
        return calls[kernel][0], False, False
    deterministic = kernel.endswith("_deterministic")
    forward = align if kernel.startswith("roi_align") else calls["roi_pool"][0]
    return forward, True, deterministic


def check_roi_kernel(kernel, dtypes):
    forward, backward, deterministic = roi_call(kernel)
    before = torch.are_deterministic_algorithms_enabled()
    for dtype in dtypes:
        feat = torch.randn(FEATURES, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
        rois = ROIS.to(dtype)
        ref_in = feat.clone().requires_grad_()
        ref = forward(ref_in, rois)  # the CPU kernels (verified)
        grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(dtype)
        ref_grad = torch.autograd.grad(ref, ref_in, grad)[0]
        x = feat.to(DEVICE).requires_grad_()
        torch.use_deterministic_algorithms(deterministic)
        try:
            with on_device():
                out = forward(x, rois.to(DEVICE))
                got_grad = torch.autograd.grad(out, x, grad.to(DEVICE))[0] if backward else None
        finally:
            torch.use_deterministic_algorithms(before)
        tol = max(TOLERANCE[dtype], 1e-9)
        assert rel_err(out, ref) <= tol, f"{kernel} {dtype}: forward"
        if backward:
            assert rel_err(got_grad, ref_grad) <= tol, f"{kernel} {dtype}: backward"


@pytest.mark.parametrize("kernel", ROI_KERNELS, ids=lambda k: f"kernel-{k}")
def test_roi_kernel(kernel):
    check_roi_kernel(kernel, [torch.float32, torch.float64, torch.float16])


@pytest.mark.parametrize("kernel", ROI_KERNELS, ids=lambda k: f"kernel-{k}")
def test_roi_kernel_small(kernel):
    check_roi_kernel(kernel, [torch.float32])
