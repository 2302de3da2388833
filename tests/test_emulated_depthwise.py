"""The CUDA depthwise algorithm ("depthwise", csrc/cuda/depthwise/) under the emulation layer
with every checker on: forward, input, weight and bias gradients against PyTorch in float64
over filter sizes 3, 5, 7 (compile-time) and a generic 4x2, strides, dilation, asymmetric
padding, a channel multiplier and odd sizes, in both layouts and every dtype; and the same
bits under other thread schedules. Needs the emulation build (FASTCONV_SIMT=1)."""

import pytest
import torch

import fastconv
import fastconv.functional as F
import fastconv.testing
from conftest import TOLERANCE, rel_err

pytestmark = pytest.mark.skipif(
    not fastconv.testing.emulation_available(),
    reason="needs the emulation build: FASTCONV_SIMT=1 pip install --no-build-isolation .",
)

# name: (N, C, H, W), multiplier, (R, S), stride, padding (top, bottom, left, right), dilation
CASES = {
    "k3": ((2, 8, 10, 10), 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    "k3-stride2-odd": ((2, 8, 7, 9), 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    "k5-mult2": ((2, 4, 9, 9), 2, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
    "k7-stride2": ((1, 4, 12, 11), 1, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1)),
    "k4x2-asym": ((2, 4, 9, 8), 1, (4, 2), (1, 2), (2, 1, 0, 1), (1, 1)),
    "k3-dil2": ((2, 8, 11, 10), 1, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),
    "k3-dil2-stride2-mult2-asym": ((2, 4, 12, 9), 2, (3, 3), (2, 1), (0, 1, 2, 1), (2, 2)),
    # A window of 47 x 47 for one output: NCHW tiles shrink (float32, float16), and float64's
    # does not fit the staged buffer at all, so the algorithm takes nhwc operands instead.
    "k3-dil23": ((1, 2, 5, 5), 1, (3, 3), (1, 1), (23, 23, 23, 23), (23, 23)),
}
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def make(case, dtype, layout, seed=0):
    (n, c, h, w), mult, (r, s), stride, padding, dilation = CASES[case]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to(dtype)
    wt = torch.randn(c * mult, 1, r, s, generator=g, dtype=torch.float64).to(dtype)
    b = torch.randn(c * mult, generator=g, dtype=torch.float64).to(dtype)
    kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": c}
    return x.contiguous(memory_format=layout), wt.contiguous(memory_format=layout), b, kw


def reference(x, w, b, kw):
    top, bottom, left, right = kw["padding"]
    xp = torch.nn.functional.pad(x, (left, right, top, bottom))
    return torch.nn.functional.conv2d(xp, w, b, kw["stride"], 0, kw["dilation"], kw["groups"])


def test_depthwise_is_listed_before_direct():
    """Before every algorithm that also claims depthwise problems in float32: the FFMA
    implicit GEMM (any channel count) and the direct kernel."""
    names = fastconv.algorithms.names("cuda")
    assert names.index("depthwise") < names.index("igemm_ffma_64x64") < names.index("direct")


@pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
def test_claims_depthwise_only(layout):
    x, w, _, kw = make("k3", torch.float32, LAYOUTS[layout])
    with fastconv.testing.emulated_cuda():
        for direction in ("fprop", "dgrad", "wgrad"):
            assert fastconv.algorithms.can_implement("depthwise", direction, x, w, kw["stride"],
                                                     kw["padding"], kw["dilation"], kw["groups"],
                                                     device="cuda")
            dense = torch.randn(8, 8, 3, 3)
            assert not fastconv.algorithms.can_implement("depthwise", direction, x, dense,
                                                         padding=(1, 1, 1, 1), device="cuda")


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
def test_forward_and_gradients(case, layout, dtype):
    x, w, b, kw = make(case, dtype, LAYOUTS[layout])
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
    ref = reference(xr, wr, br, kw)
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads_ref = torch.autograd.grad(ref, (xr, wr, br), grad)

    xi, wi, bi = (t.detach().requires_grad_() for t in (x, w, b))
    with fastconv.testing.emulated_cuda(), fastconv.algorithms.force("depthwise"):
        out = F.conv2d(xi, wi, bi, **kw)
        grads = torch.autograd.grad(out, (xi, wi, bi), grad.to(dtype))
    assert out.shape == ref.shape and out.dtype == dtype
    assert out.is_contiguous(memory_format=LAYOUTS[layout])
    assert rel_err(out, ref) <= TOLERANCE[dtype], "forward"
    for got, want, what in zip(grads, grads_ref, ["input", "weight", "bias"]):
        assert got.dtype == dtype
        assert rel_err(got, want) <= TOLERANCE[dtype] * 10, f"{what} grad"


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_transposed_forward_is_dgrad(layout):
    """conv_transpose2d's forward runs the depthwise dgrad kernel, bias fused: C_out/groups
    == 1 is the depthwise convolution's C/groups, C_in/groups its channel multiplier (2)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 5, 6, generator=g, dtype=torch.float64).contiguous(memory_format=LAYOUTS[layout])
    w = torch.randn(8, 1, 3, 3, generator=g, dtype=torch.float64)  # [C_in, C_out/groups, R, S]
    b = torch.randn(4, generator=g, dtype=torch.float64)
    ref = torch.nn.functional.conv_transpose2d(x, w, b, stride=2, padding=1, groups=4)
    with fastconv.testing.emulated_cuda(), fastconv.algorithms.force("depthwise"):
        out = F.conv_transpose2d(x, w, b, stride=2, padding=1, groups=4)
    assert rel_err(out, ref) <= TOLERANCE[torch.float64]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_gradients_are_the_same_bits_under_other_schedules(layout):
    """dgrad gathers and wgrad sums in a fixed tree: no order of a block's threads, and no
    spreading of blocks over OS threads, changes a bit."""
    x, w, b, kw = make("k3-dil2-stride2-mult2-asym", torch.float32, LAYOUTS[layout], seed=5)
    with torch.no_grad():
        shape = reference(x.double(), w.double(), b.double(), kw).shape
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(2))

    def run(**settings):
        xi, wi, bi = (t.detach().requires_grad_() for t in (x, w, b))
        with fastconv.testing.emulated_cuda(**settings), fastconv.algorithms.force("depthwise"):
            y = F.conv2d(xi, wi, bi, **kw)
            return (y.detach(), *torch.autograd.grad(y, (xi, wi, bi), grad))

    for got, want in zip(run(schedule="shuffle", seed=1, threads=2), run()):
        assert torch.equal(got, want)


def test_chosen_for_depthwise_problems():
    """Without forcing, a depthwise problem takes this algorithm, not the direct kernel."""
    x, w, b, kw = make("k3", torch.float32, torch.contiguous_format)
    with fastconv.testing.emulated_cuda(metrics=True):
        F.conv2d(x, w, b, **kw)
        launches = fastconv.testing.emulated_launches()
    names = [launch["kernel"] for launch in launches]
    assert names and all(name.startswith("depthwise::") for name in names), names
