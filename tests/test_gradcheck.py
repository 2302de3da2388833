"""First and second derivatives of every operator, numerically (gradcheck and gradgradcheck
in float64), on every algorithm. Convolution's backward is made of fastconv operators, so its
own derivative is checked too; RoIAlign's double backward exists (torchvision refuses it)."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import fastconv
import fastconv.functional as F
from conftest import algorithms, claims

CONV_CONFIGS = [
    ("dense", (2, 4, 6, 5), (4, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)),
    ("depthwise", (1, 3, 5, 5), (6, 1, 3, 3), dict(stride=2, padding=1, groups=3)),
    ("per_side", (1, 2, 5, 4), (2, 2, 2, 3), dict(padding=(0, 1, 2, 0))),
]
TRANSPOSED_CONFIGS = [
    ("dense", (1, 4, 3, 4), (4, 2, 3, 3), dict(stride=2, padding=1, output_padding=1, groups=2)),
    ("dilated", (1, 2, 3, 3), (2, 3, 2, 2), dict(dilation=(2, 1), stride=(1, 2))),
    ("outpad_below_dilation", (1, 2, 3, 3), (2, 2, 2, 2), dict(dilation=3, output_padding=2)),
]


def leaves(x_shape, w_shape, out_channels, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(device).requires_grad_()  # noqa: E731
    return make(*x_shape), make(*w_shape), make(out_channels)


def forced(algorithm, fn):
    def run(*args):
        with fastconv.algorithms.force(algorithm):
            return fn(*args)
    return run


@pytest.mark.parametrize("config", CONV_CONFIGS, ids=[c[0] for c in CONV_CONFIGS])
def test_conv2d(config, device):
    name, x_shape, w_shape, kw = config
    x, w, b = leaves(x_shape, w_shape, w_shape[0], device)
    for algorithm in [None] + algorithms(device):
        if algorithm and not claims(algorithm, "conv2d", x, w, kw, grads=True):
            continue
        fn = forced(algorithm, lambda x, w, b: F.conv2d(x, w, b, **kw))
        assert gradcheck(fn, (x, w, b))
        assert gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("config", TRANSPOSED_CONFIGS, ids=[c[0] for c in TRANSPOSED_CONFIGS])
def test_conv_transpose2d(config, device):
    name, x_shape, w_shape, kw = config
    groups = kw.get("groups", 1)
    x, w, b = leaves(x_shape, w_shape, w_shape[1] * groups, device)
    for algorithm in [None] + algorithms(device):
        if algorithm and not claims(algorithm, "conv_transpose2d", x, w, kw, grads=True):
            continue
        fn = forced(algorithm, lambda x, w, b: F.conv_transpose2d(x, w, b, **kw))
        assert gradcheck(fn, (x, w, b))
        assert gradgradcheck(fn, (x, w, b))


def test_conv1d_and_transpose1d(device):
    x, w, b = leaves((2, 4, 7), (6, 2, 3), 6, device)
    assert gradgradcheck(lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1, groups=2), (x, w, b))
    xt, wt, bt = leaves((2, 4, 5), (4, 3, 3), 3, device)
    assert gradgradcheck(lambda x, w, b: F.conv_transpose1d(x, w, b, stride=2, output_padding=1), (xt, wt, bt))


def test_third_derivative_of_conv2d(device):
    x, w, b = leaves((1, 2, 4, 4), (2, 2, 2, 2), 2, device)
    y = F.conv2d(x, w, b, padding=1)
    (gx,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    (ggw,) = torch.autograd.grad(gx.pow(2).sum(), w, create_graph=True)
    (gggx,) = torch.autograd.grad(ggw.sum(), x)
    yr = torch.nn.functional.conv2d(x, w, b, padding=1)
    (rx,) = torch.autograd.grad(yr.pow(2).sum(), x, create_graph=True)
    (rw,) = torch.autograd.grad(rx.pow(2).sum(), w, create_graph=True)
    (rrx,) = torch.autograd.grad(rw.sum(), x)
    torch.testing.assert_close(gggx, rrx)


def rois_for(device):
    return torch.tensor(
        [[0, 0.3, 0.7, 4.6, 3.9], [1, 1.2, 0.1, 3.3, 5.8], [0, -1.5, 2.2, 6.5, 4.1]],
        dtype=torch.float64,
        device=device,
    )


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align(aligned, sampling_ratio, device):
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, device=device, requires_grad=True)
    fn = lambda x: F.roi_align(x, rois_for(device), (3, 2), 1.0, sampling_ratio, aligned)  # noqa: E731
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


def test_roi_pool(device):
    # Distinct values keep each maximum away from its neighbours, where max is not differentiable.
    x = torch.randperm(2 * 3 * 6 * 7).reshape(2, 3, 6, 7).double().to(device).requires_grad_()
    fn = lambda x: F.roi_pool(x, rois_for(device), (3, 2), 1.0)  # noqa: E731
    assert gradcheck(fn, (x,), eps=1e-3)
    assert gradgradcheck(fn, (x,), eps=1e-3)
