"""gemm_bf16dot, the AVX512-BF16 (VDPBF16PS) bf16 fprop: results against the float64 reference
over the case table, both layouts, with and without bias; the shapes that leave partial
register blocks; the fallback when the CPU feature is hidden; and errors on bad input."""

import pytest
import torch

import fastconv
from conftest import TOLERANCE, operator_call, rel_err
from conv_cases import CONV2D_CASES
from test_conv import reference

F = torch.nn.functional
ALGO = "gemm_bf16dot"
HIDE = "FASTCONV_CPU_HIDE"
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def claimed(x, w, kw):
    x4, w4, stride, padding, dilation, groups, _ = operator_call("conv2d", x, w, kw)
    return fastconv.algorithms.can_implement(ALGO, "fprop", x4, w4, stride, padding, dilation, groups)


def has_feature():
    return claimed(torch.empty(1, 1, 1, 1, dtype=torch.bfloat16), torch.empty(1, 1, 1, 1, dtype=torch.bfloat16), {})


needs_feature = pytest.mark.skipif(not has_feature(), reason="this CPU has no AVX512-BF16")


def check(x_shape, w_shape, kw, layout, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=g).bfloat16().contiguous(memory_format=LAYOUTS[layout])
    w = torch.randn(w_shape, generator=g).bfloat16()
    b = torch.randn(w_shape[0], generator=g).bfloat16() if bias else None
    ref = reference("conv2d", x, w, b, kw)
    with fastconv.algorithms.force(ALGO):
        out = fastconv.functional.conv2d(x, w, b, **kw)
    assert out.dtype == torch.bfloat16
    assert out.shape == ref.shape
    assert rel_err(out, ref) <= TOLERANCE[torch.bfloat16]
    return out


CASES = [c for c in CONV2D_CASES if c[0] not in ("batch_zero", "unbatched", "unbatched_depthwise")]


@needs_feature
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_matches_float64_reference(case, layout, bias):
    _, x_shape, w_shape, kw = case
    kw = {k: v for k, v in kw.items() if k != "bias"}
    check(x_shape, w_shape, kw, layout, bias and case[2][0] > 0)


# Filters (rows or columns of the block), pixels and reduction lengths that are no multiple
# of the 6 x 64 register block, of the 96-pair reduction block or of the 48-row task, and an
# odd reduction (the zero pair).
ODD = [
    ((1, 1, 5, 5), (1, 1, 1, 1), {}),
    ((2, 5, 7, 9), (13, 5, 3, 3), {"padding": 1}),
    ((1, 40, 9, 11), (97, 40, 3, 3), {"padding": 1}),            # 180 pairs: two reduction blocks
    ((3, 7, 13, 5), (70, 7, 3, 1), {"stride": (2, 1), "padding": (1, 0)}),
    ((1, 64, 17, 19), (65, 64, 1, 1), {}),                         # 1x1: 1 pixel row past a panel
    ((2, 66, 8, 8), (129, 22, 3, 3), {"groups": 3, "padding": 2, "dilation": 2}),
    ((1, 3, 70, 67), (33, 3, 3, 3), {"padding": 1}),               # 67 columns: a 3-lane vector
]


@needs_feature
@pytest.mark.parametrize("x_shape,w_shape,kw", ODD, ids=[f"odd{i}" for i in range(len(ODD))])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_partial_blocks(x_shape, w_shape, kw, layout):
    check(x_shape, w_shape, kw, layout, bias=True, seed=1)


@needs_feature
def test_bias_added_before_the_one_rounding():
    """A bias far larger than the products: rounding the sum twice (once without the bias,
    once after) would lose the products' low bits; here only the final bf16 rounding does."""
    x = torch.randn(1, 16, 6, 6).bfloat16()
    w = torch.randn(8, 16, 3, 3).bfloat16()
    b = torch.full((8,), 1000.0).bfloat16()
    want = F.conv2d(x.float(), w.float(), b.float()).bfloat16()
    with fastconv.algorithms.force(ALGO):
        got = fastconv.functional.conv2d(x, w, b)
    assert (got.float() - want.float()).abs().max().item() <= 8.0  # one bf16 ulp at 1000 is 8


@needs_feature
def test_only_bf16_fprop_is_claimed():
    x = torch.randn(1, 4, 5, 5, dtype=torch.bfloat16)
    w = torch.randn(2, 4, 3, 3, dtype=torch.bfloat16)
    assert fastconv.algorithms.can_implement(ALGO, "fprop", x, w)
    assert not fastconv.algorithms.can_implement(ALGO, "dgrad", x, w)
    assert not fastconv.algorithms.can_implement(ALGO, "wgrad", x, w)
    assert not fastconv.algorithms.can_implement(ALGO, "fprop", x.float(), w.float())
    with fastconv.algorithms.force(ALGO), pytest.raises(NotImplementedError, match=f"'{ALGO}' cannot run fprop"):
        fastconv.functional.conv2d(x.float(), w.float())


@needs_feature
def test_automatic_choice():
    """The measured rule: channels-last with many output pixels, and NCHW only for few
    reduction rows (bench/NOTES.md, 2026-12-03)."""
    w = torch.empty(64, 64, 3, 3, dtype=torch.bfloat16)
    x_cl = torch.empty(2, 64, 56, 56, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    pad = (1, 1, 1, 1)
    assert fastconv.algorithms.chosen("fprop", x_cl, w, padding=pad) == ALGO
    assert fastconv.algorithms.chosen("fprop", x_cl[:, :, :7, :7].contiguous(memory_format=torch.channels_last),
                                      w, padding=pad) != ALGO
    assert fastconv.algorithms.chosen("fprop", torch.empty(2, 64, 56, 56, dtype=torch.bfloat16), w,
                                      padding=pad) != ALGO
    assert fastconv.algorithms.chosen("fprop", torch.empty(2, 3, 56, 56, dtype=torch.bfloat16),
                                      torch.empty(64, 3, 3, 3, dtype=torch.bfloat16), padding=pad) == ALGO
    # float32 never comes here, and Winograd keeps refusing bf16.
    assert fastconv.algorithms.chosen("fprop", x_cl.float(), w.float(), padding=pad) != ALGO
    assert not fastconv.algorithms.chosen("fprop", x_cl, w, padding=pad).startswith("winograd")


def test_hidden_feature_falls_back(monkeypatch):
    """With the feature hidden the algorithm claims nothing, forcing it names it, and the
    automatic choice gives the same result through the fallback."""
    x = torch.randn(2, 3, 20, 20).bfloat16()
    w = torch.randn(16, 3, 3, 3).bfloat16()
    b = torch.randn(16).bfloat16()
    ref = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    monkeypatch.setenv(HIDE, "avx512bf16")
    assert not fastconv.algorithms.can_implement(ALGO, "fprop", x, w, padding=(1, 1, 1, 1))
    assert fastconv.algorithms.chosen("fprop", x, w, padding=(1, 1, 1, 1)) == "im2col_gemm"
    out = fastconv.functional.conv2d(x, w, b, padding=1)
    assert rel_err(out, ref) <= TOLERANCE[torch.bfloat16]
    with fastconv.algorithms.force(ALGO), pytest.raises(NotImplementedError, match=ALGO):
        fastconv.functional.conv2d(x, w, b, padding=1)
    monkeypatch.delenv(HIDE)
    assert fastconv.algorithms.can_implement(ALGO, "fprop", x, w, padding=(1, 1, 1, 1)) == has_feature()


@pytest.mark.parametrize("call,exc,arg", [
    (lambda: fastconv.functional.conv2d(torch.randn(1, 4, 5, 5).bfloat16(), torch.randn(2, 4, 3, 3)),
     TypeError, "weight"),
    (lambda: fastconv.functional.conv2d(torch.randn(1, 4, 5, 5).bfloat16(), torch.randn(2, 4, 3, 3).bfloat16(),
                                        torch.randn(2)), TypeError, "bias"),
    (lambda: fastconv.functional.conv2d(torch.randn(1, 4, 5, 5).bfloat16(), torch.randn(2, 3, 3, 3).bfloat16()),
     (RuntimeError, ValueError), "weight"),
    (lambda: fastconv.functional.conv2d(torch.randn(1, 4, 5, 5).bfloat16(), torch.randn(2, 4, 3, 3).bfloat16(),
                                        torch.randn(3).bfloat16()), (RuntimeError, ValueError), "bias"),
], ids=["weight_dtype", "bias_dtype", "weight_channels", "bias_length"])
def test_bad_input_names_the_argument(call, exc, arg):
    with fastconv.algorithms.force(ALGO if has_feature() else None), pytest.raises(exc, match=arg):
        call()
