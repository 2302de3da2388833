"""A model of fastconv layers compiles with torch.compile(fullgraph=True), forward and
backward, with no graph break, and matches eager."""

import pytest
import torch

import fastconv
import fastconv.selftest


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = fastconv.nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = fastconv.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.up = fastconv.nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.line = fastconv.nn.Conv1d(4, 2, 3, padding="same")
        self.pool = fastconv.nn.RoIAlign(2, 0.5, 2, aligned=True)

    def forward(self, x, rois):
        y = torch.relu(self.depthwise(torch.relu(self.conv(x))))
        up = self.up(y)
        line = self.line(up.flatten(2))
        return line.sum() + self.pool(y, rois).sum()


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_fullgraph_forward_and_backward(backend, device):
    torch.manual_seed(0)
    # Compiled code calls the operators straight, without fastconv.functional's first-call
    # self-test that switches the emulated CUDA kernels on: run (or read) it first.
    fastconv.selftest.ensure(torch.device(device))
    model = Net().to(device)
    x = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
    rois = torch.tensor([[0, 0.0, 0.0, 8.0, 8.0], [1, 2.0, 1.0, 6.0, 7.0]], device=device)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    out = compiled(x, rois)
    (gx,) = torch.autograd.grad(out, x)
    ref = model(x, rois)
    (rx,) = torch.autograd.grad(ref, x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gx, rx)


def test_dynamic_shapes(device):
    conv = fastconv.nn.Conv2d(3, 4, 3, stride=2, padding=1).to(device)
    fastconv.selftest.ensure(torch.device(device))  # as above
    torch._dynamo.reset()
    compiled = torch.compile(conv, fullgraph=True, dynamic=True, backend="aot_eager")
    for size in (9, 12, 17):
        x = torch.randn(2, 3, size, size + 1, device=device)
        torch.testing.assert_close(compiled(x), conv(x))
