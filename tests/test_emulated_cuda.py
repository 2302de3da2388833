"""fastconv's CUDA kernels, run on the CPU under the emulation layer (csrc/simt/) with every
checker on: forced over the conv case table on every CUDA algorithm that claims each case, in
every dtype and both layouts, forward and gradients; the RoI kernels forward and backward,
atomic and deterministic; and under three thread schedules. Needs the emulation build
(FASTCONV_SIMT=1; CI's tools/simt_check.sh makes one); skipped in other builds."""

import json

import pytest
import torch

import fastconv
import fastconv.functional as F
import fastconv.testing
from conftest import TOLERANCE, claims, rel_err
from fastconv._ops import _output_memory_format
from conv_cases import CONV1D_CASES, CONV2D_CASES, CONV_TRANSPOSE1D_CASES, CONV_TRANSPOSE2D_CASES
from roi_reference import roi_align as roi_align_reference
from test_conv import make, reference, torch_call

pytestmark = pytest.mark.skipif(
    not fastconv.testing.emulation_available(),
    reason="needs the emulation build: FASTCONV_SIMT=1 pip install --no-build-isolation .",
)

KINDS = {
    "conv1d": CONV1D_CASES,
    "conv2d": CONV2D_CASES,
    "conv_transpose1d": CONV_TRANSPOSE1D_CASES,
    "conv_transpose2d": CONV_TRANSPOSE2D_CASES,
}
CASES = [(kind, case) for kind, cases in KINDS.items() for case in cases]
IDS = [f"{kind}-{case[0]}" for kind, case in CASES]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def cuda_algorithms(kind, x, w, kw, grads):
    with fastconv.testing.emulated_cuda():
        return [a for a in fastconv.algorithms.names("cuda") if claims(a, kind, x, w, kw, grads, device="cuda")]


@pytest.mark.parametrize("kind,case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
def test_forward(kind, case, dtype):
    name, x_shape, w_shape, kw = case
    x, w, b, kw = make(kind, x_shape, w_shape, kw, dtype, "cpu")
    ref = reference(kind, x, w, b, kw)
    algorithms = cuda_algorithms(kind, x, w, kw, grads=False)
    assert algorithms, "no CUDA algorithm claims the case"
    for algorithm in algorithms:
        with fastconv.testing.emulated_cuda(), fastconv.algorithms.force(algorithm):
            out = getattr(F, kind)(x, w, b, **kw)
        assert out.shape == ref.shape and out.dtype == dtype
        assert rel_err(out, ref) <= TOLERANCE[dtype], f"algorithm {algorithm}"


@pytest.mark.parametrize("kind,case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["float64", "bfloat16"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_gradients(kind, case, dtype, layout):
    name, x_shape, w_shape, kw = case
    x, w, b, kw = make(kind, x_shape, w_shape, kw, dtype, "cpu")
    if layout == torch.channels_last:
        if x.dim() != 4:
            pytest.skip("channels_last is a 4-D layout")
        x = x.contiguous(memory_format=layout)
    xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    br = None if b is None else b.detach().double().requires_grad_()
    ref = torch_call(kind, xr, wr, br, kw)
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    leaves_ref = [t for t in (xr, wr, br) if t is not None]
    grads_ref = torch.autograd.grad(ref, leaves_ref, grad)
    for algorithm in cuda_algorithms(kind, x, w, kw, grads=True):
        leaves = [t.detach().requires_grad_() for t in (x, w, b) if t is not None]
        xi, wi = leaves[0], leaves[1]
        bi = leaves[2] if b is not None else None
        with fastconv.testing.emulated_cuda(), fastconv.algorithms.force(algorithm):
            out = getattr(F, kind)(xi, wi, bi, **kw)
            grads = torch.autograd.grad(out, leaves, grad.to(dtype))
        assert out.is_contiguous(memory_format=_output_memory_format(xi, wi))
        for got, want, what in zip(grads, grads_ref, ["input", "weight", "bias"]):
            assert rel_err(got, want) <= TOLERANCE[dtype] * 10, f"{what} grad, algorithm {algorithm}"


@pytest.mark.parametrize("schedule,seed", [("reverse", 0), ("shuffle", 1), ("shuffle", 2)])
def test_thread_schedules_give_the_same_bits(schedule, seed):
    """The direct kernels' shared-memory tree (wgrad) and everything else do not depend on
    the order a block's threads run in; blocks on two OS threads change nothing either."""
    x, w, b, kw = make("conv2d", (2, 4, 8, 8), (6, 2, 3, 3), {"groups": 2, "padding": 1, "stride": 2}, torch.float32, "cpu")
    grad = torch.randn(2, 6, 4, 4)

    def run(**settings):
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        with fastconv.testing.emulated_cuda(**settings):
            y = F.conv2d(xg, wg, b, **kw)
            return (y.detach(), *torch.autograd.grad(y, (xg, wg), grad))

    for got, want in zip(run(schedule=schedule, seed=seed, threads=2), run()):
        assert torch.equal(got, want)


ROI_FEATURES = (2, 5, 12, 14)
ROIS = torch.tensor(
    [
        [0, 1.0, 1.0, 6.0, 7.0],
        [1, 0.0, 2.0, 11.0, 9.5],
        [0, 3.2, 3.2, 3.2, 3.2],  # a point
        [1, 5.0, 4.0, 2.0, 1.0],  # corners swapped: empty
        [0, -40.0, -30.0, 500.0, 400.0],  # far beyond the image
        [1, 2.5, 0.5, 13.5, 11.0],
    ]
)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                         ids=["float64", "float32", "float16", "bfloat16"])
def test_roi_align(aligned, sampling_ratio, dtype, layout):
    feat = torch.randn(ROI_FEATURES, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = roi_align_reference(feat, ROIS.double(), (3, 4), 0.5, sampling_ratio, aligned)
    x = feat.to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with fastconv.testing.emulated_cuda(metrics=True):
        fastconv.testing.emulated_launches()
        got = F.roi_align(x, ROIS.to(dtype), (3, 4), 0.5, sampling_ratio, aligned)
        (launch,) = fastconv.testing.emulated_launches()
    assert launch["kernel"] == ("align::forward_nhwc_kernel" if layout == "channels_last" else "align::forward_kernel")
    assert got.dtype == dtype and got.is_contiguous()
    assert rel_err(got, want) <= max(TOLERANCE[dtype], 1e-9)


def test_roi_align_channels_last_blocks():
    """The channels_last forward across its block edges: 40 channels (a full 32-channel
    block and a partial one) and 9 x 8 = 72 bins (a full 64-bin chunk and a partial one),
    read straight from [N, H, W, C]; each tap a coalesced read, and the staged writes free of
    bank conflicts."""
    g = torch.Generator().manual_seed(5)
    feat = torch.randn(2, 40, 12, 14, generator=g, dtype=torch.float64)
    want = roi_align_reference(feat, ROIS.double(), (9, 8), 0.5, 2, True)
    with fastconv.testing.emulated_cuda(metrics=True):
        fastconv.testing.emulated_launches()
        got = F.roi_align(feat.float().contiguous(memory_format=torch.channels_last), ROIS, (9, 8), 0.5, 2, True)
        (launch,) = fastconv.testing.emulated_launches()
    assert launch["kernel"] == "align::forward_nhwc_kernel"
    assert rel_err(got, want) <= TOLERANCE[torch.float32]
    # Loads: a warp's 32 channels of one tap are 128 contiguous bytes, 4 or 5 sectors.
    assert launch["load_sectors"] <= 5 * launch["load_requests"], launch


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_roi_backward_atomic_and_deterministic(op):
    """The atomic backward equals the CPU's within rounding; the deterministic one (no
    atomics) is bitwise the same under every schedule and within rounding of the atomic."""
    feat = torch.randn(ROI_FEATURES, generator=torch.Generator().manual_seed(1))
    call = {"roi_align": lambda f: F.roi_align(f, ROIS, 3, 0.5, 2, True),
            "roi_pool": lambda f: F.roi_pool(f, ROIS, 3, 0.5)}[op]

    def grad_of(**settings):
        f = feat.clone().requires_grad_()
        with fastconv.testing.emulated_cuda(**settings):
            out = call(f)
            return torch.autograd.grad(out, f, torch.ones_like(out))[0]

    f = feat.clone().requires_grad_()
    out = call(f)
    cpu = torch.autograd.grad(out, f, torch.ones_like(out))[0]
    atomic = grad_of(threads=2)
    assert rel_err(atomic, cpu) <= 1e-6
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [grad_of(schedule=s, seed=1) for s in ("forward", "reverse", "shuffle")]
    finally:
        torch.use_deterministic_algorithms(before)
    assert all(torch.equal(r, runs[0]) for r in runs)
    assert rel_err(runs[0], atomic) <= 1e-6


def _deterministic_backwards(call, feat, grad, kernel, monkeypatch):
    """Under torch.use_deterministic_algorithms(True), emulated: the input gradient of
    call(features) from the default deterministic kernel (which must be `kernel`, and give the
    same bits under a shuffled schedule on two threads) and from the plane walker forced with
    FASTCONV_ROI_DETERMINISTIC=planes."""

    def grad_of(**settings):
        f = feat.clone().requires_grad_()
        with fastconv.testing.emulated_cuda(metrics=True, **settings):
            fastconv.testing.emulated_launches()
            got = torch.autograd.grad(call(f), f, grad)[0]
            kernels = [launch["kernel"] for launch in fastconv.testing.emulated_launches()]
        return got, kernels

    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        default, kernels = grad_of()
        assert kernel in kernels, kernels
        assert torch.equal(default, grad_of(schedule="shuffle", seed=4, threads=2)[0])
        with monkeypatch.context() as m:
            m.setenv("FASTCONV_ROI_DETERMINISTIC", "planes")
            planes, kernels = grad_of()
        assert any(k.endswith("backward_deterministic_kernel") for k in kernels), kernels
    finally:
        torch.use_deterministic_algorithms(before)
    return default, planes


# ROIS and four more: wide, tiny, tall and off the top, on a third image; out of image order.
def _more_rois(g):
    rois = torch.cat([ROIS, torch.tensor([[2, 0.2, 0.3, 25.0, 4.0], [0, 6.0, 6.0, 6.5, 6.25],
                                          [2, -5.0, 7.0, 3.0, 30.0], [1, 9.0, 1.0, 12.9, 9.9]])])
    return rois[torch.randperm(len(rois), generator=g)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_roi_pool_deterministic_backward_kernels(dtype, monkeypatch):
    """RoIPool's deterministic backward: the segmented sum (the default: contributions sorted
    stably by destination, each run added in order) and the plane walker add each element's
    contributions in the same order, box by box and bin by bin: the same bits, and the CPU's
    values within rounding."""
    g = torch.Generator().manual_seed(9)
    feat = torch.randn(3, 7, 10, 13, generator=g, dtype=dtype)
    rois = _more_rois(g)
    rois = rois.to(dtype)
    f = feat.clone().requires_grad_()
    out = F.roi_pool(f, rois, (4, 3), 0.7)
    grad = torch.randn(out.shape, generator=g, dtype=dtype)
    (want,) = torch.autograd.grad(out, f, grad)
    segmented, planes = _deterministic_backwards(lambda f: F.roi_pool(f, rois, (4, 3), 0.7), feat, grad,
                                                 "pool::backward_segmented_kernel", monkeypatch)
    assert torch.equal(segmented, planes)
    assert rel_err(segmented, want) <= 1e-6


def test_roi_deterministic_setting_is_checked(monkeypatch):
    feat = torch.randn(ROI_FEATURES).requires_grad_()
    monkeypatch.setenv("FASTCONV_ROI_DETERMINISTIC", "plane")
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with fastconv.testing.emulated_cuda():
            for call in (lambda f: F.roi_align(f, ROIS, 3, 0.5, 2, True), lambda f: F.roi_pool(f, ROIS, 3, 0.5)):
                out = call(feat)
                with pytest.raises(ValueError, match="FASTCONV_ROI_DETERMINISTIC must be 'planes' or unset, got 'plane'"):
                    torch.autograd.grad(out, feat, torch.ones_like(out))
    finally:
        torch.use_deterministic_algorithms(before)


ROI_GATHER_CASES = [((7, 7), 2, False), ((7, 7), -1, True), ((4, 3), 1, True), ((14, 14), -1, False)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("pooled,sampling_ratio,aligned", ROI_GATHER_CASES,
                         ids=[f"{p[0]}x{p[1]}-s{s}-{'aligned' if a else 'legacy'}" for p, s, a in ROI_GATHER_CASES])
def test_roi_align_gather_backward(pooled, sampling_ratio, aligned, dtype, monkeypatch):
    """RoIAlign's deterministic backward: the gather (the default: every input pixel sums what
    its image's boxes send it) and the plane walker, over partial 8-channel groups, boxes of
    every kind and boxes out of image order. Both match the float64 gradient."""
    g = torch.Generator().manual_seed(6)
    feat = torch.randn(3, 11, 10, 13, generator=g, dtype=torch.float64)
    rois = _more_rois(g)
    f64 = feat.clone().requires_grad_()
    out = F.roi_align(f64, rois.double(), pooled, 0.7, sampling_ratio, aligned)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (want,) = torch.autograd.grad(out, f64, grad)
    rois = rois.to(dtype)
    gather, planes = _deterministic_backwards(lambda f: F.roi_align(f, rois, pooled, 0.7, sampling_ratio, aligned),
                                              feat.to(dtype), grad.to(dtype), "align::backward_gather_kernel",
                                              monkeypatch)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    assert rel_err(gather, want) <= tolerance
    assert rel_err(planes, want) <= tolerance


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["float64", "float32", "bfloat16"])
def test_multi_level_roi_align_one_launch(dtype):
    """The FPN pooler's CUDA kernel: every level in one launch, each box from its own level,
    equal to the CPU's level-by-level pooling (invalid boxes NaN in both)."""
    g = torch.Generator().manual_seed(8)
    feats = [torch.randn(2, 5, 16 // 2**i, 20 // 2**i, generator=g).to(dtype) for i in range(3)]
    rois = torch.cat([ROIS, torch.tensor([[1, 10.0, 8.0, 60.0, 50.0], [0, float("nan"), 1.0, 2.0, 3.0]])]).to(dtype)
    levels = torch.tensor([0, 1, 2, 0, 1, 2, 1, 0])
    want = F.multi_level_roi_align(feats, rois, levels, (3, 2), [0.5, 0.25, 0.125], 2, True)
    with fastconv.testing.emulated_cuda(metrics=True):
        fastconv.testing.emulated_launches()
        got = F.multi_level_roi_align(feats, rois, levels, (3, 2), [0.5, 0.25, 0.125], 2, True)
        kernels = [launch["kernel"] for launch in fastconv.testing.emulated_launches()]
    assert kernels == ["align::forward_multilevel_kernel"]
    assert torch.isnan(got[-1]).all() and torch.isnan(want[-1]).all()
    assert rel_err(got[:-1], want[:-1]) <= max(TOLERANCE[dtype], 1e-9)


def test_no_boxes():
    feat = torch.randn(ROI_FEATURES)
    with fastconv.testing.emulated_cuda():
        assert F.roi_align(feat, torch.zeros(0, 5), 3).shape == (0, 5, 3, 3)
        assert F.roi_pool(feat, torch.zeros(0, 5), 3).shape == (0, 5, 3, 3)


def test_emulation_switch_is_scoped():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with fastconv.testing.emulated_cuda():
        with fastconv.testing.emulated_cuda(schedule="reverse"):
            F.conv2d(x, w)
        F.conv2d(x, w)
    with pytest.raises(ValueError, match="unknown algorithm"):
        with fastconv.algorithms.force("winograd_4x4"), fastconv.testing.emulated_cuda():
            F.conv2d(x, w)  # a CPU algorithm is not in the CUDA list
    with pytest.raises(ValueError, match="schedule"):
        with fastconv.testing.emulated_cuda(schedule="sideways"):
            pass


@pytest.mark.parametrize("seed", [0, 1])
def test_tensor_core_path(seed):
    """cp.async, ldmatrix.x4/.x2 and mma.sync m16n8k16 through the kernel-side wrappers, as
    one GEMM tile: the emulated fragment layouts and the kernel agree with a @ bt.T."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(16, 16, generator=g).bfloat16()
    bt = torch.randn(8, 16, generator=g).bfloat16()
    d = torch.ops.fastconv._tensor_core_check(a, bt)
    torch.testing.assert_close(d, a.double().matmul(bt.double().T).float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_traffic_report_of_the_direct_kernel(layout, tmp_path, capsys):
    """fastconv-bench traffic on a layer whose warps write 32 consecutive floats (along W in
    NCHW, along K in channels_last): 4 sectors per store request, and the distinct bytes of
    the launch within a sector's rounding of the problem's minimum. In channels_last the
    direct kernel's lanes read one x value (1 sector) and 32 filters a filter apart (32
    sectors): 16.5 per load request, the price of a reference kernel's thread order."""
    from fastconv.bench import traffic

    out = tmp_path / "t.json"
    assert traffic.main(["--layer", "N=1,C=8,H=8,W=32,K=32,R=3,pad=1", "--layout", layout, "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    (launch,) = row["launches"]
    assert launch["kernel"] == "direct::fprop_kernel"
    assert launch["sectors_per_store"] == 4.0
    if layout == "nhwc":
        assert launch["sectors_per_load"] == 16.5
    else:
        assert 1.0 <= launch["sectors_per_load"] <= 5.0
    assert 0.95 <= row["distinct_over_min"] <= 1.2
    assert "direct::fprop_kernel" in capsys.readouterr().out


def test_traffic_scaling_keeps_the_seed_suite_small():
    from fastconv.bench import suites, traffic

    for case in suites.seed_suite():
        if isinstance(case, suites.ConvCase):
            small = traffic.scaled(case, 6e5)
            assert small.groups == case.groups and (small.R, small.S) == (case.R, case.S)
            assert small.K >= min(case.K, 32) and small.W == case.W or small.H == traffic._extent(small, 0) or small.one_d
            fits = small.flops(1, "fprop") / 2 <= 6e5
            assert fits or small.W == traffic._extent(small, 1), case.name


def test_selftest_case_matrix_under_emulation():
    """The self-test's case matrix, run through the emulated CUDA kernels as a GPU would run
    it: every kernel it decides on (each CUDA algorithm and each RoI kernel) passes, and a
    kernel that does not exist is reported by name, not raised."""
    import fastconv.selftest

    kernels = fastconv.selftest.gated_kernels(90)
    assert set(fastconv.algorithms.names("cuda")) <= set(kernels)
    assert set(torch.ops.fastconv._roi_kernel_names()) <= set(kernels)
    with fastconv.testing.emulated_cuda():
        verdicts = fastconv.selftest.run_cases(torch.device("cpu"), kernels)
        assert verdicts == {k: [] for k in kernels}
        failures = fastconv.selftest.run_cases(torch.device("cpu"), ["no_such_kernel"])
    assert failures == {"no_such_kernel": ["no_such_kernel: no CUDA kernel of that name in this build"]}


# The implicit-GEMM configurations, forced over a CUTLASS-style alignment list: C and K of
# 4 (8-byte copies), 8, 16, 24 and 40; K not a multiple of the tile's N and N*P*Q not a
# multiple of its M; 1x1, 3x3, 5x5 and 7x7 filters, stride 2, dilation 2, groups 2 and 32.
IGEMM = ["igemm_128x128", "igemm_64x64"]
# Each configuration with the dtypes it computes in: the tensor-core tiles in bf16 and fp16
# (TF32 has its own test below), the FFMA tile in exact float32.
IGEMM_DTYPES = [(a, d) for a in IGEMM for d in (torch.bfloat16, torch.float16)] + [("igemm_ffma_64x64", torch.float32)]
# (name, x shape, w shape, conv2d keywords)
IGEMM_CASES = [
    ("c8_k8_3x3", (2, 8, 6, 7), (8, 8, 3, 3), {"padding": 1}),
    ("c16_k24_1x1", (2, 16, 5, 5), (24, 16, 1, 1), {}),
    ("c24_k40_5x5_s2", (1, 24, 9, 8), (40, 24, 5, 5), {"stride": 2, "padding": 2}),
    ("c40_k16_7x7_s2", (1, 40, 9, 9), (16, 40, 7, 7), {"stride": 2, "padding": 3}),
    ("c16_k16_3x3_d2", (1, 16, 9, 9), (16, 16, 3, 3), {"padding": 2, "dilation": 2}),
    ("g2_c16_k32", (1, 16, 6, 6), (32, 8, 3, 3), {"padding": 1, "groups": 2}),
    ("g32_c256_k256", (1, 256, 3, 3), (256, 8, 3, 3), {"padding": 1, "groups": 32}),
    ("k136_m144", (1, 8, 12, 12), (136, 8, 1, 1), {}),
    ("c4_k4_s2_asym", (1, 4, 7, 6), (4, 4, 3, 2), {"stride": (2, 1), "padding": (1, 0)}),
]
IGEMM_TRANSPOSED = [
    ("up_2x2_s2", (1, 16, 4, 5), (16, 8, 2, 2), {"stride": 2}),
    ("up_3x3_s2_p1_op1", (1, 8, 4, 4), (8, 16, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1}),
    ("up_4x4_s3_d2", (1, 8, 3, 3), (8, 8, 4, 4), {"stride": 3, "dilation": 2, "padding": 2}),
]


def _igemm_tolerance(dtype, reduction):
    # One rounding of the output, plus float accumulation over the reduction.
    return TOLERANCE[dtype] + reduction * 2.0**-22


@pytest.mark.parametrize("algorithm,dtype", IGEMM_DTYPES, ids=[f"{a}-{str(d)[6:]}" for a, d in IGEMM_DTYPES])
@pytest.mark.parametrize(
    "kind,case",
    [("conv2d", c) for c in IGEMM_CASES] + [("conv_transpose2d", c) for c in IGEMM_TRANSPOSED],
    ids=[f"conv2d-{c[0]}" for c in IGEMM_CASES] + [f"conv_transpose2d-{c[0]}" for c in IGEMM_TRANSPOSED],
)
def test_implicit_gemm_alignment_list(algorithm, dtype, kind, case):
    name, x_shape, w_shape, kw = case
    g = torch.Generator().manual_seed(len(name))
    x = torch.randn(x_shape, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(w_shape, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    b = torch.randn(w_shape[1] * kw.get("groups", 1) if kind == "conv_transpose2d" else w_shape[0], generator=g).to(dtype)
    with fastconv.testing.emulated_cuda():
        if name.startswith("c4_") and algorithm == "igemm_128x128":
            # 8-byte channel runs: only the 64 x 64 tile is built for 8-byte copies.
            assert not claims(algorithm, kind, x, w, kw, device="cuda")
            return
        assert claims(algorithm, kind, x, w, kw, grads=True, device="cuda"), f"{algorithm} refuses {name}"
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
    ref = torch_call(kind, xr, wr, br, kw)
    grad = torch.randn(ref.shape, generator=g).to(dtype)
    gx_ref, gw_ref, _ = torch.autograd.grad(ref, (xr, wr, br), grad.double())
    xi, wi, bi = (t.detach().requires_grad_() for t in (x, w, b))
    with fastconv.testing.emulated_cuda(), fastconv.algorithms.force(algorithm):
        out = getattr(F, kind)(xi, wi, bi, **kw)
        gx, gw, _ = torch.autograd.grad(out, (xi, wi, bi), grad)
    reduction = w.numel() // w.shape[0]
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(out, ref) <= _igemm_tolerance(dtype, reduction), "forward"
    assert rel_err(gx, gx_ref) <= _igemm_tolerance(dtype, max(reduction, x.shape[1] * 49)), "input grad"
    assert rel_err(gw, gw_ref) <= _igemm_tolerance(dtype, out.numel() // out.shape[1]), "weight grad"


# The Hopper (wgmma) configurations over the same list: fprop and dgrad (their input grad, and
# a transposed convolution's forward), bf16 and fp16; wgrad stays on the mma.sync tiles.
HOPPER = ["hopper_128x256", "hopper_128x128", "hopper_128x64"]
HOPPER_DTYPES = [(a, d) for a in HOPPER for d in (torch.bfloat16, torch.float16)]
ALIGNMENT_CASES = [("conv2d", c) for c in IGEMM_CASES] + [("conv_transpose2d", c) for c in IGEMM_TRANSPOSED]
ALIGNMENT_IDS = [f"conv2d-{c[0]}" for c in IGEMM_CASES] + [f"conv_transpose2d-{c[0]}" for c in IGEMM_TRANSPOSED]


def _hopper_run(algorithm, dtype, kind, case, **settings):
    """The case forced onto `algorithm`: the output and the input grad (dgrad; fprop for a
    transposed convolution), with the float64 references."""
    name, x_shape, w_shape, kw = case
    g = torch.Generator().manual_seed(len(name))
    x = torch.randn(x_shape, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(w_shape, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    b = torch.randn(w_shape[1] * kw.get("groups", 1) if kind == "conv_transpose2d" else w_shape[0], generator=g).to(dtype)
    xr = x.detach().double().requires_grad_()
    ref = torch_call(kind, xr, w.double(), b.double(), kw)
    grad = torch.randn(ref.shape, generator=g).to(dtype)
    (gx_ref,) = torch.autograd.grad(ref, (xr,), grad.double())
    xi = x.detach().requires_grad_()
    with fastconv.testing.emulated_cuda(**settings), fastconv.algorithms.force(algorithm):
        out = getattr(F, kind)(xi, w, b, **kw)
        (gx,) = torch.autograd.grad(out, (xi,), grad)
    return out, gx, ref, gx_ref, x, w


@pytest.mark.parametrize("algorithm,dtype", HOPPER_DTYPES, ids=[f"{a}-{str(d)[6:]}" for a, d in HOPPER_DTYPES])
@pytest.mark.parametrize("kind,case", ALIGNMENT_CASES, ids=ALIGNMENT_IDS)
def test_hopper_alignment_list(algorithm, dtype, kind, case):
    name, x_shape, w_shape, kw = case
    g = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(w_shape, generator=g).to(dtype)
    with fastconv.testing.emulated_cuda():
        if name.startswith("c4_"):
            # 8-byte channel runs: the producer copies 16-byte chunks of 8 channels only.
            assert not claims(algorithm, kind, x, w, kw, device="cuda")
            return
        assert claims(algorithm, kind, x, w, kw, device="cuda"), f"{algorithm} refuses {name}"
        assert not claims(algorithm, kind, x, w, kw, grads=True, device="cuda"), "wgrad is not on wgmma"
    out, gx, ref, gx_ref, x, w = _hopper_run(algorithm, dtype, kind, case)
    reduction = w.numel() // w.shape[0]
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(out, ref) <= _igemm_tolerance(dtype, reduction), "forward"
    assert rel_err(gx, gx_ref) <= _igemm_tolerance(dtype, max(reduction, x.shape[1] * 49)), "input grad"


@pytest.mark.parametrize("algorithm", HOPPER)
@pytest.mark.parametrize("schedule,seed", [("reverse", 0), ("shuffle", 3)])
def test_hopper_schedules_give_the_same_bits(algorithm, schedule, seed):
    """The ring's hand-offs (mbarriers, named barriers, wgmma groups) under other thread orders
    and on two OS threads: the same bits as the forward schedule, every checker on."""
    for kind, case in (ALIGNMENT_CASES[2], ALIGNMENT_CASES[6], ALIGNMENT_CASES[-2]):
        want = _hopper_run(algorithm, torch.bfloat16, kind, case)
        got = _hopper_run(algorithm, torch.bfloat16, kind, case, schedule=schedule, seed=seed, threads=2)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), case[0]


def test_implicit_gemm_refuses_what_it_cannot_do():
    """Exact float32 and odd channel counts (2-byte alignment) go past the tensor-core tiles;
    the FFMA tile takes float32 with any channel count, and nothing else."""
    x = torch.randn(1, 8, 5, 5)
    w = torch.randn(8, 8, 3, 3)
    odd_x, odd_w = torch.randn(1, 3, 5, 5), torch.randn(5, 3, 3, 3)
    with fastconv.testing.emulated_cuda():
        for algorithm in IGEMM:
            assert claims(algorithm, "conv2d", x.bfloat16(), w.bfloat16(), {}, grads=True, device="cuda")
            assert not claims(algorithm, "conv2d", x, w, {}, grads=True, device="cuda")
            assert not claims(algorithm, "conv2d", odd_x.bfloat16(), odd_w.bfloat16(), {}, grads=False, device="cuda")
        assert claims("igemm_ffma_64x64", "conv2d", x, w, {}, grads=True, device="cuda")
        assert claims("igemm_ffma_64x64", "conv2d", odd_x, odd_w, {}, grads=True, device="cuda")
        for dtype in (torch.bfloat16, torch.float16, torch.float64):
            assert not claims("igemm_ffma_64x64", "conv2d", x.to(dtype), w.to(dtype), {}, device="cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_exact_float32_takes_the_ffma_tile(dtype):
    """Unforced, float32 without TF32 goes to the FFMA tile before the direct kernel, odd
    channel counts too (4-byte copies); float16 with odd channels (2-byte runs) goes past
    every implicit-GEMM tile."""
    x = torch.randn(1, 3, 6, 6).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(5, 3, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
    with fastconv.testing.emulated_cuda(metrics=True):
        fastconv.testing.emulated_launches()
        F.conv2d(x, w, padding=1)
        kernels = [launch["kernel"] for launch in fastconv.testing.emulated_launches()]
    if dtype == torch.float32:
        assert kernels == ["igemm::gather_gemm_kernel"], kernels
    else:
        assert kernels and not any(k.startswith("igemm::") for k in kernels), kernels


@pytest.mark.parametrize("algorithm,dtype", [("igemm_64x64", torch.bfloat16), ("igemm_64x64", torch.float32),
                                             ("igemm_ffma_64x64", torch.float32)],
                         ids=["bfloat16", "tf32", "ffma"])
def test_implicit_gemm_wgrad_is_deterministic(algorithm, dtype, allow_tf32):
    """Split-K wgrad (many splits: a long reduction against a small dw) adds its partial sums
    in split order: the same bits under any schedule, and the float64 result within the
    dtype's rounding."""
    allow_tf32()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 8, 32, 32, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(8, 8, 3, 3, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(4, 8, 32, 32, generator=g).to(dtype)
    wd = w.double().requires_grad_()
    (want,) = torch.autograd.grad(torch.nn.functional.conv2d(x.double(), wd, padding=1), wd, grad.double())

    def run(**settings):
        wg = w.clone().requires_grad_()
        with fastconv.testing.emulated_cuda(**settings), fastconv.algorithms.force(algorithm):
            dw = torch.autograd.grad(F.conv2d(x, wg, padding=1), wg, grad)[0]
            kernels = [launch["kernel"] for launch in fastconv.testing.emulated_launches()]
        return dw, kernels

    first, kernels = run(metrics=True)
    assert "igemm::reduce_splits_kernel" in kernels, kernels  # the split-K path ran
    assert rel_err(first, want) <= {"bfloat16": 2e-2, "tf32": 2e-3, "ffma": 1e-5}[
        "bfloat16" if dtype == torch.bfloat16 else "ffma" if algorithm == "igemm_ffma_64x64" else "tf32"]
    assert torch.equal(first, run(schedule="shuffle", seed=5, threads=2)[0])
    assert torch.equal(first, run(schedule="reverse", seed=0)[0])


@pytest.mark.parametrize("algorithm", IGEMM + ["igemm_ffma_64x64"])
def test_implicit_gemm_memory_metrics(algorithm):
    """The emulator's view of the tiles: no bank conflicts on the shared reads (ldmatrix, or
    FFMA's 16-byte broadcasts) and the cp.async stores, in fprop and wgrad; and the FFMA tile's
    one-float copies, 8 consecutive channels of 4 pixels a warp, at 4 full sectors a request."""
    dtype = torch.float32 if algorithm == "igemm_ffma_64x64" else torch.bfloat16
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 32, 8, 8, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 32, 3, 3, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    with fastconv.testing.emulated_cuda(metrics=True), fastconv.algorithms.force(algorithm):
        fastconv.testing.emulated_launches()
        x.requires_grad_(False)
        wg = w.clone().requires_grad_()
        torch.autograd.grad(F.conv2d(x, wg, padding=1), wg, torch.ones(2, 64, 8, 8, dtype=dtype))
        launches = fastconv.testing.emulated_launches()
    (fprop,) = [l for l in launches if l["kernel"] == "igemm::gather_gemm_kernel"]
    (wgrad,) = [l for l in launches if l["kernel"] == "igemm::wgrad_kernel"]
    for launch in (fprop, wgrad):
        assert launch["shared_requests"] > 0 and launch["bank_conflicts"] == 0, launch
    if algorithm == "igemm_ffma_64x64":
        # Interior requests touch 4 sectors; zero-filled halo copies touch none or fewer.
        assert fprop["load_sectors"] <= 4 * fprop["load_requests"], fprop


@pytest.mark.parametrize("algorithm", IGEMM)
@pytest.mark.parametrize("kind,case", [("conv2d", IGEMM_CASES[2]), ("conv2d", IGEMM_CASES[5]), ("conv_transpose2d", IGEMM_TRANSPOSED[1])],
                         ids=["conv2d-5x5_s2", "conv2d-groups2", "conv_transpose2d-3x3_s2"])
def test_implicit_gemm_tf32(algorithm, kind, case, allow_tf32):
    """float32 on TF32 tensor cores only where torch allows TF32 (as cuDNN reads
    torch.backends.cudnn.allow_tf32): fprop and dgrad on both tiles, wgrad on the 64 x 64 tile
    (implicit_gemm/config.h, kTf32Wgrad); exact float32 goes elsewhere."""
    name, x_shape, w_shape, kw = case
    wgrad = algorithm == "igemm_64x64"
    g = torch.Generator().manual_seed(7)
    x = torch.randn(x_shape, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(w_shape, generator=g).contiguous(memory_format=torch.channels_last)
    with fastconv.testing.emulated_cuda():
        assert not claims(algorithm, kind, x, w, kw, device="cuda")
        allow_tf32()
        assert claims(algorithm, kind, x, w, kw, device="cuda")
        assert claims(algorithm, kind, x, w, kw, grads=True, device="cuda") == wgrad
    xr, wr = x.double().requires_grad_(), w.double().requires_grad_()
    ref = torch_call(kind, xr, wr, None, kw)
    grad = torch.randn(ref.shape, generator=g)
    gx_ref, gw_ref = torch.autograd.grad(ref, (xr, wr), grad.double())
    xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_(wgrad)
    with fastconv.testing.emulated_cuda(), fastconv.algorithms.force(algorithm):
        out = getattr(F, kind)(xi, wi, **kw)
        grads = torch.autograd.grad(out, (xi, wi) if wgrad else (xi,), grad)
    # TF32 keeps 10 mantissa bits of each operand: about 2^-11 relative per product.
    assert out.dtype == torch.float32
    assert 1e-6 < rel_err(out, ref) <= 2e-3, "forward"
    assert rel_err(grads[0], gx_ref) <= 2e-3, "input grad"
    if wgrad:
        assert 1e-6 < rel_err(grads[1], gw_ref) <= 2e-3, "weight grad"
