"""conv1d, conv2d, conv_transpose1d and conv_transpose2d against torch.nn.functional in
float64, on every algorithm that claims each case, in every dtype, layout and direction."""

import pytest
import torch
import torch.nn.functional as TF

import fastconv
import fastconv.functional as F
from conftest import TOLERANCE, algorithms, claims, rel_err
from conv_cases import (
    CONV1D_CASES,
    CONV2D_CASES,
    CONV_TRANSPOSE1D_CASES,
    CONV_TRANSPOSE2D_CASES,
)

KINDS = {
    "conv1d": CONV1D_CASES,
    "conv2d": CONV2D_CASES,
    "conv_transpose1d": CONV_TRANSPOSE1D_CASES,
    "conv_transpose2d": CONV_TRANSPOSE2D_CASES,
}
ALL_CASES = [(kind, case) for kind, cases in KINDS.items() for case in cases]
ALL_IDS = [f"{kind}-{case[0]}" for kind, case in ALL_CASES]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def is_transposed(kind):
    return kind.startswith("conv_transpose")


def make(kind, x_shape, w_shape, kw, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    kw = dict(kw)
    has_bias = kw.pop("bias", True)
    groups = kw.get("groups", 1)
    out_channels = w_shape[1] * groups if is_transposed(kind) else w_shape[0]
    x = torch.randn(x_shape, generator=gen, dtype=torch.float64).to(dtype)
    w = torch.randn(w_shape, generator=gen, dtype=torch.float64).to(dtype)
    b = torch.randn(out_channels, generator=gen, dtype=torch.float64).to(dtype) if has_bias else None
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    return to(x), to(w), to(b), kw


def reference(kind, x, w, b, kw):
    """torch.nn.functional in float64 on the CPU, with per-side padding done by hand."""
    x, w = x.detach().cpu().double(), w.detach().cpu().double()
    b = None if b is None else b.detach().cpu().double()
    return torch_call(kind, x, w, b, kw)


def torch_call(kind, x, w, b, kw):
    kw = dict(kw)
    pad = kw.get("padding", 0)
    per_side = isinstance(pad, tuple) and len(pad) == 2 * (2 if kind.endswith("2d") else 1)
    if not per_side:
        return getattr(TF, kind)(x, w, b, **kw)
    kw["padding"] = 0
    if not is_transposed(kind):
        # torch pads as (left, right, top, bottom); fastconv's per-side order is (top, bottom, left, right)
        order = (pad[2], pad[3], pad[0], pad[1]) if len(pad) == 4 else pad
        return getattr(TF, kind)(TF.pad(x, order), w, b, **kw)
    y = getattr(TF, kind)(x, w, b, **kw)
    if len(pad) == 4:
        return y[..., pad[0] : y.shape[-2] - pad[1], pad[2] : y.shape[-1] - pad[3]]
    return y[..., pad[0] : y.shape[-1] - pad[1]]


def algorithm_params(kind, x, w, kw, device, grads=False):
    """None (the automatic choice), then every algorithm the library says implements the call."""
    return [a for a in [None] + algorithms(device) if a is None or claims(a, kind, x, w, kw, grads)]


@pytest.mark.parametrize("kind,case", ALL_CASES, ids=ALL_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
def test_forward_matches_torch(kind, case, dtype, device):
    name, x_shape, w_shape, kw = case
    x, w, b, kw = make(kind, x_shape, w_shape, kw, dtype, device)
    ref = reference(kind, x, w, b, kw)
    for algorithm in algorithm_params(kind, x, w, kw, device):
        with fastconv.algorithms.force(algorithm):
            out = getattr(F, kind)(x, w, b, **kw)
        assert out.shape == ref.shape
        assert out.dtype == dtype and out.device.type == device
        assert rel_err(out, ref) <= TOLERANCE[dtype], f"algorithm {algorithm}"


@pytest.mark.parametrize("kind,case", ALL_CASES, ids=ALL_IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_gradients_match_torch(kind, case, dtype, device):
    name, x_shape, w_shape, kw = case
    x, w, b, kw = make(kind, x_shape, w_shape, kw, dtype, device)
    xr, wr = x.detach().cpu().double().requires_grad_(), w.detach().cpu().double().requires_grad_()
    br = None if b is None else b.detach().cpu().double().requires_grad_()
    ref = torch_call(kind, xr, wr, br, kw)
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    leaves_ref = [t for t in (xr, wr, br) if t is not None]
    grads_ref = torch.autograd.grad(ref, leaves_ref, grad, allow_unused=True)
    for algorithm in algorithm_params(kind, x, w, kw, device, grads=True):
        leaves = [t.detach().requires_grad_() for t in (x, w, b) if t is not None]
        xi, wi = leaves[0], leaves[1]
        bi = leaves[2] if b is not None else None
        with fastconv.algorithms.force(algorithm):
            out = getattr(F, kind)(xi, wi, bi, **kw)
            grads = torch.autograd.grad(out, leaves, grad.to(device, dtype), allow_unused=True)
        for got, want, what in zip(grads, grads_ref, ["input", "weight", "bias"]):
            if want is None:
                assert got is None or got.abs().max() == 0
                continue
            assert got.dtype == dtype
            assert rel_err(got, want) <= TOLERANCE[dtype] * 10, f"{what} grad, algorithm {algorithm}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("kind", ["conv2d", "conv_transpose2d"])
def test_half_gradients(kind, dtype, device):
    """Half types accumulate in float: gradients stay within rounding of the output."""
    case = {"conv2d": CONV2D_CASES[3], "conv_transpose2d": CONV_TRANSPOSE2D_CASES[1]}[kind]
    name, x_shape, w_shape, kw = case
    x, w, b, kw = make(kind, x_shape, w_shape, kw, dtype, device)
    xr, wr, br = (t.detach().cpu().double().requires_grad_() for t in (x, w, b))
    ref = torch_call(kind, xr, wr, br, kw)
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    want = torch.autograd.grad(ref, (xr, wr, br), grad.double())
    for algorithm in algorithm_params(kind, x, w, kw, device, grads=True):
        leaves = [t.detach().requires_grad_() for t in (x, w, b)]
        with fastconv.algorithms.force(algorithm):
            got = torch.autograd.grad(getattr(F, kind)(*leaves, **kw), leaves, grad.to(device))
        for g, r in zip(got, want):
            assert g.dtype == dtype
            assert rel_err(g, r) <= TOLERANCE[dtype] * 2


# Every kernel with a channels-last path of its own (depthwise with multiplier 1, strided
# and dilated; pointwise; Winograd, grouped and over several channel runs) besides the
# general shapes.
LAYOUT_CASE_NAMES = ("basic", "tuple_stride_dilation", "asymmetric_padding", "depthwise", "depthwise_multiplier",
                     "depthwise_strided", "depthwise_dilated", "single_channel", "pointwise", "pointwise_grouped_dilated",
                     "groups4", "tile_rows_and_runs", "wide_channels")
LAYOUT_CASES = [c for c in CONV2D_CASES if c[0] in LAYOUT_CASE_NAMES]


@pytest.mark.parametrize("case", LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
@pytest.mark.parametrize("x_cl,w_cl", [(True, False), (False, True), (True, True)],
                         ids=["x_cl", "w_cl", "both_cl"])
def test_channels_last_follows_torch(case, x_cl, w_cl, device):
    name, x_shape, w_shape, kw = case
    x, w, b, kw = make("conv2d", x_shape, w_shape, kw, torch.float64, device)
    if x_cl:
        x = x.contiguous(memory_format=torch.channels_last)
    if w_cl:
        w = w.contiguous(memory_format=torch.channels_last)
    want = TF.conv2d(x.cpu(), w.cpu(), None if b is None else b.cpu(), **kw)
    want_cl = want.is_contiguous(memory_format=torch.channels_last)
    xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()
    xt, wt = x.detach().cpu().requires_grad_(), w.detach().cpu().requires_grad_()
    grad = torch.randn(want.shape, dtype=torch.float64)
    torch_grads = torch.autograd.grad(TF.conv2d(xt, wt, None, **kw), (xt, wt), grad)
    for algorithm in algorithm_params("conv2d", x, w, kw, device, grads=True):
        with fastconv.algorithms.force(algorithm):
            out = F.conv2d(x, w, b, **kw)
            grads = torch.autograd.grad(F.conv2d(xg, wg, None, **kw), (xg, wg), grad.to(device))
        assert out.is_contiguous(memory_format=torch.channels_last) == want_cl
        assert rel_err(out, want) <= 1e-12
        for got, ref in zip(grads, torch_grads):
            for fmt in (torch.contiguous_format, torch.channels_last):  # strides of size-1 dims are free
                assert got.is_contiguous(memory_format=fmt) == ref.is_contiguous(memory_format=fmt)
            assert rel_err(got, ref) <= 1e-12


@pytest.mark.parametrize("kind", ["conv2d", "conv_transpose2d"])
def test_non_contiguous_inputs(kind, device):
    case = {"conv2d": CONV2D_CASES[3], "conv_transpose2d": CONV_TRANSPOSE2D_CASES[5]}[kind]
    name, x_shape, w_shape, kw = case
    x, w, b, kw = make(kind, x_shape, w_shape, kw, torch.float64, device)
    # Every other column of a wider tensor, and a filter stored transposed in H and W.
    wide = torch.randn(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=device)
    wide[..., ::2] = x
    x_nc = wide[..., ::2]
    w_nc = w.transpose(2, 3).contiguous().transpose(2, 3)
    b_nc = torch.stack([b, b], 1)[:, 0]
    assert not x_nc.is_contiguous() and not w_nc.is_contiguous() and not b_nc.is_contiguous()
    ref = reference(kind, x, w, b, kw)
    for algorithm in algorithm_params(kind, x_nc, w_nc, kw, device, grads=True):
        with fastconv.algorithms.force(algorithm):
            out = getattr(F, kind)(x_nc, w_nc, b_nc, **kw)
            grad_out = torch.ones_like(out).expand_as(out)  # zero-stride, as from .sum()
            xg = x_nc.detach().requires_grad_()
            gi, = torch.autograd.grad(getattr(F, kind)(xg, w_nc, b_nc, **kw), xg, grad_out)
        assert rel_err(out, ref) <= 1e-12
        xr = x.detach().cpu().requires_grad_()
        gr, = torch.autograd.grad(torch_call(kind, xr, w.cpu(), b.cpu(), kw).sum(), xr)
        assert rel_err(gi, gr) <= 1e-12


def test_forced_algorithm_refuses_what_it_does_not_claim(device):
    if "depthwise" not in algorithms(device):
        pytest.skip("no depthwise algorithm on this device")
    x = torch.randn(1, 4, 5, 5, device=device)
    w = torch.randn(4, 2, 3, 3, device=device)
    with fastconv.algorithms.force("depthwise"), pytest.raises(NotImplementedError, match="depthwise"):
        F.conv2d(x, w, groups=2)


def test_unknown_forced_algorithm_names_the_known_ones():
    with fastconv.algorithms.force("winograd_9000"), pytest.raises(ValueError, match="direct"):
        F.conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 3, 3))


def test_algorithm_lists_end_with_direct():
    assert fastconv.algorithms.names("cpu")[-1] == "direct"
    cuda = fastconv.algorithms.names("cuda")
    assert cuda == [] or cuda[-1] == "direct"


def test_large_kernel_tiles_bound_the_column_buffer():
    """One image whose unrolled columns exceed the im2col budget is split into row tiles."""
    x = torch.randn(1, 16, 160, 160, dtype=torch.float64)
    w = torch.randn(4, 16, 9, 9, dtype=torch.float64)
    ref = TF.conv2d(x, w, padding=4)
    with fastconv.algorithms.force("im2col_gemm"):
        out = F.conv2d(x, w, padding=4)
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        gi, gw = torch.autograd.grad(F.conv2d(xg, wg, padding=4), (xg, wg), torch.ones_like(ref))
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    ri, rw = torch.autograd.grad(TF.conv2d(xr, wr, padding=4), (xr, wr), torch.ones_like(ref))
    assert rel_err(out, ref) <= 1e-12
    assert rel_err(gi, ri) <= 1e-12 and rel_err(gw, rw) <= 1e-12


WINOGRAD = ["winograd_2x2", "winograd_4x4"]


@pytest.mark.parametrize("algorithm", WINOGRAD)
@pytest.mark.parametrize("dilation", [(1, 1), (2, 3)], ids=["undilated", "dilated"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_winograd_chunks_bound_the_tile_buffers(algorithm, dilation, layout):
    """A problem whose transformed tiles exceed the Winograd budget runs in several chunks of
    tile rows; dgrad and wgrad too (dgrad through the transposed convolution as well). With
    dilation, sizes that the dilation does not divide leave sub-grids of unequal size."""
    kw = {"padding": dilation, "dilation": dilation}
    x = torch.randn(3, 96, 41, 44, dtype=torch.float64).contiguous(memory_format=layout)
    w = torch.randn(80, 96, 3, 3, dtype=torch.float64)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    ref = TF.conv2d(xr, wr, **kw)
    grad = torch.randn_like(ref)
    ri, rw = torch.autograd.grad(ref, (xr, wr), grad)
    with fastconv.algorithms.force(algorithm):
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        out = F.conv2d(xg, wg, **kw)
        gi, gw = torch.autograd.grad(out, (xg, wg), grad)
        up = F.conv_transpose2d(ref.detach(), w, **kw)
    assert rel_err(out, ref) <= 1e-12
    assert rel_err(gi, ri) <= 1e-12 and rel_err(gw, rw) <= 1e-12
    assert rel_err(up, TF.conv_transpose2d(ref.detach(), w, **kw)) <= 1e-12


@pytest.mark.parametrize("where", ["input", "weight", "grad_output"])
def test_non_finite_operands_pass_winograd_by(where):
    """A tile transform would spread an inf or NaN over its whole tile. Winograd declares that
    it needs finite operands, so the automatic choice, which reads them, passes such a layer
    on down the list to im2col: bit for bit its result, so an input's inf reaches exactly the
    outputs torch's does. Forced onto such operands, Winograd refuses and says why."""
    x = torch.randn(2, 64, 64, 64)  # a layer the automatic choice gives to winograd_4x4
    w = torch.randn(64, 64, 3, 3)
    grad = torch.randn(2, 64, 64, 64)
    if where == "input":
        x[0, 3, 5, 6] = float("inf")
        x[1, 0, 0, 0] = float("nan")
    elif where == "weight":
        w[2, 1, 0, 0] = float("inf")
    else:
        grad[1, 4, 7, 2] = float("-inf")

    def run(name):
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        with fastconv.algorithms.force(name):
            out = F.conv2d(xg, wg, padding=1)
            gi, gw = torch.autograd.grad(out, (xg, wg), grad)
        return out.detach(), gi, gw

    auto, im2col = run(None), run("im2col_gemm")
    # The forward reads x and w, the input gradient dy and w, the filter gradient x and dy:
    # the directions that read the non-finite operand are im2col's.
    for i in {"input": [0, 2], "weight": [0, 1], "grad_output": [1, 2]}[where]:
        torch.testing.assert_close(auto[i], im2col[i], rtol=0, atol=0, equal_nan=True)
    if where == "input":
        assert torch.equal(torch.isfinite(auto[0]), torch.isfinite(TF.conv2d(x, w, padding=1)))
    for algorithm in WINOGRAD:  # the forward refuses, or (grad_output) the backward does
        with pytest.raises(NotImplementedError, match="inf or NaN"):
            run(algorithm)


@pytest.mark.parametrize(
    "shape,want",
    [
        ((2, 64, 64, 64), "winograd_4x4"),  # 512 tiles of 4x4
        ((2, 64, 16, 16), "winograd_2x2"),  # 32 tiles of 4x4, 128 of 2x2
        ((2, 8, 64, 64), "im2col_gemm"),  # too few channels for the per-point GEMMs
    ],
)
def test_automatic_choice_of_winograd(shape, want):
    """float32 3x3 stride-1 layers go to Winograd when their tiles repay the filter transform:
    the automatic result is bitwise the forced algorithm's."""
    x = torch.randn(shape)
    w = torch.randn(shape[1], shape[1], 3, 3)
    auto = F.conv2d(x, w, padding=1)
    with fastconv.algorithms.force(want):
        forced = F.conv2d(x, w, padding=1)
    assert torch.equal(auto, forced)
    others = [a for a in WINOGRAD + ["im2col_gemm"] if a != want]
    for other in others:
        with fastconv.algorithms.force(other):
            assert not torch.equal(auto, F.conv2d(x, w, padding=1)), other


# What bench/gpu_check.sh runs under compute-sanitizer: memcheck over the kernels' boundary
# cases (per-side padding, groups, a channel multiplier, the 64x64 stride-32 up-convolution,
# 1-D), racecheck over the kernels with shared memory (the direct wgrad's tree).
SANITIZER_CASES = [("conv2d", c) for c in CONV2D_CASES if c[0] in ("basic", "depthwise_multiplier", "per_side_padding")]
SANITIZER_CASES += [("conv_transpose2d", c) for c in CONV_TRANSPOSE2D_CASES if c[0] in ("basic", "fcn32s_64x64_s32")]
SANITIZER_CASES += [("conv1d", CONV1D_CASES[0])]


@pytest.mark.sanitizer
@pytest.mark.parametrize("kind,case", SANITIZER_CASES, ids=[f"{k}-{c[0]}" for k, c in SANITIZER_CASES])
def test_sanitizer_subset(kind, case, device):
    test_forward_matches_torch(kind, case, torch.float32, device)
    test_gradients_match_torch(kind, case, torch.float32, device)


@pytest.mark.racecheck
@pytest.mark.parametrize("name", ["basic", "depthwise"])
def test_racecheck_subset(name, device):
    case = next(c for c in CONV2D_CASES if c[0] == name)
    test_gradients_match_torch("conv2d", case, torch.float32, device)
