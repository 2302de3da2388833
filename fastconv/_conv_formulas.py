"""The convolution formulas that Python needs, each written once: output sizes (used by the
fake kernels), FLOPs and minimum bytes (used by the benchmark's roofline and by summary()).

Names follow DESIGN.md: activation x [N, C, H, W], filter w [K, C/groups, R, S], output
y [N, K, P, Q]. A transposed convolution is the dgrad of the convolution that has its x and
y swapped, so its work is that convolution's: see transposed_as_conv().

FLOPs and minimum bytes are the C++ ConvProblem::flops() and min_bytes() of
csrc/common/conv_problem.h; keep the two in step.
"""

__all__ = [
    "conv_output_size",
    "transposed_output_size",
    "conv_flops",
    "conv_min_bytes",
    "transposed_as_conv",
]


def conv_output_size(size, kernel, pad_begin, pad_end, stride, dilation):
    """Output length of a convolution along one spatial dimension."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def transposed_output_size(size, kernel, pad_begin, pad_end, stride, dilation, output_padding):
    """Output length of a transposed convolution along one spatial dimension."""
    return (size - 1) * stride - pad_begin - pad_end + dilation * (kernel - 1) + output_padding + 1


def conv_flops(N, C, K, P, Q, R, S, groups=1):
    """2·N·K·P·Q·(C/groups)·R·S: every output element reduces over (C/groups)·R·S products, a
    multiply-add counting 2. Exact (a Python int for int arguments)."""
    return 2 * N * K * P * Q * (C // groups) * R * S


def conv_min_bytes(N, C, H, W, K, P, Q, R, S, groups, element_size):
    """Bytes of x, w and y, each read or written exactly once: the floor of any kernel's
    traffic for one pass (fprop, dgrad or wgrad)."""
    x = N * C * H * W
    w = K * (C // groups) * R * S
    y = N * K * P * Q
    return element_size * (x + w + y)


def transposed_as_conv(N, C, H, W, K, P, Q):
    """The sizes (as a dict of N, C, H, W, K, P, Q) of the convolution whose dgrad is the
    transposed convolution from C channels at H×W to K channels at P×Q."""
    return dict(N=N, C=K, H=P, W=Q, K=C, P=H, Q=W)
