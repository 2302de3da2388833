"""fastconv's float32 GEMM on AVX-512F (csrc/cpu/sgemm.h): the kernel against float64 over
every edge of its blocking, the operand layouts the algorithms hand it, the mode switch, its
refusals, and the GEMM-based convolution algorithms forced onto each GEMM, forward and backward."""

import pytest
import torch

import fastconv
import fastconv.functional as F

ops = torch.ops.fastconv

needs_avx512 = pytest.mark.skipif(
    not ops._cpu_sgemm_supported(), reason="this CPU lacks AVX-512F, which fastconv's sgemm needs")


@pytest.fixture(autouse=True)
def mode_back_after():
    before = ops._cpu_sgemm_mode()
    yield
    ops._cpu_sgemm_set_mode(before)


def operand(rows, cols, transposed, gen):
    """A [rows, cols] float32 matrix, stored row-major or as the transpose of a row-major one."""
    if transposed:
        return torch.randn(cols, rows, generator=gen).t()
    return torch.randn(rows, cols, generator=gen)


# (M, K, N): one micro-tile, its every remainder (rows mod 6, columns mod 16 and 64), reductions
# across the 128-long slices, blocks of 96 x 256 and past them, and degenerate sizes.
SHAPES = [(1, 1, 1), (6, 128, 64), (7, 129, 65), (5, 3, 17), (13, 300, 31), (96, 256, 256),
          (97, 257, 257), (200, 513, 33), (64, 64, 3136), (1, 400, 1), (100, 1, 50)]


@needs_avx512
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("a_t", [False, True], ids=["a", "aT"])
@pytest.mark.parametrize("b_t", [False, True], ids=["b", "bT"])
@pytest.mark.parametrize("accumulate", [False, True], ids=["set", "add"])
def test_kernel_matches_float64(shape, a_t, b_t, accumulate):
    M, K, N = shape
    gen = torch.Generator().manual_seed(M * 7 + K * 3 + N)
    a, b = operand(M, K, a_t, gen), operand(K, N, b_t, gen)
    c0 = torch.randn(M, N, generator=gen)
    c = c0.clone()
    ops._cpu_sgemm(a, b, c, accumulate)
    want = a.double() @ b.double() + (c0.double() if accumulate else 0)
    torch.testing.assert_close(c.double(), want, rtol=2e-5, atol=2e-5 * (K ** 0.5))


@needs_avx512
def test_kernel_writes_only_its_block_of_a_wider_c():
    """c a column block of a bigger matrix (row stride past its width), as the grouped products
    write: nothing outside the block changes, NaN there included."""
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(11, 40, generator=gen), torch.randn(40, 21, generator=gen)
    big = torch.full((11, 50), float("nan"))
    block = big[:, 7:28]
    ops._cpu_sgemm(a, b, block, False)  # not accumulating: the NaN it starts from must not leak
    torch.testing.assert_close(block.double(), a.double() @ b.double(), rtol=2e-5, atol=1e-4)
    assert torch.isnan(big[:, :7]).all() and torch.isnan(big[:, 28:]).all()


@needs_avx512
@pytest.mark.parametrize("b_t", [False, True], ids=["b", "bT"])
def test_batched_kernel(b_t):
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(3, 20, 70, generator=gen)
    b = torch.randn(3, 33, 70, generator=gen).transpose(1, 2) if b_t else torch.randn(3, 70, 33, generator=gen)
    c0 = torch.randn(3, 20, 33, generator=gen)
    c = c0.clone()
    ops._cpu_sgemm(a, b, c, True)
    torch.testing.assert_close(c.double(), c0.double() + a.double() @ b.double(), rtol=2e-5, atol=1e-4)


@needs_avx512
def test_zero_length_reduction_sets_or_keeps_c():
    a, b = torch.empty(4, 0), torch.empty(0, 5)
    c = torch.ones(4, 5)
    ops._cpu_sgemm(a, b, c, True)
    assert torch.equal(c, torch.ones(4, 5))
    ops._cpu_sgemm(a, b, c, False)
    assert torch.equal(c, torch.zeros(4, 5))


@needs_avx512
def test_kernel_refuses_bad_operands_by_name():
    a, b, c = torch.randn(4, 5), torch.randn(5, 6), torch.empty(4, 6)
    with pytest.raises(TypeError, match="float32"):
        ops._cpu_sgemm(a.double(), b.double(), c.double(), False)
    with pytest.raises(ValueError, match="do not chain"):
        ops._cpu_sgemm(a, torch.randn(4, 6), c, False)
    with pytest.raises(ValueError, match="contiguous"):
        ops._cpu_sgemm(a, b, torch.empty(6, 4).t(), False)
    with pytest.raises(ValueError, match="2-D or 3-D"):
        ops._cpu_sgemm(a[None, None], b[None, None], c[None, None], False)


def test_mode_switch_and_its_refusal():
    ops._cpu_sgemm_set_mode("aten")
    assert ops._cpu_sgemm_mode() == "aten" and not ops._cpu_sgemm_active()
    ops._cpu_sgemm_set_mode("own")
    assert ops._cpu_sgemm_mode() == "own"
    assert ops._cpu_sgemm_active() == ops._cpu_sgemm_supported()
    ops._cpu_sgemm_set_mode("auto")
    assert ops._cpu_sgemm_mode() == "auto"
    with pytest.raises(ValueError, match="'auto', 'own' or 'aten'"):
        ops._cpu_sgemm_set_mode("mkl")


def test_auto_mode_picks_by_vendor():
    """auto runs fastconv's kernel on AMD's AVX-512 CPUs only, where MKL runs its AVX2 code."""
    ops._cpu_sgemm_set_mode("auto")
    vendor = ""
    try:
        with open("/proc/cpuinfo") as f:
            vendor = next((line.split(":")[1].strip() for line in f if line.startswith("vendor_id")), "")
    except OSError:
        pytest.skip("no /proc/cpuinfo to read the vendor from")
    assert ops._cpu_sgemm_active() == (ops._cpu_sgemm_supported() and vendor == "AuthenticAMD")


# (input, weight, stride, padding, groups, algorithm): each GEMM-based algorithm, with groups
# where it takes them.
CONV_CASES = [
    ((2, 40, 9, 11), (24, 40, 1, 1), 1, 0, 1, "gemm_1x1"),
    ((2, 48, 7, 7), (36, 16, 1, 1), 1, 0, 3, "gemm_1x1"),
    ((2, 13, 10, 9), (20, 13, 3, 3), 1, 1, 1, "im2col_gemm"),
    ((2, 32, 9, 9), (32, 16, 3, 3), 2, 1, 2, "im2col_gemm"),
    ((1, 7, 15, 15), (70, 7, 5, 5), 2, 2, 1, "im2col_gemm"),
    ((2, 24, 12, 12), (40, 24, 3, 3), 1, 1, 1, "winograd_4x4"),
    ((2, 16, 9, 10), (16, 8, 3, 3), 1, 1, 2, "winograd_2x2"),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[5]}-{c[1][0]}x{c[1][1]}k{c[1][2]}g{c[4]}")
@pytest.mark.parametrize("gemm", ["own", "aten"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_gemm_algorithms_on_each_gemm(case, gemm, channels_last):
    if gemm == "own" and not ops._cpu_sgemm_supported():
        pytest.skip("this CPU lacks AVX-512F, which fastconv's sgemm needs")
    xs, ws, stride, pad, groups, algo = case
    gen = torch.Generator().manual_seed(3)
    x64 = torch.randn(xs, generator=gen, dtype=torch.float64)
    w64 = torch.randn(ws, generator=gen, dtype=torch.float64)
    b64 = torch.randn(ws[0], generator=gen, dtype=torch.float64)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x64.float().to(memory_format=fmt).requires_grad_()
    w = w64.float().requires_grad_()
    b = b64.float().requires_grad_()
    ops._cpu_sgemm_set_mode(gemm)
    before = ops._cpu_sgemm_products()
    with fastconv.algorithms.force(algo):
        y = F.conv2d(x, w, b, stride=stride, padding=pad, groups=groups)
        gy = torch.randn(y.shape, generator=gen)
        gx, gw, gb = torch.autograd.grad(y, (x, w, b), gy)
    ran = ops._cpu_sgemm_products() - before
    # fprop, dgrad and wgrad each run at least one product
    assert ran >= 3 if gemm == "own" else ran == 0
    x64.requires_grad_(), w64.requires_grad_(), b64.requires_grad_()
    y64 = torch.nn.functional.conv2d(x64, w64, b64, stride=stride, padding=pad, groups=groups)
    rx, rw, rb = torch.autograd.grad(y64, (x64, w64, b64), gy.double())
    for got, want in ((y, y64), (gx, rx), (gw, rw), (gb, rb)):
        scale = want.abs().max().item() + 1
        torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=2e-5 * scale)


def test_hiding_avx512f_turns_the_kernel_off(monkeypatch):
    """FASTCONV_CPU_HIDE=avx512f: the kernel counts as missing, so products go to ATen and the
    direct call refuses, naming the feature."""
    ops._cpu_sgemm_set_mode("own")
    monkeypatch.setenv("FASTCONV_CPU_HIDE", "avx512f")
    assert not ops._cpu_sgemm_supported() and not ops._cpu_sgemm_active()
    with pytest.raises(ValueError, match="AVX-512F"):
        ops._cpu_sgemm(torch.randn(2, 3), torch.randn(3, 4), torch.empty(2, 4), False)
    before = ops._cpu_sgemm_products()
    x, w = torch.randn(1, 8, 5, 5), torch.randn(6, 8, 1, 1)
    torch.testing.assert_close(F.conv2d(x, w), torch.nn.functional.conv2d(x, w))
    assert ops._cpu_sgemm_products() == before


@needs_avx512
@pytest.mark.parametrize("hide,hidden", [("avx512fp16", False), ("avx512bf16", False),
                                         ("avx512bf16,avx512f", True), ("avx512f avx512bf16", True)])
def test_hiding_names_whole_features(hide, hidden, monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_HIDE", hide)
    assert ops._cpu_sgemm_supported() == (not hidden)


@needs_avx512
@pytest.mark.parametrize("M,N", [(1, 1), (8, 8), (13, 29), (64, 70), (100, 3)])
def test_transposed_copy(M, N):
    m = torch.randn(3, M, N)
    assert torch.equal(ops._cpu_transposed_copy(m), m.transpose(1, 2).contiguous())
    assert torch.equal(ops._cpu_transposed_copy(m[:, :, : N // 2 + 1]),
                       m[:, :, : N // 2 + 1].transpose(1, 2).contiguous())


# Channels-last depthwise fprop (multiplier 1): the AVX-512 row kernel and the plain loop it
# stands beside, against float64. Pixel blocks of 8 inside and across the borders, channel runs of
# 64 and 16 and their remainders, strides, dilation, 5x5, and the fused epilogue.
DEPTHWISE = [  # (N, C, H, W, k, stride, padding, dilation)
    (2, 32, 12, 19, 3, 1, 1, 1),
    (1, 21, 9, 9, 3, 2, 1, 1),
    (2, 48, 14, 14, 5, 1, 2, 1),
    (1, 7, 11, 23, 3, 1, 2, 2),
    (1, 16, 4, 3, 3, 1, 1, 1),
    (1, 80, 7, 13, 3, 1, 1, 1),   # one block of 64 channels, then 16
    (1, 117, 5, 15, 3, 1, 1, 1),  # 64, 32, 16, then 5 masked
    (1, 64, 6, 20, 3, 2, 1, 1),
    (1, 128, 5, 9, 5, 1, 2, 2),
    (1, 64, 128, 128, 3, 1, 1, 1),  # a 4 MiB output: streaming stores
]


@pytest.mark.parametrize("case", DEPTHWISE, ids=lambda c: "C{}_{}x{}_k{}s{}d{}".format(c[1], c[2], c[3], c[4], c[5], c[7]))
@pytest.mark.parametrize("hidden", [False, True], ids=["avx512", "plain"])
def test_depthwise_channels_last_row_kernels(case, hidden, monkeypatch):
    if not hidden and not ops._cpu_sgemm_supported():
        pytest.skip("this CPU lacks AVX-512F, which the depthwise row kernel needs")
    if hidden:
        monkeypatch.setenv("FASTCONV_CPU_HIDE", "avx512f")
    N, C, H, W, k, stride, pad, dil = case
    gen = torch.Generator().manual_seed(C)
    x64 = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64)
    w64 = torch.randn(C, 1, k, k, generator=gen, dtype=torch.float64)
    b64 = torch.randn(C, generator=gen, dtype=torch.float64)
    x = x64.float().to(memory_format=torch.channels_last)
    kw = dict(stride=stride, padding=pad, dilation=dil, groups=C)
    want = torch.nn.functional.conv2d(x64, w64, b64, **kw)
    res64 = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    res = res64.float().to(memory_format=torch.channels_last)
    with fastconv.algorithms.force("depthwise"):
        got = F.conv2d(x, w64.float(), b64.float(), **kw)
        fused = {act: F.conv2d_fused(x, w64.float(), b64.float(), res, activation=act, **kw)
                 for act in ("relu", "relu6", "silu")}
        plain = F.conv2d_fused(x, w64.float(), None, activation="none", **kw)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain.double(), want - b64.view(1, -1, 1, 1), rtol=1e-5, atol=1e-5)
    refs = {"relu": torch.relu, "relu6": lambda t: t.clamp(0, 6), "silu": torch.nn.functional.silu}
    for act, out in fused.items():
        torch.testing.assert_close(out.double(), refs[act](want + res64), rtol=1e-5, atol=1e-5)


# Channels-last depthwise dgrad (stride 1: the row kernel on the turned filter) and 3x3 wgrad (the
# nine taps' sums in registers) on AVX-512F, and the NCHW planes they stand beside, against
# float64: the fprop cases (strides 2 and 5x5 filters go to the planes), padding past
# ·dilation, per-side padding, and a 4 MiB dx whose stores stream.
BACKWARD = DEPTHWISE + [  # (N, C, H, W, k, stride, padding (top, bottom, left, right), dilation)
    (1, 33, 8, 8, 3, 1, (3, 3, 3, 3), 1),
    (2, 40, 9, 12, 3, 1, (0, 2, 1, 0), 2),
    (2, 24, 10, 7, 3, 3, (1, 0, 2, 1), 1),
]


@pytest.mark.parametrize("case", BACKWARD, ids=lambda c: "C{}_{}x{}_k{}s{}p{}d{}".format(
    c[1], c[2], c[3], c[4], c[5], "-".join(map(str, c[6])) if isinstance(c[6], tuple) else c[6], c[7]))
@pytest.mark.parametrize("hidden", [False, True], ids=["avx512", "plain"])
def test_depthwise_channels_last_backward(case, hidden, monkeypatch):
    if not hidden and not ops._cpu_sgemm_supported():
        pytest.skip("this CPU lacks AVX-512F, which the channels-last depthwise backward needs")
    if hidden:
        monkeypatch.setenv("FASTCONV_CPU_HIDE", "avx512f")
    N, C, H, W, k, stride, pad, dil = case
    pads = list(pad) if isinstance(pad, tuple) else [pad] * 4
    gen = torch.Generator().manual_seed(C + k)
    x64 = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64, requires_grad=True)
    w64 = torch.randn(C, 1, k, k, generator=gen, dtype=torch.float64, requires_grad=True)
    padded = torch.nn.functional.pad(x64, (pads[2], pads[3], pads[0], pads[1]))
    y64 = torch.nn.functional.conv2d(padded, w64, stride=stride, dilation=dil, groups=C)
    dy64 = torch.randn(y64.shape, generator=gen, dtype=torch.float64)
    want_dx, want_dw = torch.autograd.grad(y64, (x64, w64), dy64)
    x = x64.detach().float().to(memory_format=torch.channels_last)
    dy = dy64.float().to(memory_format=torch.channels_last)
    with fastconv.algorithms.force("depthwise"):
        dx, dw, _ = ops.conv2d_backward(dy, x, w64.detach().float(), [stride] * 2, pads, [dil] * 2, C,
                                        [True, True, False])
    assert dx.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(dx.double(), want_dx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dw.double(), want_dw, rtol=1e-5, atol=1e-4 * max(1.0, want_dw.abs().max().item()))


# The padded-plane fprop of grouped_planes and NCHW depthwise (stride 1): the AVX-512 kernel
# (4 outputs of a group at once, then one at a time) and the plain loops, against float64, with
# the fused epilogue. (N, C, H, W, K, groups, k, padding, dilation, algorithm)
PLANES = [
    (2, 12, 9, 11, 24, 4, 3, 1, 1, "grouped_planes"),   # 3 in, 6 out per group: 4 + 1 + 1
    (1, 64, 7, 7, 64, 2, 3, 1, 1, "grouped_planes"),    # 32 in per group
    (1, 16, 10, 13, 16, 2, 5, 2, 2, "grouped_planes"),
    (2, 24, 15, 15, 24, 24, 3, 1, 1, "depthwise"),
    (1, 8, 12, 9, 16, 8, 3, 2, 2, "depthwise"),         # multiplier 2
    (1, 5, 40, 40, 5, 5, 7, 3, 1, "depthwise"),
]


@pytest.mark.parametrize("case", PLANES, ids=lambda c: "{}-C{}K{}g{}k{}d{}".format(c[9], c[1], c[4], c[5], c[6], c[8]))
@pytest.mark.parametrize("hidden", [False, True], ids=["avx512", "plain"])
def test_padded_plane_fprop_kernels(case, hidden, monkeypatch):
    if not hidden and not ops._cpu_sgemm_supported():
        pytest.skip("this CPU lacks AVX-512F, which the padded-plane kernel needs")
    if hidden:
        monkeypatch.setenv("FASTCONV_CPU_HIDE", "avx512f")
    N, C, H, W, K, groups, k, pad, dil, algo = case
    gen = torch.Generator().manual_seed(K + C)
    x64 = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64)
    w64 = torch.randn(K, C // groups, k, k, generator=gen, dtype=torch.float64)
    b64 = torch.randn(K, generator=gen, dtype=torch.float64)
    kw = dict(padding=pad, dilation=dil, groups=groups)
    want = torch.nn.functional.conv2d(x64, w64, b64, **kw)
    res64 = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    with fastconv.algorithms.force(algo):
        got = F.conv2d(x64.float(), w64.float(), b64.float(), **kw)
        relu6 = F.conv2d_fused(x64.float(), w64.float(), b64.float(), res64.float(), activation="relu6", **kw)
        silu = F.conv2d_fused(x64.float(), w64.float(), None, activation="silu", **kw)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(relu6.double(), (want + res64).clamp(0, 6), rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(silu.double(), torch.nn.functional.silu(want - b64.view(1, -1, 1, 1)),
                               rtol=1e-5, atol=2e-5)


# The padded-plane dgrad (stride 1): on AVX-512F, fprop's kernel over the turned, group-transposed
# filters; the plain loop otherwise and where the turned padding ·dilation - pad would be
# negative. Against float64, float32 and bfloat16 (one rounding at the end).
PLANES_DGRAD = [c[:7] + ((c[7],) * 4,) + c[8:] for c in PLANES] + [
    (2, 32, 9, 9, 48, 4, 3, (0, 2, 1, 0), 2, "grouped_planes"),
    (1, 16, 8, 8, 16, 4, 3, (3, 3, 3, 3), 1, "grouped_planes"),  # pad > R - 1: the loop
    (2, 16, 10, 11, 32, 16, 3, (1, 0, 0, 1), 1, "depthwise"),
]


@pytest.mark.parametrize("case", PLANES_DGRAD,
                         ids=lambda c: "{}-C{}K{}g{}k{}p{}d{}".format(c[9], c[1], c[4], c[5], c[6], "-".join(map(str, c[7])), c[8]))
@pytest.mark.parametrize("hidden", [False, True], ids=["avx512", "plain"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padded_plane_dgrad_kernels(case, hidden, dtype, monkeypatch):
    if not hidden and not ops._cpu_sgemm_supported():
        pytest.skip("this CPU lacks AVX-512F, which the padded-plane kernel needs")
    if hidden:
        monkeypatch.setenv("FASTCONV_CPU_HIDE", "avx512f")
    N, C, H, W, K, groups, k, pad, dil, algo = case
    gen = torch.Generator().manual_seed(K + C + k)
    x64 = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64, requires_grad=True)
    w64 = torch.randn(K, C // groups, k, k, generator=gen, dtype=torch.float64)
    y64 = torch.nn.functional.conv2d(torch.nn.functional.pad(x64, (pad[2], pad[3], pad[0], pad[1])),
                                     w64, dilation=dil, groups=groups)
    dy64 = torch.randn(y64.shape, generator=gen, dtype=torch.float64)
    dy = dy64.to(dtype)
    want, = torch.autograd.grad(y64, x64, dy.double())
    with fastconv.algorithms.force(algo):
        dx, _, _ = ops.conv2d_backward(dy, x64.detach().to(dtype), w64.to(dtype), [1, 1], list(pad),
                                       [dil, dil], groups, [True, False, False])
    # The filter's own rounding to bfloat16 is part of both sides: compare with the rounded one.
    if dtype is torch.bfloat16:
        want, = torch.autograd.grad(torch.nn.functional.conv2d(
            torch.nn.functional.pad(x64, (pad[2], pad[3], pad[0], pad[1])), w64.to(dtype).double(),
            dilation=dil, groups=groups), x64, dy.double())
    tol = dict(rtol=1e-5, atol=2e-5) if dtype is torch.float32 else dict(rtol=8e-3, atol=8e-3 * want.abs().max().item())
    torch.testing.assert_close(dx.double(), want, **tol)


@pytest.mark.parametrize("case", PLANES_DGRAD,
                         ids=lambda c: "{}-C{}K{}g{}k{}p{}d{}".format(c[9], c[1], c[4], c[5], c[6], "-".join(map(str, c[7])), c[8]))
@pytest.mark.parametrize("hidden", [False, True], ids=["avx512", "plain"])
def test_padded_plane_wgrad_kernels(case, hidden, monkeypatch):
    """The padded-plane wgrad: on AVX-512F nine taps' sums at once (passes of nine for 5x5 and
    7x7), the last vector masked; the plain loop otherwise. Against float64."""
    if not hidden and not ops._cpu_sgemm_supported():
        pytest.skip("this CPU lacks AVX-512F, which the padded-plane kernel needs")
    if hidden:
        monkeypatch.setenv("FASTCONV_CPU_HIDE", "avx512f")
    N, C, H, W, K, groups, k, pad, dil, algo = case
    gen = torch.Generator().manual_seed(K + C + k + 1)
    x64 = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64)
    w64 = torch.randn(K, C // groups, k, k, generator=gen, dtype=torch.float64, requires_grad=True)
    y64 = torch.nn.functional.conv2d(torch.nn.functional.pad(x64, (pad[2], pad[3], pad[0], pad[1])),
                                     w64, dilation=dil, groups=groups)
    dy64 = torch.randn(y64.shape, generator=gen, dtype=torch.float64)
    want, = torch.autograd.grad(y64, w64, dy64)
    with fastconv.algorithms.force(algo):
        _, dw, _ = ops.conv2d_backward(dy64.float(), x64.float(), w64.detach().float(), [1, 1], list(pad),
                                       [dil, dil], groups, [False, True, False])
    torch.testing.assert_close(dw.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("algorithm,groups", [("grouped_planes", 4), ("depthwise", 16)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("hidden", [False, True], ids=["avx512", "plain"])
def test_turned_dgrad_covers_output_padding(algorithm, groups, layout, hidden, monkeypatch):
    """conv_transpose2d's forward is dgrad; its output_padding adds rows and columns of dx that
    no output reaches, which the turned problem must pad with zeros, not read past."""
    if hidden:
        monkeypatch.setenv("FASTCONV_CPU_HIDE", "avx512f")
    gen = torch.Generator().manual_seed(7)
    x64 = torch.randn(2, 16, 6, 5, generator=gen, dtype=torch.float64)
    w64 = torch.randn(16, 16 // groups, 3, 3, generator=gen, dtype=torch.float64)
    for kw in (dict(padding=1, output_padding=(0, 1), dilation=(1, 2)), dict(padding=(2, 0), dilation=2)):
        want = torch.nn.functional.conv_transpose2d(x64, w64, groups=groups, **kw)
        with fastconv.algorithms.force(algorithm):
            got = F.conv_transpose2d(x64.float().contiguous(memory_format=layout), w64.float(),
                                     groups=groups, **kw)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=2e-5)


def test_grouped_planes_wgrad_rule_takes_16_channels_on_wide_planes(monkeypatch):
    avx512 = ops._cpu_sgemm_supported()
    pick = lambda C, H, groups: fastconv.algorithms.chosen(
        "wgrad", torch.randn(2, C, H, H), torch.randn(C, C // groups, 3, 3), padding=(1, 1, 1, 1), groups=groups)
    assert pick(512, 14, 32) == ("grouped_planes" if avx512 else "im2col_gemm")  # 16 a group, 196 pixels
    assert pick(512, 7, 32) == "im2col_gemm"  # 49 pixels
    assert pick(256, 7, 32) == "grouped_planes"  # 8 a group: always
    monkeypatch.setenv("FASTCONV_CPU_HIDE", "avx512f")
    assert pick(512, 14, 32) == "im2col_gemm"


@pytest.mark.parametrize("direction", ["fprop", "dgrad"])
def test_grouped_planes_rule_takes_32_channels_on_avx512(direction, monkeypatch):
    x, w = torch.randn(2, 1024, 7, 7), torch.randn(1024, 32, 3, 3)
    pick = lambda: fastconv.algorithms.chosen(direction, x, w, padding=(1, 1, 1, 1), groups=32)
    assert pick() == ("grouped_planes" if ops._cpu_sgemm_supported() else "im2col_gemm")
    # dgrad's kernel takes the group's outputs as inputs: 64 of them are past the rule.
    wide = torch.randn(2048, 32, 3, 3)
    assert fastconv.algorithms.chosen(direction, x, wide, padding=(1, 1, 1, 1), groups=32) == (
        "grouped_planes" if direction == "fprop" and ops._cpu_sgemm_supported() else "im2col_gemm")
    monkeypatch.setenv("FASTCONV_CPU_HIDE", "avx512f")
    assert pick() == "im2col_gemm"


# direct_blocked's fprop: the AVX-512 kernels (NCHW: 8 filters x 48 columns from the column
# phases; channels-last: 6 pixels x 64 filters, then 8 x 48, 12 x 32, 16 x 16) and the plain
# loop, against float64, with the fused epilogue. Filter counts that leave partial blocks of 8,
# 16 and 64; output rows that end inside a vector and inside a pixel block; strides 1-4 with
# dilation and uneven padding; one output past 16 MiB, whose stores stream.
# (N, C, H, W, K, kernel, stride, padding (top, bottom, left, right), dilation)
BLOCKED = [
    (2, 3, 30, 33, 32, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),    # MobileNet's stem: 16 x 2 filters
    (1, 3, 20, 90, 13, (7, 7), (2, 2), (3, 3, 3, 3), (1, 2)),    # 13 filters: 8 + 5, 16 masked
    (1, 3, 40, 41, 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),    # 41 columns: 6 x 6 + 5 pixels
    (1, 3, 50, 227, 96, (11, 11), (4, 4), (2, 2, 2, 2), (1, 1)),  # AlexNet's stem: 64 + 32 filters
    (1, 5, 17, 19, 21, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
    (1, 16, 12, 28, 80, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),   # 64 + 16 filters
    (1, 4, 9, 70, 50, (3, 2), (3, 1), (0, 2, 1, 0), (2, 3)),     # 50 of 64 filters masked, uneven
    (1, 6, 15, 26, 112, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),   # 64 + 48 filters (8 x 48)
    (1, 3, 256, 256, 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # a 16 MiB output: streamed
]


@pytest.mark.parametrize("case", BLOCKED, ids=lambda c: "C{}K{}_{}x{}_k{}s{}".format(c[1], c[4], c[2], c[3], c[5][0], c[6][0]))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("hidden", [False, True], ids=["avx512", "plain"])
def test_direct_blocked_fprop_kernels(case, channels_last, hidden, monkeypatch):
    if not hidden and not ops._cpu_sgemm_supported():
        pytest.skip("this CPU lacks AVX-512F, which direct_blocked's AVX-512 kernels need")
    if hidden:
        monkeypatch.setenv("FASTCONV_CPU_HIDE", "avx512f")
    N, C, H, W, K, kernel, stride, pad, dil = case
    if hidden and H * W > 20000:
        pytest.skip("the plain loop is covered by the smaller cases; this one is for the streamed stores")
    gen = torch.Generator().manual_seed(K * C)
    x64 = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64)
    w64 = torch.randn(K, C, *kernel, generator=gen, dtype=torch.float64)
    b64 = torch.randn(K, generator=gen, dtype=torch.float64)
    padded = torch.nn.functional.pad(x64, (pad[2], pad[3], pad[0], pad[1]))
    want = torch.nn.functional.conv2d(padded, w64, b64, stride=stride, dilation=dil)
    res64 = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, res = x64.float().contiguous(memory_format=fmt), res64.float().contiguous(memory_format=fmt)
    kw = dict(stride=stride, padding=pad, dilation=dil)
    w, b = w64.float(), b64.float()
    with fastconv.algorithms.force("direct_blocked"):
        got = F.conv2d(x, w, b, **kw)
        relu = F.conv2d_fused(x, w, b, res, activation="relu", **kw)
        silu = F.conv2d_fused(x, w, None, activation="silu", **kw)
    assert got.is_contiguous(memory_format=fmt)
    tol = dict(rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got.double(), want, **tol)
    torch.testing.assert_close(relu.double(), torch.relu(want + res64), **tol)
    torch.testing.assert_close(silu.double(), torch.nn.functional.silu(want - b64.view(1, -1, 1, 1)), **tol)


# im2col's NCHW fprop in per-thread tiles (fastconv's GEMM on): tiles that start and end inside
# output rows, strides 1, 2 (the even-lane copy) and 3, dilation, groups, and few enough tiles
# that the filters are split into parts; against the whole-batch path (ATen's GEMM) and float64.
# (input, weight, stride, padding, dilation, groups)
THREAD_TILES = [
    ((2, 128, 28, 28), (128, 128, 3, 3), 1, 1, 1, 1),   # 112 pixels a tile: four rows each
    ((1, 100, 19, 23), (24, 100, 3, 3), 1, 1, 1, 1),    # tiles that cut output rows
    ((2, 64, 33, 31), (40, 64, 3, 3), 2, 1, 1, 1),      # stride 2: the even-lane copy
    ((1, 24, 37, 41), (16, 24, 5, 5), 3, 2, 1, 1),      # stride 3: the element copy
    ((1, 16, 20, 20), (32, 8, 3, 3), 1, 2, 2, 2),       # dilation, two groups
    ((1, 256, 5, 5), (384, 256, 3, 3), 1, 1, 1, 1),     # one tile: the filters in parts
]


def thread_tile_operands(case, seed):
    """float64 x, w, bias and residual for a THREAD_TILES case, the reference output, and the
    convolution's keyword arguments."""
    xs, ws, stride, pad, dil, groups = case
    gen = torch.Generator().manual_seed(seed)
    x64 = torch.randn(xs, generator=gen, dtype=torch.float64)
    w64 = torch.randn(ws, generator=gen, dtype=torch.float64)
    b64 = torch.randn(ws[0], generator=gen, dtype=torch.float64)
    kw = dict(stride=stride, padding=pad, dilation=dil, groups=groups)
    want = torch.nn.functional.conv2d(x64, w64, b64, **kw)
    res64 = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    return x64, w64, b64, res64, want, kw


@needs_avx512
@pytest.mark.parametrize("case", THREAD_TILES, ids=lambda c: "C{}K{}_{}x{}s{}g{}".format(c[0][1], c[1][0], c[0][2], c[0][3], c[2], c[5]))
def test_im2col_thread_tiles(case):
    x64, w64, b64, res64, want, kw = thread_tile_operands(case, seed=case[1][0])
    x, w, b, res = x64.float(), w64.float(), b64.float(), res64.float()
    outs = {}
    for gemm in ("own", "aten"):
        ops._cpu_sgemm_set_mode(gemm)
        before = ops._cpu_sgemm_products()
        with fastconv.algorithms.force("im2col_gemm"):
            outs[gemm] = (F.conv2d(x, w, b, **kw), F.conv2d_fused(x, w, b, res, activation="relu", **kw))
        assert (ops._cpu_sgemm_products() > before) == (gemm == "own")
    scale = want.abs().max().item()
    for got, fused in outs.values():
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=2e-6 * scale)
        torch.testing.assert_close(fused.double(), torch.relu(want + res64), rtol=1e-5, atol=2e-6 * scale)


def test_winograd_rule_leaves_few_output_channels_to_im2col():
    """fprop with under 64 output channels (DenseNet's growth layers) and under 4096 output
    pixels goes to im2col, whose product costs less there than Winograd's input transforms;
    dgrad, 64 outputs, and a 56x56 image keep Winograd. So do few tiles with partial ones
    (13x13), where 14x14 keeps Winograd."""
    def pick(k, size=28, d="fprop"):
        x = torch.randn(2, 128, size, size)
        return fastconv.algorithms.chosen(d, x, torch.randn(k, 128, 3, 3), padding=(1, 1, 1, 1))
    assert pick(32) == "im2col_gemm"
    assert pick(32, d="dgrad").startswith("winograd")
    assert pick(64).startswith("winograd")
    assert pick(32, size=56).startswith("winograd")
    assert pick(128, size=13) == "im2col_gemm"
    assert pick(128, size=14) == "winograd_2x2"
    assert pick(128, size=13, d="dgrad").startswith("winograd")


# The channels-last im2col fprop in per-thread tiles: pixel runs that end inside an image and
# across images, groups, strides; against ATen's GEMM on the whole-batch path and float64.
@needs_avx512
@pytest.mark.parametrize("case", THREAD_TILES, ids=lambda c: "C{}K{}_{}x{}s{}g{}".format(c[0][1], c[1][0], c[0][2], c[0][3], c[2], c[5]))
def test_im2col_thread_tiles_channels_last(case):
    x64, w64, b64, res64, want, kw = thread_tile_operands(case, seed=case[1][0] + 1)
    cl = torch.channels_last
    x, res = x64.float().contiguous(memory_format=cl), res64.float().contiguous(memory_format=cl)
    w, b = w64.float(), b64.float()
    scale = want.abs().max().item()
    for gemm in ("own", "aten"):
        ops._cpu_sgemm_set_mode(gemm)
        before = ops._cpu_sgemm_products()
        with fastconv.algorithms.force("im2col_gemm"):
            got = F.conv2d(x, w, b, **kw)
            fused = F.conv2d_fused(x, w, b, res, activation="silu", **kw)
        assert (ops._cpu_sgemm_products() > before) == (gemm == "own")
        assert got.is_contiguous(memory_format=cl) and fused.is_contiguous(memory_format=cl)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=2e-6 * scale)
        torch.testing.assert_close(fused.double(), torch.nn.functional.silu(want + res64), rtol=1e-5, atol=2e-6 * scale)
