"""fastconv::conv2d_fused (issue 25): activation(conv2d(x, w, b) + residual), with each
algorithm's kernel applying the stages it says it fuses (fastconv.algorithms.fused_stages)
and the operator the rest. Every algorithm is forced on every case of the conv table it
claims, with every activation, with and without the residual, in every dtype and both
layouts, against the float64 unfused sequence. A stage a kernel claims and skips, or applies
twice, fails here: the operator applies only what the kernel does not claim."""

import pytest
import torch
import torch.nn.functional as TF

import fastconv
import fastconv.functional as F
from conftest import TOLERANCE, algorithms, claims, operator_call, rel_err
from conv_cases import CONV2D_CASES

ACTIVATIONS = F.ACTIVATIONS
SLOPE = 0.2
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
CASES = [c for c in CONV2D_CASES if c[0] not in ("batch_zero", "unbatched", "unbatched_depthwise")]

TORCH_ACT = {
    "none": lambda t: t,
    "relu": TF.relu,
    "relu6": TF.relu6,
    "silu": TF.silu,
    "hardswish": TF.hardswish,
    "leaky_relu": lambda t: TF.leaky_relu(t, SLOPE),
}


def reference(x, w, b, residual, kw, activation):
    kw = {k: v for k, v in kw.items() if k != "bias"}
    x = x.double().cpu()
    pad = kw.get("padding", 0)
    if isinstance(pad, tuple) and len(pad) == 4:  # per side: (top, bottom, left, right)
        x, kw["padding"] = TF.pad(x, (pad[2], pad[3], pad[0], pad[1])), 0
    y = TF.conv2d(x, w.double().cpu(), None if b is None else b.double().cpu(), **kw)
    if residual is not None:
        y = y + residual.double().cpu()
    return TORCH_ACT[activation](y)


def make(case, dtype, device, channels_last, seed):
    name, x_shape, w_shape, kw = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    w = torch.randn(w_shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    b = None if kw.get("bias", True) is False else torch.randn(w_shape[0], generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x, w, b


def combinations():
    # Every activation with and without the residual, the dtypes and layouts spread across them
    # so that each (dtype, layout) meets every activation once.
    for i, (dtype, channels_last) in enumerate([(d, cl) for d in DTYPES for cl in (False, True)]):
        for j, activation in enumerate(ACTIVATIONS):
            yield dtype, channels_last, activation, (i + j) % 2 == 0


@pytest.mark.parametrize("algorithm", [None] + algorithms("cpu") + (algorithms("cuda") if torch.cuda.is_available() else []))
def test_fused_matches_the_unfused_sequence(algorithm, device):
    if algorithm is not None and algorithm not in algorithms(device):
        pytest.skip(f"{algorithm} is not a {device} algorithm")
    ran = 0
    for case in CASES:
        kw = case[3]
        for seed, (dtype, channels_last, activation, with_residual) in enumerate(combinations()):
            x, w, b = make(case, dtype, device, channels_last, seed)
            if algorithm is not None and not claims(algorithm, "conv2d", x, w, kw):
                continue
            ref_shape = reference(x, w, b, None, kw, "none").shape
            residual = (torch.randn(ref_shape, dtype=torch.float64).to(device=device, dtype=dtype)
                        if with_residual else None)
            ref = reference(x, w, b, residual, kw, activation)
            args = {k: v for k, v in kw.items() if k != "bias"}
            with fastconv.algorithms.force(algorithm), torch.no_grad():
                out = F.conv2d_fused(x, w, b, residual, activation=activation, negative_slope=SLOPE, **args)
            assert out.shape == ref.shape and out.dtype == dtype
            assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            assert rel_err(out, ref) <= TOLERANCE[dtype], (
                f"{algorithm} {case[0]} {dtype} channels_last={channels_last} {activation} "
                f"residual={with_residual}")
            ran += 1
    if algorithm is not None:
        assert ran > 0, f"{algorithm} claims none of the cases"


def test_each_cpu_algorithm_says_what_it_fuses():
    """The library's answers, for the record of what fuses where (README's table): the GEMM
    kernels that run on ATen's half-type GEMM fuse nothing in half types."""
    x = torch.empty(2, 16, 10, 10, device="meta")
    w = torch.empty(16, 16, 3, 3, device="meta")
    stages = {a: fastconv.algorithms.fused_stages(a, "fprop", x, w, device="cpu") for a in algorithms("cpu")}
    assert all(s in ((), fastconv.algorithms.STAGES) for s in stages.values())
    assert stages["direct"] == fastconv.algorithms.STAGES
    assert stages["im2col_gemm"] == fastconv.algorithms.STAGES
    half = fastconv.algorithms.fused_stages("im2col_gemm", "fprop", x.bfloat16(), w.bfloat16(), device="cpu")
    assert half == ()
    # dgrad (conv_transpose2d's forward) is only ever asked for the bias.
    assert fastconv.algorithms.fused_stages("winograd_4x4", "dgrad", x, w, device="cpu") == ()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_types_round_once_where_the_kernel_fuses(dtype):
    """The residual add and the activation happen before the one rounding: the fused result is
    the float64 sequence rounded once, to within the accumulation's own error, where the
    unfused ops (rounding after the convolution, again after the add) are further off."""
    torch.manual_seed(0)
    x = torch.randn(1, 32, 12, 12).to(dtype)
    w = torch.randn(32, 1, 3, 3).to(dtype)  # depthwise: its kernel fuses every stage in any dtype
    r = torch.randn(1, 32, 10, 10).to(dtype) * 8
    assert fastconv.algorithms.fused_stages("depthwise", "fprop", x, w, groups=32) == fastconv.algorithms.STAGES
    with torch.no_grad(), fastconv.algorithms.force("depthwise"):
        fused = F.conv2d_fused(x, w, None, r, groups=32, activation="silu")
    exact = TF.silu(TF.conv2d(x.double(), w.double(), groups=32) + r.double())
    once = exact.to(dtype)
    # Depthwise sums 9 products in float: its result is within one unit in the last place of
    # the exactly rounded one.
    ulp = torch.finfo(dtype).eps * exact.abs().clamp_min(torch.finfo(dtype).tiny)
    assert ((fused.double() - once.double()).abs() <= ulp * 2).all()


def test_refuses_to_differentiate():
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    w = torch.randn(3, 2, 3, 3)
    with pytest.raises(RuntimeError, match="inference operator"):
        F.conv2d_fused(x, w, activation="relu")
    with pytest.raises(RuntimeError, match="inference operator"):
        torch.ops.fastconv.conv2d_fused(x, w, None, None, [1, 1], [0, 0, 0, 0], [1, 1], 1, "relu", 0.0)
    with torch.no_grad():
        F.conv2d_fused(x, w, activation="relu")
    with torch.inference_mode():
        F.conv2d_fused(x, w, activation="relu")


@pytest.mark.parametrize("call,error,message", [
    (lambda x, w: F.conv2d_fused(x, w, activation="gelu"), ValueError, "activation"),
    (lambda x, w: F.conv2d_fused(x, w, activation=1), TypeError, "activation"),
    (lambda x, w: F.conv2d_fused(x, w, residual=torch.randn(1, 3, 4, 4)), ValueError, "residual"),
    (lambda x, w: F.conv2d_fused(x, w, residual=torch.randn(1, 3, 3, 3).double()), TypeError, "residual"),
    (lambda x, w: F.conv2d_fused(x, w, residual=[1.0]), TypeError, "residual"),
    (lambda x, w: F.conv2d_fused(x, w, activation="leaky_relu", negative_slope="a"), TypeError, "negative_slope"),
    (lambda x, w: torch.ops.fastconv.conv2d_fused(x, w, None, None, [1, 1], [0] * 4, [1, 1], 1, "tanh", 0.0),
     ValueError, "activation"),
    (lambda x, w: torch.ops.fastconv.conv2d_fused(x, w, None, None, [1, 1], [0] * 4, [1, 1], 1, "relu",
                                                  float("nan")), ValueError, "negative_slope"),
    (lambda x, w: torch.ops.fastconv.conv2d_fused(x, w, None, torch.randn(1, 3, 3), [1, 1], [0] * 4, [1, 1], 1,
                                                  "relu", 0.0), ValueError, "residual"),
])
def test_bad_arguments_name_the_argument(call, error, message):
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with torch.no_grad(), pytest.raises(error, match=message):
        call(x, w)


def test_unbatched_and_empty():
    w, b = torch.randn(3, 2, 3, 3), torch.randn(3)
    x = torch.randn(2, 5, 5)
    r = torch.randn(3, 3, 3)
    with torch.no_grad():
        out = F.conv2d_fused(x, w, b, r, activation="relu6")
    assert torch.allclose(out, TF.relu6(TF.conv2d(x, w, b) + r), atol=1e-5)
    # An empty batch, and no input channels: the epilogue of zero sums.
    with torch.no_grad():
        assert F.conv2d_fused(torch.randn(0, 2, 5, 5), w, b, activation="relu").shape == (0, 3, 3, 3)
        empty = F.conv2d_fused(torch.randn(1, 0, 5, 5), torch.randn(3, 0, 3, 3), b,
                               torch.randn(1, 3, 3, 3), activation="relu")
    assert empty.shape == (1, 0, 3, 3)


def test_opcheck_and_compile():
    x, w, b = torch.randn(2, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(5)
    r = torch.randn(2, 5, 6, 6)
    args = (x, w, b, r, [1, 1], [1, 1, 1, 1], [1, 1], 1, "hardswish", 0.01)
    torch.library.opcheck(torch.ops.fastconv.conv2d_fused.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))
    fn = torch.compile(lambda *a: torch.ops.fastconv.conv2d_fused(*a), backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        assert torch.allclose(fn(*args), torch.ops.fastconv.conv2d_fused(*args))


def test_autocast_runs_in_the_autocast_dtype():
    x, w, b = torch.randn(1, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(5)
    r = torch.randn(1, 5, 4, 4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = F.conv2d_fused(x, w, b, r, activation="relu")
    assert out.dtype == torch.bfloat16
    ref = TF.relu(TF.conv2d(x, w, b) + r)
    assert rel_err(out, ref) <= TOLERANCE[torch.bfloat16]


def test_fused_module_matches_and_trains():
    torch.manual_seed(0)
    conv = fastconv.nn.Conv2d(4, 6, 3, padding=1)
    fused = fastconv.nn.FusedConv2d.from_conv(conv, activation="leaky_relu", negative_slope=SLOPE)
    assert fused.weight is conv.weight and set(fused.state_dict()) == set(conv.state_dict())
    assert "activation=leaky_relu" in repr(fused)
    x, r = torch.randn(2, 4, 7, 7), torch.randn(2, 6, 7, 7)
    want = TF.leaky_relu(conv(x) + r, SLOPE)
    with torch.no_grad():
        assert rel_err(fused(x, r), want) <= 1e-6
        # A residual that broadcasts takes the separate ops.
        bcast = torch.randn(1, 6, 1, 1)
        assert rel_err(fused(x, bcast), TF.leaky_relu(conv(x) + bcast, SLOPE)) <= 1e-6
    # With gradients needed, the separate differentiable ops: training works.
    out = fused(x, r)
    out.sum().backward()
    assert conv.weight.grad is not None
    with pytest.raises(ValueError, match="activation"):
        fastconv.nn.FusedConv2d(2, 2, 3, activation="gelu")
