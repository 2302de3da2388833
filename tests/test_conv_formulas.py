"""fastconv._conv_formulas, the one Python home of the convolution formulas, checked against
what torch itself computes: output shapes from torch.nn.functional, FLOPs from
torch.utils.flop_counter."""

import itertools

import pytest
import torch
import torch.nn.functional as TF
from torch.utils.flop_counter import FlopCounterMode

from fastconv._conv_formulas import (
    conv_flops,
    conv_min_bytes,
    conv_output_size,
    transposed_as_conv,
    transposed_output_size,
)

# (C, K, H, W, R, S, stride, padding, dilation, groups, output_padding)
CASES = [
    (3, 8, 11, 13, 3, 5, (2, 1), (1, 2), (1, 2), 1, (1, 0)),
    (8, 8, 9, 9, 3, 3, (1, 1), (1, 1), (1, 1), 8, (0, 0)),
    (6, 4, 7, 10, 2, 2, (2, 3), (0, 0), (1, 1), 2, (1, 2)),
    (4, 6, 16, 5, 4, 1, (3, 1), (2, 0), (2, 1), 2, (0, 0)),
]


@pytest.mark.parametrize("case", CASES)
def test_output_sizes_match_torch(case):
    C, K, H, W, R, S, stride, padding, dilation, groups, output_padding = case
    x = torch.randn(2, C, H, W)
    y = TF.conv2d(x, torch.randn(K, C // groups, R, S), None, stride, padding, dilation, groups)
    assert tuple(y.shape[2:]) == tuple(
        conv_output_size(n, k, p, p, s, d)
        for n, k, p, s, d in zip((H, W), (R, S), padding, stride, dilation)
    )
    t = TF.conv_transpose2d(x, torch.randn(C, K // groups, R, S), None, stride, padding, output_padding,
                            groups, dilation)
    assert tuple(t.shape[2:]) == tuple(
        transposed_output_size(n, k, p, p, s, d, o)
        for n, k, p, s, d, o in zip((H, W), (R, S), padding, stride, dilation, output_padding)
    )


def test_uneven_padding_counts_both_sides():
    assert conv_output_size(10, 3, 0, 2, 1, 1) == conv_output_size(10, 3, 1, 1, 1, 1) == 10
    assert transposed_output_size(5, 3, 0, 1, 2, 1, 0) == (5 - 1) * 2 - 1 + (3 - 1) + 1


@pytest.mark.parametrize("case,transposed", list(itertools.product(CASES, (False, True))))
def test_flops_match_torch_flop_counter(case, transposed):
    C, K, H, W, R, S, stride, padding, dilation, groups, output_padding = case
    x = torch.randn(2, C, H, W)
    with FlopCounterMode(display=False) as counter:
        if transposed:
            y = TF.conv_transpose2d(x, torch.randn(C, K // groups, R, S), None, stride, padding,
                                    output_padding, groups, dilation)
        else:
            y = TF.conv2d(x, torch.randn(K, C // groups, R, S), None, stride, padding, dilation, groups)
    n, k, p, q = y.shape
    if transposed:  # the dgrad of the convolution from y back to x
        s = transposed_as_conv(2, C, H, W, k, p, q)
        assert s == dict(N=2, C=k, H=p, W=q, K=C, P=H, Q=W)
        ours = conv_flops(s["N"], s["C"], s["K"], s["P"], s["Q"], R, S, groups)
    else:
        ours = conv_flops(n, C, k, p, q, R, S, groups)
    assert ours == counter.get_total_flops()


def test_min_bytes_is_each_tensor_once():
    # x [2, 6, 5, 7], w [4, 3, 3, 3] (groups 2), y [2, 4, 3, 5], float32
    assert conv_min_bytes(2, 6, 5, 7, 4, 3, 5, 3, 3, 2, 4) == 4 * (2 * 6 * 5 * 7 + 4 * 3 * 3 * 3 + 2 * 4 * 3 * 5)
