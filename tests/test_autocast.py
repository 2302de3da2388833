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


@pytest.mark.parametrize("dtype,box_dtype", [(torch.bfloat16, torch.bfloat16), (torch.float16, torch.float32),
                                             (torch.bfloat16, torch.float32)])
def test_roi_ops_compute_in_float32_under_autocast(device, dtype, box_dtype):
    """Half-precision features go to the kernels as they are (no float32 copy), which read them
    and accumulate in float32: bit for bit torchvision's cast-compute-cast, in both passes."""
    x = torch.randn(2, 4, 12, 12, device=device).to(dtype)
    rois = torch.tensor([[0, 1.3, 2.1, 9.7, 8.2], [1, 0.0, 0.5, 11.0, 6.0]], device=device, dtype=box_dtype)
    xa = x.clone().requires_grad_()
    with torch.autocast(device, dtype=AUTOCAST_DTYPES[device][0]):
        out = F.roi_align(xa, rois, 3, 1.0, 2, True)
        pooled = F.roi_pool(x, rois, 3)
    assert out.dtype == dtype and pooled.dtype == dtype
    xf = x.float().requires_grad_()
    want = F.roi_align(xf, rois.float(), 3, 1.0, 2, True)
    assert torch.equal(out, want.to(dtype))
    assert torch.equal(pooled, F.roi_pool(x.float(), rois.float(), 3).to(dtype))
    grad = torch.randn(out.shape, device=device).to(dtype)
    (got,) = torch.autograd.grad(out, xa, grad)
    (expected,) = torch.autograd.grad(want, xf, grad.float())
    assert got.dtype == dtype and torch.equal(got, expected.to(dtype))


def test_roi_align_in_float64_under_autocast_is_untouched(device):
    """Autocast never casts float64 (torch's rule, which its cached_cast keeps)."""
    x = torch.randn(1, 2, 6, 6, device=device, dtype=torch.float64)
    rois = torch.tensor([[0, 0.3, 1.1, 4.7, 5.2]], device=device, dtype=torch.float64)
    with torch.autocast(device, dtype=AUTOCAST_DTYPES[device][0]):
        out = F.roi_align(x, rois, 2, 1.0, 2, True)
    assert out.dtype == torch.float64
    assert torch.equal(out, F.roi_align(x, rois, 2, 1.0, 2, True))


def test_float32_outside_autocast_is_untouched(device):
    x = torch.randn(1, 2, 5, 5, device=device)
    w = torch.randn(2, 2, 3, 3, device=device)
    with torch.autocast(device, dtype=AUTOCAST_DTYPES[device][0], enabled=False):
        assert F.conv2d(x, w).dtype == torch.float32
