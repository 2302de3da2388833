"""Complex convolutions on fastconv's real kernels.

A convolution is bilinear in its input and filter, so for x = a + ib and w = c + id,
conv(x, w) = conv(a, c) - conv(b, d) + i (conv(a, d) + conv(b, c)): four real convolutions.
Gauss's trick does it in three,

    t1 = conv(a + b, c),   t2 = conv(a, d - c),   t3 = conv(b, c + d)
    real = t1 - t3,        imag = t1 + t2,

at the price of three sums of operands (a + b the size of the input, d - c and c + d of the
filter) and two of outputs, all memory-bound and cheap next to a convolution. torch's own
complex convolution does the same. The bias folds into the calls for free: its real part
subtracted in t3, its imaginary part added in t2. Gradients follow from autograd through
these real calls (torch's convention for complex gradients falls out of .real, .imag and
torch.complex), and so do forward-mode and torch.func transforms.

The same holds for a transposed convolution, which is bilinear too.
"""

import torch

from .errors import ArgumentTypeError

COMPLEX_DTYPES = (torch.complex64, torch.complex128)


def involved(input, weight, bias):
    return input.is_complex() or weight.is_complex() or (bias is not None and bias.is_complex())


def _check(fn, input, weight, bias):
    if input.is_complex() and input.dtype not in COMPLEX_DTYPES:
        raise ArgumentTypeError(
            f"{fn}: argument 'input' has dtype {input.dtype}; complex convolutions take "
            f"complex64 or complex128")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != input.dtype:
            raise ArgumentTypeError(
                f"{fn}: argument '{name}' has dtype {t.dtype} but 'input' has dtype {input.dtype}; "
                f"they must match")


def bilinear(fn, op, input, weight, bias, *params):
    """op(input, weight, bias, *params) for complex operands, through three calls of op on
    their real and imaginary parts."""
    _check(fn, input, weight, bias)
    # A lazily conjugated operand is materialised, so that .imag is a plain view.
    input, weight = input.resolve_conj(), weight.resolve_conj()
    a, b = input.real, input.imag
    c, d = weight.real, weight.imag
    bias = None if bias is None else bias.resolve_conj()
    t1 = op(a + b, c, None, *params)
    t2 = op(a, d - c, None if bias is None else bias.imag, *params)
    t3 = op(b, c + d, None if bias is None else -bias.real, *params)
    return torch.complex(t1 - t3, t1 + t2)
