"""RoIAlign and RoIPool against the plain-Python reference (tests/roi_reference.py) and
torchvision.ops: both aligned modes, adaptive and fixed sampling, boxes partly outside the
image, zero-size and inverted boxes, no boxes, both box formats, half types on the CPU, and
absurd boxes that must neither hang nor crash."""

import math
import time

import pytest
import torch

import fastconv
import fastconv.functional as F
import fastconv.selftest
import roi_reference
from conftest import rel_err

torchvision_ops = pytest.importorskip("torchvision.ops")


def make_rois(n_images, n_boxes, height, width, seed, dtype=torch.float64, device="cpu", min_size=0.0):
    """Boxes scattered over and beyond the image, with non-negative sizes (torchvision needs
    x2 >= x1 for aligned=True with adaptive sampling)."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.rand(n_boxes, generator=g, dtype=torch.float64) * (width + 8) - 6
    y1 = torch.rand(n_boxes, generator=g, dtype=torch.float64) * (height + 8) - 6
    w = torch.rand(n_boxes, generator=g, dtype=torch.float64) * width * 0.8 + min_size
    h = torch.rand(n_boxes, generator=g, dtype=torch.float64) * height * 0.8 + min_size
    idx = torch.randint(0, n_images, (n_boxes,), generator=g).double()
    return torch.stack([idx, x1, y1, x1 + w, y1 + h], 1).to(device, dtype)


def special_rois(device):
    return torch.tensor(
        [
            [0, 2.0, 3.0, 2.0, 3.0],  # zero size
            [1, 4.0, 1.0, 4.0, 7.0],  # zero width
            [0, -30.0, -30.0, -20.0, -20.0],  # entirely outside
            [1, -5.0, -5.0, 50.0, 60.0],  # covers the image and more
            [0, 6.5, 2.25, 8.75, 9.5],  # fractional, near the border
        ],
        dtype=torch.float64,
        device=device,
    )


@pytest.fixture(params=["nchw", "nhwc", "channels_last_input"])
def roi_kernel(request, monkeypatch):
    """Runs a RoIAlign test on each CPU kernel layout, forced through FASTCONV_ROI_LAYOUT:
    planes, channels last (an NCHW input transposed first), and a channels_last input read as
    it is. Returns how to arrange the input for it."""
    monkeypatch.setenv("FASTCONV_ROI_LAYOUT", "nchw" if request.param == "nchw" else "nhwc")
    if request.param == "channels_last_input":
        return lambda t: t.contiguous(memory_format=torch.channels_last)
    return lambda t: t


ALIGN_SETTINGS = [
    (output_size, scale, sampling_ratio, aligned)
    for output_size in [(2, 3), (7, 7)]
    for scale in [1.0, 0.5]
    for sampling_ratio in [-1, 0, 1, 2, 3]
    for aligned in [False, True]
]


@pytest.mark.parametrize("output_size,scale,sampling_ratio,aligned", ALIGN_SETTINGS)
def test_roi_align_matches_torchvision(output_size, scale, sampling_ratio, aligned, device, roi_kernel):
    x = torch.randn(2, 3, 11, 13, dtype=torch.float64, device=device)
    rois = torch.cat([make_rois(2, 12, 11 / scale, 13 / scale, seed=sampling_ratio + 7), special_rois("cpu")]).to(device)
    xa, xb = roi_kernel(x.clone()).requires_grad_(), x.clone().requires_grad_()
    out = F.roi_align(xa, rois, output_size, scale, sampling_ratio, aligned)
    ref = torchvision_ops.roi_align(xb.cpu(), rois.cpu(), output_size, scale, sampling_ratio, aligned)
    assert rel_err(out, ref) <= 1e-9
    grad = torch.randn_like(ref)
    (ga,) = torch.autograd.grad(out, xa, grad.to(device))
    (gb,) = torch.autograd.grad(ref, xb, grad)
    assert rel_err(ga, gb) <= 1e-9


@pytest.mark.sanitizer
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_matches_python_reference(aligned, sampling_ratio, device, roi_kernel):
    x = torch.randn(2, 4, 9, 10, dtype=torch.float64)
    rois = torch.cat([make_rois(2, 6, 9, 10, seed=3), special_rois("cpu")])
    # Inverted boxes (x2 < x1) too: torchvision's CPU kernel cannot take these when aligned.
    rois = torch.cat([rois, torch.tensor([[1, 7.0, 6.0, 2.0, 1.5]], dtype=torch.float64)])
    xr = x.clone().requires_grad_()
    ref = roi_reference.roi_align(xr, rois, (3, 2), 0.5, sampling_ratio, aligned)
    xf = roi_kernel(x.clone().to(device)).requires_grad_()
    out = F.roi_align(xf, rois.to(device), (3, 2), 0.5, sampling_ratio, aligned)
    assert rel_err(out, ref) <= 1e-12
    grad = torch.randn_like(ref)
    assert rel_err(torch.autograd.grad(out, xf, grad.to(device))[0], torch.autograd.grad(ref, xr, grad)[0]) <= 1e-12


@pytest.mark.parametrize("channels", [16, 40])
def test_roi_align_channel_runs(channels, roi_kernel):
    """Enough channels for the channels-last backward to split them into runs (a last one
    partial at 40), and more boxes than pixels, so that unforced NCHW inputs of 40 channels go
    channels last."""
    x = torch.randn(2, channels, 6, 7, dtype=torch.float64)
    rois = torch.cat([make_rois(2, 30, 6, 7, seed=11), special_rois("cpu")])
    xa, xb = roi_kernel(x.clone()).requires_grad_(), x.clone().requires_grad_()
    out = F.roi_align(xa, rois, (3, 4), 1.0, -1, True)
    ref = torchvision_ops.roi_align(xb, rois, (3, 4), 1.0, -1, True)
    assert rel_err(out, ref) <= 1e-12
    grad = torch.randn_like(ref)
    (ga,) = torch.autograd.grad(out, xa, grad)
    (gb,) = torch.autograd.grad(ref, xb, grad)
    assert ga.shape == gb.shape and rel_err(ga, gb) <= 1e-12


def test_roi_layout_setting_is_checked(monkeypatch):
    monkeypatch.setenv("FASTCONV_ROI_LAYOUT", "nhcw")
    with pytest.raises(ValueError, match="FASTCONV_ROI_LAYOUT"):
        F.roi_align(torch.randn(1, 2, 5, 5), torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]]), 2)


@pytest.mark.parametrize("output_size,scale", [((2, 3), 1.0), ((7, 7), 0.5), ((4, 4), 0.25)])
def test_roi_pool_matches_torchvision_and_reference(output_size, scale, device):
    x = torch.randn(2, 3, 11, 13, dtype=torch.float64)
    rois = torch.cat([make_rois(2, 12, 11 / scale, 13 / scale, seed=5), special_rois("cpu")])
    xa, xb, xr = (x.clone().requires_grad_() for _ in range(3))
    xa_dev = xa.to(device)
    out = F.roi_pool(xa_dev, rois.to(device), output_size, scale)
    tv = torchvision_ops.roi_pool(xb, rois, output_size, scale)
    ref = roi_reference.roi_pool(xr, rois, output_size, scale)
    assert rel_err(out, tv) == 0 and rel_err(out, ref) == 0
    grad = torch.randn_like(ref)
    ga = torch.autograd.grad(out, xa, grad.to(device))[0]
    # Gradients of overlapping boxes add up in another order: equal to rounding.
    assert rel_err(ga, torch.autograd.grad(tv, xb, grad)[0]) <= 1e-15
    assert rel_err(ga, torch.autograd.grad(ref, xr, grad)[0]) <= 1e-15


def test_box_list_format_equals_tensor_format(device):
    x = torch.randn(2, 3, 10, 10, device=device)
    boxes = [torch.tensor([[1.0, 1.0, 6.0, 5.0]], device=device), torch.tensor([[0.0, 2.0, 9.0, 9.0], [3.0, 3.0, 4.0, 8.0]], device=device)]
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 5.0], [1, 0.0, 2.0, 9.0, 9.0], [1, 3.0, 3.0, 4.0, 8.0]], device=device)
    torch.testing.assert_close(F.roi_align(x, boxes, 3, 1.0, 2), F.roi_align(x, rois, 3, 1.0, 2))
    torch.testing.assert_close(F.roi_pool(x, boxes, 3), F.roi_pool(x, rois, 3))


@pytest.mark.sanitizer
def test_no_boxes(device):
    x = torch.randn(2, 3, 10, 10, device=device, requires_grad=True)
    rois = torch.zeros(0, 5, device=device)
    out = F.roi_align(x, rois, (7, 7), 0.25, 2, True)
    assert out.shape == (0, 3, 7, 7)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert g.shape == x.shape and g.abs().sum() == 0
    assert F.roi_pool(x, rois, 2).shape == (0, 3, 2, 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_compute_in_float(dtype, device, roi_kernel):
    """torchvision's CPU kernel has no half types; fastconv's accumulates them in float."""
    x = torch.randn(2, 8, 16, 16, dtype=torch.float64)
    rois = make_rois(2, 10, 16, 16, seed=1)
    x_half = roi_kernel(x.to(dtype))
    ref = torchvision_ops.roi_align(x_half.double(), rois, (5, 5), 1.0, 2, True)
    out = F.roi_align(x_half.to(device), rois.to(device, dtype), (5, 5), 1.0, 2, True)
    assert out.dtype == dtype
    # Box coordinates in half precision move the samples; the values stay close.
    assert rel_err(out, ref) <= (2e-2 if dtype == torch.float16 else 6e-2)
    out32 = F.roi_align(x_half.to(device), rois.to(device), (5, 5), 1.0, 2, True)
    assert rel_err(out32, ref) <= {torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    xg = x_half.to(device).requires_grad_()
    (g,) = torch.autograd.grad(F.roi_align(xg, rois.to(device), (5, 5), 1.0, 2, True).sum(), xg)
    xr = x_half.double().requires_grad_()
    (gr,) = torch.autograd.grad(torchvision_ops.roi_align(xr, rois, (5, 5), 1.0, 2, True).sum(), xr)
    assert g.dtype == dtype and rel_err(g, gr) <= 1e-2
    pooled = F.roi_pool(x_half.to(device), rois.to(device), (3, 3))
    assert rel_err(pooled, torchvision_ops.roi_pool(x_half.double(), rois, (3, 3))) == 0


@pytest.mark.sanitizer
@pytest.mark.parametrize("aligned", [False, True])
def test_huge_boxes_are_fast_and_defined(aligned, device, roi_kernel):
    """torchvision's CPU roi_align segfaults on one box 1e7 pixels wide with adaptive
    sampling; fastconv only visits the samples that can land on the image."""
    x = roi_kernel(torch.randn(1, 4, 32, 40, device=device)).requires_grad_()
    rois = torch.tensor([[0, 0.0, 0.0, 1e7, 10.0], [0, -1e30, -1e30, 1e30, 1e30]], device=device)
    # A box whose width overflows float32 is not a box: NaN, like a non-finite coordinate.
    overflow = torch.tensor([[0, -3e38, 0, 3e38, 5]], device=device)
    # On a GPU the first fastconv call may run the self-test (seconds): not what is timed.
    fastconv.selftest.ensure(x.device)
    start = time.perf_counter()
    out = F.roi_align(x, torch.cat([rois, overflow]), 7, 1.0, -1, aligned)
    (g,) = torch.autograd.grad(out[:2].sum(), x)
    pooled = F.roi_pool(x, rois, 7, 1.0)
    assert time.perf_counter() - start < 5.0
    assert torch.isfinite(out[:2]).all() and torch.isnan(out[2]).all()
    assert torch.isfinite(g).all() and torch.isfinite(pooled).all()
    # A box 2000 pixels wide is still within torchvision's reach: the two agree on it.
    wide = torch.tensor([[0, -900.0, 3.0, 1100.0, 20.0]], device=device, dtype=torch.float64)
    xd = x.detach().double()
    torch.testing.assert_close(
        F.roi_align(xd, wide, 7, 1.0, -1, aligned).cpu(),
        torchvision_ops.roi_align(xd.cpu(), wide.cpu(), 7, 1.0, -1, aligned),
    )


def test_non_finite_boxes_give_nan_and_no_gradient(device, roi_kernel):
    x = roi_kernel(torch.randn(2, 3, 8, 8, device=device)).requires_grad_()
    rois = torch.tensor(
        [[0, float("nan"), 0, 4, 4], [1, 0, 0, float("inf"), 4], [0, 1.0, 1.0, 5.0, 5.0]], device=device
    )
    out = F.roi_align(x, rois, 2, 1.0, 2)
    assert torch.isnan(out[:2]).all() and torch.isfinite(out[2]).all()
    (g,) = torch.autograd.grad(out[2].sum() + 0 * out[:2].nan_to_num().sum(), x)
    assert torch.isfinite(g).all()
    pooled = F.roi_pool(x, rois, 2)
    assert torch.isnan(pooled[:2]).all() and torch.isfinite(pooled[2]).all()


def test_modules_mirror_torchvision():
    assert repr(fastconv.nn.RoIAlign((7, 7), 0.25, 2, aligned=True)) == repr(
        torchvision_ops.RoIAlign((7, 7), 0.25, 2, aligned=True)
    )
    assert repr(fastconv.nn.RoIPool(7, 0.5)) == repr(torchvision_ops.RoIPool(7, 0.5))
    x = torch.randn(1, 2, 8, 8)
    boxes = [torch.tensor([[0.5, 1.0, 6.0, 7.5]])]
    torch.testing.assert_close(
        fastconv.nn.RoIAlign(3, 1.0, 2, True)(x, boxes), torchvision_ops.RoIAlign(3, 1.0, 2, True)(x, boxes)
    )
    torch.testing.assert_close(fastconv.nn.RoIPool(3, 1.0)(x, boxes), torchvision_ops.RoIPool(3, 1.0)(x, boxes))


# ---------------------------------------------------------------- the FPN pooler


def _levels_case(device, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(2, 5, 24 // 2**i, 30 // 2**i, generator=g, dtype=dtype).to(device) for i in range(3)]
    rois = make_rois(2, 11, 96, 120, seed, dtype=dtype, device=device)
    rois = torch.cat([rois, torch.tensor([[1, -30.0, -30.0, -20.0, -20.0], [0, 40.0, 30.0, 10.0, 5.0]],
                                         dtype=dtype, device=device)])
    levels = torch.randint(0, 3, (rois.shape[0],), generator=g).to(device)
    return feats, rois, levels, [0.25, 0.125, 0.0625]


@pytest.mark.parametrize("aligned", [False, True])
def test_multi_level_roi_align_is_roi_align_per_level(aligned, device):
    """Each box pooled from its own level: the same numbers as roi_align on that level alone,
    in the boxes' order, and the same input gradients."""
    feats, rois, levels, scales = _levels_case(device)
    feats = [f.requires_grad_() for f in feats]
    out = F.multi_level_roi_align(feats, rois, levels, (3, 4), scales, 2, aligned)
    want = torch.stack([F.roi_align(feats[int(l)], rois[i:i + 1], (3, 4), scales[int(l)], 2, aligned)[0]
                        for i, l in enumerate(levels)])
    assert torch.allclose(out, want, rtol=0, atol=1e-12, equal_nan=True)
    finite = torch.isfinite(out).all(dim=(1, 2, 3))
    grad = torch.randn_like(out) * finite[:, None, None, None]
    got = torch.autograd.grad(out, feats, grad)
    expected = torch.autograd.grad(want, feats, grad)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_multi_level_roi_align_gradcheck():
    feats, rois, levels, scales = _levels_case("cpu", seed=1)
    keep = torch.isfinite(F.multi_level_roi_align(feats, rois, levels, 2, scales, 2, True)).all(dim=(1, 2, 3))
    rois, levels = rois[keep], levels[keep]
    feats = [f.requires_grad_() for f in feats]
    assert torch.autograd.gradcheck(
        lambda *f: F.multi_level_roi_align(list(f), rois, levels, 2, scales, 2, True), feats)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_multi_scale_roi_align_module_matches_torchvision(dtype, device):
    torchvision = pytest.importorskip("torchvision")
    g = torch.Generator().manual_seed(2)
    names = ["p2", "p3", "p4", "p5"]
    feats = {n: torch.randn(2, 4, 64 // 2**i, 80 // 2**i, generator=g).to(device, dtype) for i, n in enumerate(names)}
    feats["pool"] = torch.randn(2, 4, 1, 1, generator=g).to(device, dtype)  # not named: not pooled
    boxes = [torch.tensor([[1.0, 2.0, 30.0, 40.0], [10.0, 10.0, 250.0, 200.0], [0.0, 0.0, 310.0, 250.0]]),
             torch.tensor([[3.0, 4.0, 60.0, 70.0], [50.0, 60.0, 200.0, 240.0], [5.0, 5.0, 9.0, 9.0]])]
    boxes = [b.to(device, dtype) for b in boxes]
    sizes = [(256, 320), (250, 300)]
    ours = fastconv.nn.MultiScaleRoIAlign(names, 7, 2)
    theirs = torchvision.ops.MultiScaleRoIAlign(names, 7, 2)
    want = theirs({k: v.float() for k, v in feats.items()}, [b.float() for b in boxes], sizes)
    got = ours(feats, boxes, sizes)
    assert got.dtype == dtype
    assert rel_err(got, want) <= (1e-6 if dtype == torch.float32 else 1e-2)
    assert "featmap_names=['p2', 'p3', 'p4', 'p5']" in repr(ours)


def test_multi_level_roi_align_errors():
    feats, rois, levels, scales = _levels_case("cpu")
    call = F.multi_level_roi_align
    with pytest.raises(TypeError, match="'features' must be a non-empty list"):
        call([], rois, levels, 2, [])
    with pytest.raises(ValueError, match="1 to 8 feature maps"):
        call([feats[0]] * 9, rois, levels, 2, [0.25] * 9)
    with pytest.raises(ValueError, match="one scale per feature map"):
        call(feats, rois, levels, 2, scales[:2])
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 3\)"):
        call(feats, rois, levels + 1, 2, scales)
    with pytest.raises(ValueError, match="one level per box"):
        call(feats, rois, levels[:3], 2, scales)
    with pytest.raises(TypeError, match="levels must be int64"):
        call(feats, rois, levels.float(), 2, scales)
    with pytest.raises(ValueError, match=r"features\[1\] has batch and channels"):
        call([feats[0], feats[1][:, :3], feats[2]], rois, levels, 2, scales)
    with pytest.raises(ValueError, match=r"features\[2\] is"):
        call([feats[0], feats[1], feats[2].float()], rois, levels, 2, scales)
    with pytest.raises(TypeError, match="'spatial_scales' must be a list"):
        call(feats, rois, levels, 2, 0.25)
    with pytest.raises(TypeError, match="featmap_names must be a list"):
        fastconv.nn.MultiScaleRoIAlign("p2", 7, 2)
