"""The library's own answer about its algorithms (fastconv::_can_implement) is what it does:
an algorithm forced on a request it claims runs it, and one forced on a request it refuses
raises NotImplementedError, for every direction, dtype and layout of the case table."""

import pytest
import torch

import fastconv
from conftest import algorithms, operator_call
from conv_cases import CONV2D_CASES, CONV_TRANSPOSE2D_CASES

ops = torch.ops.fastconv
CASES = [("conv2d", c) for c in CONV2D_CASES if c[0] not in ("batch_zero", "unbatched", "unbatched_depthwise")]
CASES += [("conv_transpose2d", c) for c in CONV_TRANSPOSE2D_CASES if c[0] not in ("batch_zero", "unbatched")]
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def run_direction(direction, kind, x, w, stride, padding, dilation, groups, output_padding):
    """Runs exactly one direction of the underlying convolution through the operators."""
    if kind == "conv2d":
        if direction == "fprop":
            return ops.conv2d(x, w, None, stride, padding, dilation, groups)
        with fastconv.algorithms.force(None):
            y = ops.conv2d(x, w, None, stride, padding, dilation, groups)
        mask = [direction == "dgrad", direction == "wgrad", False]
        return ops.conv2d_backward(torch.randn_like(y), x, w, stride, padding, dilation, groups, mask)
    # conv_transpose2d: its forward is dgrad, its input gradient fprop.
    if direction == "dgrad":
        return ops.conv_transpose2d(x, w, None, stride, padding, output_padding, dilation, groups)
    with fastconv.algorithms.force(None):
        y = ops.conv_transpose2d(x, w, None, stride, padding, output_padding, dilation, groups)
    mask = [direction == "fprop", direction == "wgrad", False]
    return ops.conv_transpose2d_backward(torch.randn_like(y), x, w, stride, padding, output_padding,
                                         dilation, groups, mask)


@pytest.mark.parametrize("kind,case", CASES, ids=[f"{k}-{c[0]}" for k, c in CASES])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["float64", "bfloat16"])
@pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
def test_claims_are_what_forcing_does(kind, case, dtype, layout):
    name, x_shape, w_shape, kw = case
    kw = {k: v for k, v in kw.items() if k != "bias"}
    x = torch.randn(x_shape, dtype=dtype).contiguous(memory_format=LAYOUTS[layout])
    w = torch.randn(w_shape, dtype=dtype)
    x4, w4, stride, padding, dilation, groups, output_padding = operator_call(kind, x, w, kw)
    for algorithm in algorithms("cpu"):
        for direction in ("fprop", "dgrad", "wgrad"):
            claimed = fastconv.algorithms.can_implement(
                algorithm, direction, x4, w4, stride, padding, dilation, groups, output_padding)
            with fastconv.algorithms.force(algorithm):
                if claimed:
                    run_direction(direction, kind, x4, w4, stride, padding, dilation, groups, output_padding)
                else:
                    with pytest.raises(NotImplementedError, match=f"'{algorithm}' cannot run {direction}"):
                        run_direction(direction, kind, x4, w4, stride, padding, dilation, groups,
                                      output_padding)


def test_every_request_has_an_algorithm():
    """The direct kernel, last in the list, claims everything: every dtype, layout and
    direction, on every device this build has kernels for (asked, for CUDA, of an H100)."""
    x = torch.empty(2, 6, 9, 9, dtype=torch.bfloat16, device="meta").contiguous(memory_format=torch.channels_last)
    w = torch.empty(4, 3, 3, 3, dtype=torch.bfloat16, device="meta")
    for device in ("cpu", "cuda"):
        names = fastconv.algorithms.names(device)
        if not names:
            continue
        assert names[-1] == "direct"
        for direction in ("fprop", "dgrad", "wgrad"):
            assert fastconv.algorithms.can_implement("direct", direction, x, w, (2, 1), (1, 0, 2, 1), (1, 2),
                                                     2, device=device, compute_capability=90)


def test_direct_blocked_is_forward_only():
    """No algorithm runs another's kernels: direct_blocked has fprop only, so its backward
    directions go down the list rather than into im2col's code under its name."""
    x, w = torch.randn(1, 3, 16, 16), torch.randn(8, 3, 7, 7)
    args = ((2, 2), (3, 3, 3, 3), (1, 1), 1)
    assert fastconv.algorithms.can_implement("direct_blocked", "fprop", x, w, *args)
    assert not fastconv.algorithms.can_implement("direct_blocked", "dgrad", x, w, *args)
    assert not fastconv.algorithms.can_implement("direct_blocked", "wgrad", x, w, *args)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda x, w: ops._can_implement("nope", "cpu", "fprop", x, w, [1, 1], [0, 0, 0, 0], [1, 1], 1, None),
         "no algorithm 'nope'"),
        (lambda x, w: ops._can_implement("direct", "tpu", "fprop", x, w, [1, 1], [0, 0, 0, 0], [1, 1], 1, None),
         "device must be"),
        (lambda x, w: ops._can_implement("direct", "cpu", "sideways", x, w, [1, 1], [0, 0, 0, 0], [1, 1], 1, None),
         "direction must be"),
        (lambda x, w: ops._can_implement("direct", "cpu", "fprop", x, w, [1, 1], [0, 0, 0, 0], [1, 1], 3, None),
         "groups"),
    ],
    ids=["algorithm", "device", "direction", "groups"],
)
def test_query_errors_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call(torch.randn(1, 4, 5, 5), torch.randn(2, 4, 3, 3))


def test_forced_name_round_trips():
    assert fastconv.algorithms.forced() is None
    with fastconv.algorithms.force("im2col_gemm"):
        assert fastconv.algorithms.forced() == "im2col_gemm"
        assert ops._forced_algorithm() == "im2col_gemm"
    assert fastconv.algorithms.forced() is None
