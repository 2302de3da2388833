"""torch.library.opcheck on every fastconv operator: schema, fake kernel, autograd
registration and AOT dispatch all agree with the real kernels."""

import pytest
import torch

import fastconv  # noqa: F401
import fastconv.selftest

ops = torch.ops.fastconv


def conv_args(device, channels_last=False, requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 7, 6, generator=g).to(device)
    w = torch.randn(6, 2, 3, 2, generator=g).to(device)
    b = torch.randn(6, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return [t.requires_grad_(requires_grad) for t in (x, w, b)]


PARAMS = ([2, 1], [1, 0, 2, 1], [1, 2], 2)  # stride, padding (t, b, l, r), dilation, groups
T_PARAMS = ([2, 1], [1, 0, 0, 1], [1, 0], [1, 2], 2)  # ... and output_padding


def rois(device):
    return torch.tensor([[0, 0.5, 1.0, 5.5, 6.0], [1, 2.0, 0.0, 4.0, 3.5]], device=device)


def cases(device):
    x, w, b = conv_args(device)
    xc, wc, bc = conv_args(device, channels_last=True)
    xg, wg, bg = conv_args(device, requires_grad=True)
    y = ops.conv2d(x, w, b, *PARAMS)
    xt = torch.randn(2, 6, 4, 5, device=device)
    wt = torch.randn(6, 2, 3, 3, device=device)
    yt = ops.conv_transpose2d(xt, wt, None, *T_PARAMS)
    feats = torch.randn(2, 3, 8, 9, device=device)
    out, argmax = ops.roi_pool(feats, rois(device), 0.5, 3, 2)
    return {
        "conv2d": (ops.conv2d, (x, w, b, *PARAMS)),
        "conv2d_channels_last": (ops.conv2d, (xc, wc, bc, *PARAMS)),
        "conv2d_grad": (ops.conv2d, (xg, wg, bg, *PARAMS)),
        # Inference only (it refuses inputs that need a gradient): opcheck on plain tensors.
        "conv2d_fused": (ops.conv2d_fused, (x, w, b, torch.randn_like(y), *PARAMS, "silu", 0.01)),
        "conv2d_fused_channels_last": (ops.conv2d_fused, (xc, wc, None, None, *PARAMS, "leaky_relu", 0.2)),
        "conv2d_backward": (ops.conv2d_backward, (torch.randn_like(y), x, w, *PARAMS, [True, True, True])),
        "conv2d_backward_mask": (ops.conv2d_backward, (torch.randn_like(y), x, w, *PARAMS, [False, True, False])),
        "conv_transpose2d": (ops.conv_transpose2d, (xt, wt, torch.randn(4, device=device), *T_PARAMS)),
        "conv_transpose2d_backward": (
            ops.conv_transpose2d_backward,
            (torch.randn_like(yt), xt, wt, *T_PARAMS, [True, True, True]),
        ),
        "roi_align": (ops.roi_align, (feats.requires_grad_(), rois(device), 0.5, 3, 2, 2, True)),
        "roi_align_backward": (
            ops.roi_align_backward,
            (torch.randn(2, 3, 3, 2, device=device), rois(device), 0.5, 3, 2, 2, 3, 8, 9, -1, False),
        ),
        "roi_align_multilevel": (
            ops.roi_align_multilevel,
            ([feats.detach().requires_grad_(), torch.randn(2, 3, 4, 5, device=device, requires_grad=True)],
             rois(device), torch.tensor([1, 0], device=device), [0.5, 0.25], 3, 2, 2, False),
        ),
        "roi_pool": (ops.roi_pool, (feats, rois(device), 0.5, 3, 2)),
        "roi_pool_backward": (
            ops.roi_pool_backward,
            (torch.randn_like(out), rois(device), argmax, 0.5, 3, 2, 2, 3, 8, 9),
        ),
    }


CASE_NAMES = list(cases("cpu"))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_opcheck(name, device):
    # The raw operators skip fastconv.functional's first-call self-test, which switches the
    # emulated CUDA kernels on: run (or read) it first.
    fastconv.selftest.ensure(torch.device(device))
    op, args = cases(device)[name]
    torch.library.opcheck(op, args)


def tensor_operators():
    """fastconv's operators on tensors; fastconv::_* are the library's queries about its
    algorithms (names, the forced one, _can_implement), which take no tensor or only read
    sizes, dtypes and addresses, and have one kernel for every device."""
    return {n for n in torch._C._dispatch_get_all_op_names()
            if n.startswith("fastconv::") and not n.startswith("fastconv::_")}


def test_every_operator_is_checked():
    defined = tensor_operators()
    checked = {op._qualified_op_name for op, _ in cases("cpu").values()}
    assert defined == checked


def test_every_operator_has_a_cpu_kernel():
    for name in tensor_operators():
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU"), name


def test_queries_run_on_any_device():
    x = torch.empty(1, 4, 5, 5, device="meta")
    w = torch.empty(2, 4, 3, 3, device="meta")
    assert torch.ops.fastconv._can_implement("direct", "cpu", "fprop", x, w, [1, 1], [0, 0, 0, 0], [1, 1], 1, None)
    assert "direct" in torch.ops.fastconv._algorithm_names("cpu")
