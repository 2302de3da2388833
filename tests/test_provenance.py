"""fastconv runs its own kernels: profiling a forward and backward pass of every layer shows
fastconv operators doing the convolution and RoI work, and no PyTorch convolution (oneDNN,
cuDNN, slow_conv, nnpack) nor torchvision operator anywhere."""

import torch

import fastconv
import fastconv.selftest


def test_only_fastconv_operators_do_the_work(device):
    torch.manual_seed(0)
    conv = fastconv.nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect").to(device)
    depthwise = fastconv.nn.Conv2d(8, 16, 3, padding=1, groups=8).to(device)
    up = fastconv.nn.ConvTranspose2d(16, 4, 2, stride=2).to(device)
    line = fastconv.nn.Conv1d(4, 2, 3, dilation=2).to(device)
    line_up = fastconv.nn.ConvTranspose1d(2, 2, 2, stride=2).to(device)
    align = fastconv.nn.RoIAlign(3, 1.0, 2, aligned=True)
    pool = fastconv.nn.RoIPool(3, 1.0)
    x = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 6.0], [1, 0.0, 2.0, 7.0, 5.0]], device=device)
    # On a GPU the first fastconv call runs the self-test, whose references are torch's CPU
    # convolutions: run it (or read its result) before the profiler looks.
    fastconv.selftest.ensure(torch.device(device))
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as prof:
        y = depthwise(conv(x))
        z = line_up(line(up(y).flatten(2)))
        loss = z.sum() + align(y, rois).sum() + pool(y, rois).sum()
        loss.backward()
    names = {event.key for event in prof.key_averages()}
    operators = [n for n in names if "::" in n and not n.startswith(("fastconv::", "autograd::"))]
    words = ("conv", "roi", "mkldnn", "cudnn", "nnpack")
    forbidden = [n for n in operators if any(word in n.lower() for word in words)]
    assert not forbidden, forbidden
    expected = {
        "fastconv::conv2d",
        "fastconv::conv2d_backward",
        "fastconv::conv_transpose2d",
        "fastconv::conv_transpose2d_backward",
        "fastconv::roi_align",
        "fastconv::roi_align_backward",
        "fastconv::roi_pool",
        "fastconv::roi_pool_backward",
    }
    assert expected <= names, expected - names
