"""With torch.use_deterministic_algorithms(True), every operator gives bitwise-equal results
run after run, forward and backward. (fastconv's CPU kernels never use atomics, so they are
deterministic in any mode.)"""

import pytest
import torch

import fastconv
import fastconv.functional as F
from conftest import algorithms, claims


@pytest.fixture
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


def run_twice(fn):
    first, second = fn(), fn()
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def grads(out_fn, leaves):
    def run():
        leaves_ = [t.detach().requires_grad_() for t in leaves]
        out = out_fn(*leaves_)
        g = torch.autograd.grad(out, leaves_, torch.ones_like(out) * 0.37)
        return [out.detach(), *g]
    return run


def test_convolutions(deterministic, device):
    x = torch.randn(4, 8, 16, 16, device=device)
    calls = [  # (operator, weight, arguments)
        ("conv2d", torch.randn(8, 4, 3, 3, device=device), dict(stride=2, padding=1, groups=2)),
        ("conv_transpose2d", torch.randn(8, 2, 4, 4, device=device), dict(stride=2, padding=1, groups=4)),
        ("conv2d", torch.randn(16, 1, 3, 3, device=device), dict(padding=1, groups=8)),
        ("conv2d", torch.randn(12, 4, 1, 1, device=device), dict(groups=2)),
    ]
    for algorithm in [None] + algorithms(device):
        for op, w, kw in calls:
            if algorithm is not None and not claims(algorithm, op, x, w, kw, grads=True):
                continue
            with fastconv.algorithms.force(algorithm):
                run_twice(grads(lambda x, w: getattr(F, op)(x, w, **kw), [x, w]))


@pytest.mark.parametrize("roi_layout", ["nchw", "nhwc"])
def test_roi_ops(deterministic, device, roi_layout, monkeypatch):
    monkeypatch.setenv("FASTCONV_ROI_LAYOUT", roi_layout)  # each CPU RoIAlign kernel
    x = torch.randn(2, 16, 20, 20, device=device)
    # Many overlapping boxes: the case where atomics would reorder the additions.
    boxes = torch.rand(64, 2, device=device) * 10
    rois = torch.cat([torch.randint(0, 2, (64, 1), device=device).float(), boxes, boxes + 8], 1)
    run_twice(grads(lambda x: F.roi_align(x, rois, 7, 1.0, 2, True), [x]))
    run_twice(grads(lambda x: F.roi_align(x, rois, 7, 1.0, -1, False), [x]))
    run_twice(grads(lambda x: F.roi_pool(x, rois, 7, 1.0), [x]))
