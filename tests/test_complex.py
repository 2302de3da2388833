"""Complex convolutions (complex64, complex128) on fastconv's real kernels, three real calls
each (fastconv/_complex.py): results and gradients against torch's complex convolution, over
the cases torch's own tests take ('same' and 'valid' padding, depthwise, grouped, strided and
dilated, discontiguous weights, channels_last, transposed, 1-D, unbatched)."""

import pytest
import torch
import torch.nn.functional as TF

import fastconv
import fastconv.functional as F
from conftest import rel_err

# name, kind, input shape, weight shape, keyword arguments
CASES = [
    ("same", "conv2d", (2, 4, 7, 6), (6, 4, 3, 2), dict(padding="same")),
    ("same_dilated", "conv2d", (1, 2, 8, 7), (3, 2, 3, 3), dict(padding="same", dilation=2)),
    ("valid", "conv2d", (2, 3, 6, 6), (4, 3, 3, 3), dict(padding="valid")),
    ("depthwise", "conv2d", (2, 4, 6, 5), (8, 1, 3, 3), dict(groups=4, padding=1)),
    ("strided_grouped", "conv2d", (1, 4, 9, 8), (6, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)),
    ("unbatched", "conv2d", (3, 6, 5), (2, 3, 2, 2), dict()),
    ("conv1d_same", "conv1d", (2, 3, 9), (4, 3, 3), dict(padding="same")),
    ("conv1d_depthwise", "conv1d", (2, 4, 9), (4, 1, 3), dict(groups=4, stride=2)),
    ("transposed", "conv_transpose2d", (2, 4, 4, 3), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1, groups=2)),
    ("transposed_dilated", "conv_transpose2d", (1, 2, 3, 4), (2, 2, 2, 3), dict(dilation=2)),
    ("transposed1d", "conv_transpose1d", (2, 3, 5), (3, 2, 3), dict(stride=2)),
]
DTYPES = {torch.complex64: 1e-5, torch.complex128: 1e-12}


def make(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=torch.complex128, generator=g).to(dtype)


def operands(kind, x_shape, w_shape, kw, dtype):
    x, w = make(x_shape, dtype, 0), make(w_shape, dtype, 1)
    out_channels = w_shape[1] * kw.get("groups", 1) if kind.startswith("conv_transpose") else w_shape[0]
    return x, w, make((out_channels,), dtype, 2)


@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_forward_and_gradients_match_torch(case, dtype):
    name, kind, x_shape, w_shape, kw = case
    x, w, b = operands(kind, x_shape, w_shape, kw, dtype)
    fast = [t.clone().requires_grad_() for t in (x, w, b)]
    # the reference: torch's complex convolution in complex128
    ref = [t.detach().to(torch.complex128).requires_grad_() for t in (x, w, b)]
    y = getattr(F, kind)(*fast, **kw)
    y_ref = getattr(TF, kind)(*ref, **kw)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert rel_err(torch.view_as_real(y), torch.view_as_real(y_ref)) <= DTYPES[dtype]
    grad_output = make(y.shape, dtype, 3)
    grads = torch.autograd.grad(y, fast, grad_output)
    grads_ref = torch.autograd.grad(y_ref, ref, grad_output.to(torch.complex128))
    for g, r, what in zip(grads, grads_ref, ("input", "weight", "bias")):
        assert g.dtype == dtype
        assert rel_err(torch.view_as_real(g), torch.view_as_real(r)) <= DTYPES[dtype], what


def test_discontiguous_and_conjugated_operands():
    x = make((2, 3, 6, 5), torch.complex128, 0)
    w = make((3, 4, 3, 3), torch.complex128, 1).transpose(0, 1)  # [4, 3, 3, 3], not contiguous
    assert not w.is_contiguous()
    for xs, ws in ((x, w), (x.conj(), w), (x, w.conj()), (x[..., ::2], w)):
        torch.testing.assert_close(F.conv2d(xs, ws, padding=1), TF.conv2d(xs, ws, padding=1))


def test_channels_last():
    x = make((2, 4, 6, 5), torch.complex64, 0).contiguous(memory_format=torch.channels_last)
    w = make((4, 4, 3, 3), torch.complex64, 1)
    assert rel_err(torch.view_as_real(F.conv2d(x, w)), torch.view_as_real(TF.conv2d(x, w))) <= 1e-5


def test_gradcheck_and_second_derivatives():
    x = make((1, 2, 4, 4), torch.complex128, 0).requires_grad_()
    w = make((2, 1, 2, 2), torch.complex128, 1).requires_grad_()
    b = make((2,), torch.complex128, 2).requires_grad_()
    fn = lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_torch_func_over_complex():
    x = make((3, 2, 5, 5), torch.complex128, 0)
    w = make((4, 2, 3, 3), torch.complex128, 1)
    out = torch.func.vmap(lambda x: F.conv2d(x, w))(x.unsqueeze(1))
    torch.testing.assert_close(out.squeeze(1), TF.conv2d(x, w))
    loss = lambda module: (lambda w: module.conv2d(x, w).abs().pow(2).sum())  # noqa: E731
    torch.testing.assert_close(torch.func.grad(loss(F))(w), torch.func.grad(loss(TF))(w))


def test_complex_layers():
    torch.manual_seed(0)
    ours = fastconv.Conv2d(3, 4, 3, padding=1, dtype=torch.complex64)
    theirs = torch.nn.Conv2d(3, 4, 3, padding=1, dtype=torch.complex64)
    theirs.load_state_dict(ours.state_dict())
    x = make((2, 3, 5, 5), torch.complex64, 0)
    assert rel_err(torch.view_as_real(ours(x)), torch.view_as_real(theirs(x))) <= 1e-5


def test_three_real_convolutions_per_complex_one():
    # Gauss's trick, as documented: three real calls of the real operator, no fourth.
    x, w = make((1, 2, 5, 5), torch.complex64, 0), make((3, 2, 3, 3), torch.complex64, 1)
    with torch.profiler.profile() as prof:
        F.conv2d(x, w)
    calls = [e for e in prof.events() if e.name == "fastconv::conv2d"]
    assert len(calls) == 3
