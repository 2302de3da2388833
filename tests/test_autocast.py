"""Autocast: convolutions run in the autocast dtype as torch's do; RoIAlign and RoIPool
compute in float32 and return the input's dtype, as torchvision's do."""

import pytest
import torch
import torch.nn.functional as TF

import fastconv.functional as F
from conftest import rel_err

AUTOCAST_DTYPES = {"cpu": [torch.bfloat16, torch.float16], "cuda": [torch.float16, torch.bfloat16]}


def test_convolutions_run_in_the_autocast_dtype(device):
    x = torch.randn(2, 4, 9, 9, device=device)
    w = torch.randn(6, 2, 3, 3, device=device)
    b = torch.randn(6, device=device)
    wt = torch.randn(4, 3, 3, 3, device=device)
    for dtype in AUTOCAST_DTYPES[device]:
        with torch.autocast(device, dtype=dtype):
            y = F.conv2d(x, w, b, padding=1, groups=2)
            ref = TF.conv2d(x, w, b, padding=1, groups=2)
            yt = F.conv_transpose2d(x, wt, stride=2)
            reft = TF.conv_transpose2d(x, wt, stride=2)
        assert y.dtype == ref.dtype == dtype
        assert yt.dtype == reft.dtype == dtype
        tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
        assert rel_err(y, ref) <= tol and rel_err(yt, reft) <= tol


def test_autocast_backward_gives_float32_leaf_gradients(device):
    x = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    dtype = AUTOCAST_DTYPES[device][0]
    with torch.autocast(device, dtype=dtype):
        y = F.conv2d(x, w, padding=1)
    gx, gw = torch.autograd.grad(y.float().square().sum(), (x, w))
    assert gx.dtype == gw.dtype == torch.float32
    xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    rx, rw = torch.autograd.grad(TF.conv2d(xr, wr, padding=1).square().sum(), (xr, wr))
    assert rel_err(gx, rx) <= 5e-2 and rel_err(gw, rw) <= 5e-2


def test_roi_ops_compute_in_float32_under_autocast(device):
    x = torch.randn(2, 4, 12, 12, device=device).to(torch.bfloat16)
    rois = torch.tensor([[0, 1.3, 2.1, 9.7, 8.2], [1, 0.0, 0.5, 11.0, 6.0]], device=device, dtype=torch.bfloat16)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = F.roi_align(x, rois, 3, 1.0, 2, True)
        pooled = F.roi_pool(x, rois, 3)
    assert out.dtype == torch.bfloat16 and pooled.dtype == torch.bfloat16
    want = F.roi_align(x.float(), rois.float(), 3, 1.0, 2, True).to(torch.bfloat16)
    assert torch.equal(out, want)
    assert torch.equal(pooled, F.roi_pool(x.float(), rois.float(), 3).to(torch.bfloat16))


def test_float32_outside_autocast_is_untouched(device):
    x = torch.randn(1, 2, 5, 5, device=device)
    w = torch.randn(2, 2, 3, 3, device=device)
    with torch.autocast(device, dtype=AUTOCAST_DTYPES[device][0], enabled=False):
        assert F.conv2d(x, w).dtype == torch.float32
